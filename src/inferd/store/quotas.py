"""Per-team quota overrides and what a team holds against its quotas.

A team without a row uses the global defaults (``INFERD_TEAM_MAX_INSTANCES``,
``INFERD_TEAM_MAX_UNITS``); a row overrides the instance count and/or single accelerator
slugs. Writes that a quota bounds (create, PATCH) first take the team's lock
(:func:`lock_team`), so two concurrent requests never both take the last unit.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import JSON, ForeignKey, Integer, func, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from inferd.domain.status import InstanceStatus
from inferd.store.tables import Base, DeploymentRow, InstanceRow, TeamRow, utcnow


class TeamQuotaRow(Base):
    """A team's own limits; ``None`` / a slug missing from ``max_units``: the global default."""

    __tablename__ = "team_quotas"
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True)
    max_instances: Mapped[int | None] = mapped_column(Integer, default=None)
    max_units: Mapped[dict[str, int] | None] = mapped_column(JSON, default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


def override_of(session: Session, team_id: str) -> TeamQuotaRow | None:
    return session.get(TeamQuotaRow, team_id)


def set_override(
    session: Session,
    team: TeamRow,
    *,
    instances: int | Literal["default"] | None = None,
    units: dict[str, int | Literal["default"]] | None = None,
    reset: bool = False,
) -> TeamQuotaRow | None:
    """Change a team's overrides. ``reset`` drops every override first; ``instances`` or a
    slug's count ``"default"`` returns that limit to the global default; ``None``: unchanged.
    The row, or None when nothing is overridden any more."""
    row = session.get(TeamQuotaRow, team.id)
    if row is None:
        row = TeamQuotaRow(team_id=team.id, max_instances=None, max_units=None)
        session.add(row)
    if reset:
        row.max_instances, row.max_units = None, None
    if instances is not None:
        row.max_instances = None if instances == "default" else instances
    merged = dict(row.max_units or {})
    for slug, count in (units or {}).items():
        if count == "default":
            merged.pop(slug, None)
        else:
            merged[slug] = count
    row.max_units = merged or None
    row.updated_at = utcnow()
    if row.max_instances is None and row.max_units is None:
        if row in session.new:
            session.expunge(row)
        else:
            session.delete(row)
        session.flush()
        return None
    session.flush()
    return row


def lock_team(session: Session, team_id: str) -> None:
    """Serialize the team's quota-bound writes until this transaction ends.

    A (no-op) UPDATE rather than ``SELECT … FOR UPDATE``: SQLite ignores the latter, while an
    UPDATE takes its write lock (other writers wait out the busy timeout), and on PostgreSQL
    it locks the team's row. Counting after it sees every earlier write committed."""
    session.execute(update(TeamRow).where(TeamRow.id == team_id).values(name=TeamRow.name))


def _live(team_id: str, except_id: str | None) -> list[Any]:
    where = [InstanceRow.team_id == team_id, InstanceRow.status != InstanceStatus.DELETING.value]
    if except_id is not None:
        where.append(InstanceRow.id != except_id)
    return where


def instance_count(session: Session, team_id: str) -> int:
    """The team's instances that are not being deleted."""
    query = select(func.count()).select_from(InstanceRow).where(*_live(team_id, None))
    return session.scalar(query) or 0


def units_of_spec(spec: dict[str, Any]) -> dict[str, int]:
    """Units per accelerator slug that a spec (as stored) asks for."""
    held: dict[str, int] = defaultdict(int)
    for deployment in spec.get("model_deployments") or []:
        for accelerator in deployment.get("accelerators") or []:
            held[accelerator["accelerator_slug"]] += int(accelerator.get("scale") or 0)
    return dict(held)


def units_held(session: Session, team_id: str, *, except_id: str | None = None) -> dict[str, int]:
    """Units per slug in the desired spec (pending, else live) of each of the team's instances
    that is not being deleted (``except_id`` left out)."""
    desired = func.coalesce(InstanceRow.pending_deployment_id, InstanceRow.live_deployment_id)
    query = (
        select(DeploymentRow.spec)
        .join(InstanceRow, DeploymentRow.id == desired)
        .where(*_live(team_id, except_id))
    )
    held: dict[str, int] = defaultdict(int)
    specs: list[dict[str, Any]] = list(session.scalars(query))
    for spec in specs:
        for slug, count in units_of_spec(spec).items():
            held[slug] += count
    return dict(held)


def desired_spec(session: Session, instance: InstanceRow) -> dict[str, Any] | None:
    deployment_id = instance.pending_deployment_id or instance.live_deployment_id
    if deployment_id is None:
        return None
    return session.scalar(select(DeploymentRow.spec).where(DeploymentRow.id == deployment_id))
