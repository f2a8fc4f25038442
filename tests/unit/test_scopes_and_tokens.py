from __future__ import annotations

import pytest

from inferd.domain.scopes import FULL_ACCESS, Scope, grants, normalize_scopes
from inferd.domain.tokens import (
    hash_token,
    is_api_token,
    is_instance_token,
    new_api_token,
    new_instance_token,
)


def test_normalize_scopes() -> None:
    assert normalize_scopes(["read", "dedicated_inference:delete"]) == [Scope.DELETE.value, Scope.READ.value]
    assert normalize_scopes(["read", "*"]) == [FULL_ACCESS]
    assert normalize_scopes(["dedicated_inference:*"]) == [FULL_ACCESS]
    with pytest.raises(ValueError, match="unknown scope"):
        normalize_scopes(["write"])
    with pytest.raises(ValueError, match="at least one"):
        normalize_scopes([])


def test_grants() -> None:
    assert grants([Scope.READ.value], Scope.READ)
    assert not grants([Scope.READ.value], Scope.DELETE)
    assert all(grants([FULL_ACCESS], scope) for scope in Scope)


def test_token_formats() -> None:
    api, instance = new_api_token(), new_instance_token()
    assert api.startswith("dop_v1_") and is_api_token(api) and not is_instance_token(api)
    assert instance.startswith("di_") and is_instance_token(instance) and not is_api_token(instance)
    assert is_api_token("doo_v1_" + "a" * 64)
    assert not is_api_token("dop_v1_" + "A" * 64) and not is_api_token("dop_v1_short")
    assert new_api_token() != api
    assert hash_token(api) == hash_token(api) != hash_token(instance)
    assert len(hash_token(api)) == 64
