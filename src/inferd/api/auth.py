"""Bearer authentication of control-plane tokens and scope checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Request

from inferd.api.errors import ApiError
from inferd.domain.scopes import Scope, grants
from inferd.domain.tokens import bearer_value, hash_token, hashes_match, is_api_token
from inferd.store import teams
from inferd.store.db import Database


@dataclass(frozen=True)
class Principal:
    team_id: str
    token_id: str
    scopes: tuple[str, ...]


def authenticate(database: Database, authorization: str | None) -> Principal | None:
    """The token's owner, or None. Runs in a worker thread (it queries the database)."""
    value = bearer_value(authorization)
    if value is None or not is_api_token(value):
        return None
    digest = hash_token(value)
    with database.session() as session:
        row = teams.api_token_by_hash(session, digest)
        if row is None or not hashes_match(row.token_hash, digest):
            return None
        return Principal(team_id=row.team_id, token_id=row.id, scopes=tuple(row.scopes))


def require(scope: Scope) -> Callable[[Request], Principal]:
    """A dependency: the authenticated principal, if its token grants ``scope`` (else 403)."""

    def dependency(request: Request) -> Principal:
        principal: Principal | None = getattr(request.state, "principal", None)
        if principal is None:  # the middleware lets no unauthenticated request through
            raise ApiError(401)
        if not grants(principal.scopes, scope):
            raise ApiError(403, f"This token lacks the {scope.value} scope.")
        return principal

    dependency.required_scope = scope  # type: ignore[attr-defined]  # read by the OpenAPI builder
    return dependency
