"""Per-instance limits of the data plane's ``di_`` tokens (requests and tokens per minute).

Two nullable columns of the instance row: ``None`` inherits the global setting
(``INFERD_TOKEN_RPM`` / ``INFERD_TOKEN_TPM``), ``0`` means unlimited for that instance, any
other value replaces the global one (see ``inferd.gateway.tokenlimits.effective_limits``).

Written with a plain ``UPDATE`` of those two columns that leaves the row's ``version`` alone:
no other writer touches them, and the API's and controller's compare-and-set updates only
write the columns they changed, so an admin changing a limit never makes them retry and never
loses to them. The change feed's trigger on these columns (migration 0007) tells the gateway,
which reloads that instance's routes and limits.
"""

from __future__ import annotations

from typing import Any, NamedTuple, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from inferd.store.tables import InstanceRow

MAX_LIMIT = 2_147_483_647
"""The largest value an ``INTEGER`` column holds on PostgreSQL."""


class InstanceTokenLimits(NamedTuple):
    """An instance's own values; ``None``: the global setting applies."""

    rpm: int | None
    tpm: int | None


def check_limit(value: int | None, what: str) -> None:
    """ValueError unless ``value`` is None or a whole number from 0 to :data:`MAX_LIMIT`."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LIMIT:
        raise ValueError(f"{what}: give a whole number from 0 to {MAX_LIMIT} (not {value!r})")


def get_token_limits(session: Session, instance_id: str) -> InstanceTokenLimits | None:
    """The instance's own limits, or None when there is no such instance."""
    row = session.execute(
        select(InstanceRow.token_rpm, InstanceRow.token_tpm).where(InstanceRow.id == instance_id)
    ).one_or_none()
    return None if row is None else InstanceTokenLimits(rpm=row.token_rpm, tpm=row.token_tpm)


def set_token_limits(session: Session, instance_id: str, rpm: int | None, tpm: int | None) -> bool:
    """Replace both of the instance's own limits (``None``: back to the global setting);
    False when there is no such instance."""
    check_limit(rpm, "requests per minute")
    check_limit(tpm, "tokens per minute")
    statement = update(InstanceRow).where(InstanceRow.id == instance_id).values(token_rpm=rpm, token_tpm=tpm)
    result = cast(CursorResult[Any], session.execute(statement.execution_options(synchronize_session=False)))
    return result.rowcount == 1
