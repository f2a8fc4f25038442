"""OAuth-style scopes of control-plane tokens."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Scope(StrEnum):
    READ = "dedicated_inference:read"
    CREATE = "dedicated_inference:create"
    UPDATE = "dedicated_inference:update"
    DELETE = "dedicated_inference:delete"


FULL_ACCESS = "*"
"""Granted to full-access tokens: every scope, now and later."""

_ALIASES = {
    "read": Scope.READ,
    "create": Scope.CREATE,
    "update": Scope.UPDATE,
    "delete": Scope.DELETE,
}


def normalize_scopes(values: Iterable[str]) -> list[str]:
    """Canonical, sorted scope list; ``read`` is shorthand for ``dedicated_inference:read``.

    ``*``, ``full`` and ``dedicated_inference:*`` all mean full access.
    """
    result: set[str] = set()
    for raw in values:
        value = raw.strip()
        if value in ("*", "full", "dedicated_inference:*"):
            return [FULL_ACCESS]
        if value in _ALIASES:
            result.add(_ALIASES[value].value)
        elif value in {s.value for s in Scope}:
            result.add(value)
        else:
            known = ", ".join(["*", *sorted(_ALIASES), *(s.value for s in Scope)])
            raise ValueError(f"unknown scope {value!r}; known: {known}")
    if not result:
        raise ValueError("at least one scope is required")
    return sorted(result)


def grants(granted: Iterable[str], needed: Scope) -> bool:
    granted_set = set(granted)
    return FULL_ACCESS in granted_set or needed.value in granted_set
