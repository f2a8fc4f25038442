"""Teams and their control-plane tokens."""

from __future__ import annotations

import uuid
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select
from sqlalchemy.orm import Session

from inferd.domain.errors import Conflict, NotFound
from inferd.store.tables import ApiTokenRow, TeamRow


def create_team(session: Session, name: str) -> TeamRow:
    if session.scalar(select(TeamRow).where(TeamRow.name == name)) is not None:
        raise Conflict(f"team {name!r} already exists")
    team = TeamRow(id=str(uuid.uuid4()), name=name)
    session.add(team)
    session.flush()
    return team


def find_team(session: Session, name_or_id: str) -> TeamRow:
    team = session.scalar(select(TeamRow).where((TeamRow.name == name_or_id) | (TeamRow.id == name_or_id)))
    if team is None:
        raise NotFound(f"no team {name_or_id!r}")
    return team


def list_teams(session: Session) -> list[TeamRow]:
    return list(session.scalars(select(TeamRow).order_by(TeamRow.created_at, TeamRow.name)))


def add_api_token(session: Session, team: TeamRow, *, name: str, token_hash: str, scopes: list[str]) -> ApiTokenRow:
    row = ApiTokenRow(id=str(uuid.uuid4()), team_id=team.id, name=name, token_hash=token_hash, scopes=scopes)
    session.add(row)
    session.flush()
    return row


def api_token_by_hash(session: Session, token_hash: str) -> ApiTokenRow | None:
    return session.scalar(select(ApiTokenRow).where(ApiTokenRow.token_hash == token_hash))


def list_api_tokens(session: Session, team: TeamRow) -> list[ApiTokenRow]:
    query = select(ApiTokenRow).where(ApiTokenRow.team_id == team.id).order_by(ApiTokenRow.created_at)
    return list(session.scalars(query))


def revoke_api_token(session: Session, token_id: str) -> None:
    result = cast(CursorResult[Any], session.execute(delete(ApiTokenRow).where(ApiTokenRow.id == token_id)))
    if result.rowcount == 0:
        raise NotFound(f"no token {token_id!r}")
