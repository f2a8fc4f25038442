"""Named leases (the controller's leadership): one compare-and-set UPDATE per attempt.

Correct under concurrency on SQLite and PostgreSQL without ``SELECT ... FOR UPDATE`` (SQLite
ignores it): the condition that decides who may take the lease sits in the UPDATE's WHERE
clause, which both databases evaluate atomically against the row as it is when the write
happens (PostgreSQL re-checks it after waiting for a concurrent writer; SQLite has one
writer at a time), and ``rowcount`` says whether this caller won.

Expiry compares ``expires_at`` with the caller's ``now``, so callers' clocks must agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, case, or_, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from inferd.store.tables import LeaseRow, UTCDateTime


@dataclass(frozen=True)
class LeaseView:
    """A snapshot of a lease row; never a live ORM object."""

    name: str
    holder: str | None
    term: int
    expires_at: datetime | None
    acquired_at: datetime | None
    renewed_at: datetime | None


def _view(row: LeaseRow) -> LeaseView:
    return LeaseView(row.name, row.holder, row.term, row.expires_at, row.acquired_at, row.renewed_at)


def _rowcount(result: Any) -> int:
    assert isinstance(result, CursorResult)
    return result.rowcount


def current(session: Session, name: str) -> LeaseView | None:
    row = session.get(LeaseRow, name, populate_existing=True)
    return _view(row) if row is not None else None


def try_acquire(
    session: Session, name: str, holder: str, ttl_seconds: float, now: datetime
) -> LeaseView | None:
    """Renew the lease if ``holder`` has it, take it over if it is free or expired.

    None when someone else holds it unexpired. A renewal never moves ``expires_at`` back
    (a late call with an older ``now`` must not shorten what an earlier call promised).
    """
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    if now.tzinfo is None:
        raise ValueError("naive datetime given; use timezone-aware UTC")
    expires = now + timedelta(seconds=ttl_seconds)
    # bound, not literal: the statement's SQL stays the same from call to call, so SQLAlchemy
    # compiles it once (a literal timestamp made every renewal a 3-4 ms recompile)
    now_value = bindparam("lease_now", now, type_=UTCDateTime())
    expires_value = bindparam("lease_expires", expires, type_=UTCDateTime())
    mine = LeaseRow.holder == holder
    statement = (
        update(LeaseRow)
        .where(
            LeaseRow.name == name,
            or_(mine, LeaseRow.holder.is_(None), LeaseRow.expires_at.is_(None), LeaseRow.expires_at < now_value),
        )
        .values(
            # SET expressions see the row as it was before this UPDATE, on both databases.
            holder=holder,
            term=case((mine, LeaseRow.term), else_=LeaseRow.term + 1),
            acquired_at=case((mine, LeaseRow.acquired_at), else_=now_value),
            expires_at=case(
                (and_(mine, LeaseRow.expires_at > expires_value), LeaseRow.expires_at), else_=expires_value
            ),
            renewed_at=now_value,
        )
        .execution_options(synchronize_session=False)
    )
    if _rowcount(session.execute(statement)) == 1:
        return current(session, name)
    if session.get(LeaseRow, name) is not None:
        return None
    # No row yet (the migration creates ``controller``; other names start here).
    row = LeaseRow(name=name, holder=holder, term=1, expires_at=expires, acquired_at=now, renewed_at=now)
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:  # another caller inserted it first: it holds the lease
        return None
    return _view(row)


def release(session: Session, name: str, holder: str) -> bool:
    """Free the lease at once if ``holder`` still holds it (a clean shutdown)."""
    statement = (
        update(LeaseRow)
        .where(LeaseRow.name == name, LeaseRow.holder == holder)
        .values(holder=None, expires_at=None)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(session.execute(statement)) == 1
