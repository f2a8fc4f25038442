"""Queries and writes about replicas and the accelerator units they hold (controller, CLI)."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from inferd.store.tables import AcceleratorRow, InstanceRow, ReplicaRow


def instance_ids(session: Session) -> list[str]:
    return list(session.scalars(select(InstanceRow.id)))


IN_LIMIT = 500
"""Ids asked for by ``IN (…)``; for more, one read of the whole table filtered here is cheaper."""


def instance_heads(session: Session, instance_ids: Collection[str] | None = None) -> list[tuple[Any, ...]]:
    """``(id, status, status_reason, live_deployment_id, pending_deployment_id)`` of those
    instances (every one with None): what the controller compares to know an instance is unchanged.
    Plain columns, no ORM objects: a full read of 1,000 instances stays a few milliseconds."""
    query = select(InstanceRow.id, InstanceRow.status, InstanceRow.status_reason, InstanceRow.live_deployment_id,
                   InstanceRow.pending_deployment_id)
    return _some(session, query, InstanceRow.id, instance_ids)


def replica_heads(session: Session, instance_ids: Collection[str] | None = None) -> list[tuple[Any, ...]]:
    """``(instance_id, id, status, handle, phase, phase_since, stop_requested_at, engine, endpoint,
    node, detail)`` of the replicas of those instances (of every one with None), oldest first."""
    query = select(ReplicaRow.instance_id, ReplicaRow.id, ReplicaRow.status, ReplicaRow.handle, ReplicaRow.phase,
                   ReplicaRow.phase_since, ReplicaRow.stop_requested_at, ReplicaRow.engine, ReplicaRow.endpoint,
                   ReplicaRow.node, ReplicaRow.detail).order_by(ReplicaRow.created_at, ReplicaRow.id)
    return _some(session, query, ReplicaRow.instance_id, instance_ids)


def _some(session: Session, query: Any, column: Any, ids: Collection[str] | None) -> list[tuple[Any, ...]]:
    """Plain tuples (they compare in C, rows do not), of the rows whose first column is in ``ids``."""
    if ids is not None and len(ids) <= IN_LIMIT:
        return [tuple(row) for row in session.execute(query.where(column.in_(list(ids))))] if ids else []
    rows = [tuple(row) for row in session.execute(query)]
    if ids is None:
        return rows
    wanted = set(ids)
    return [row for row in rows if row[0] in wanted]


def of_instance(session: Session, instance_id: str) -> dict[str, ReplicaRow]:
    query = select(ReplicaRow).where(ReplicaRow.instance_id == instance_id).order_by(ReplicaRow.created_at)
    return {r.id: r for r in session.scalars(query)}


def accelerators_of(session: Session, instance_id: str) -> dict[str, AcceleratorRow]:
    return {a.id: a for a in session.scalars(select(AcceleratorRow).where(AcceleratorRow.instance_id == instance_id))}


def listing(session: Session, instance_id: str | None = None) -> list[ReplicaRow]:
    """Every replica (of one instance), for operators."""
    query = select(ReplicaRow).order_by(ReplicaRow.instance_id, ReplicaRow.created_at)
    if instance_id:
        query = query.where(ReplicaRow.instance_id == instance_id)
    return list(session.scalars(query))


def handles(session: Session) -> dict[str, str]:
    """``replica_id → handle`` of every replica the runtime was asked to run."""
    rows = session.execute(select(ReplicaRow.id, ReplicaRow.handle).where(ReplicaRow.handle.is_not(None)))
    return {replica_id: handle for replica_id, handle in rows if handle}


def existing(session: Session, replica_ids: Iterable[str]) -> dict[str, str | None]:
    """``replica_id → recorded handle`` for those of ``replica_ids`` that still exist."""
    ids = list(replica_ids)
    if not ids:
        return {}
    return dict(session.execute(select(ReplicaRow.id, ReplicaRow.handle).where(ReplicaRow.id.in_(ids))).all())


def units_held(session: Session, slug: str, region: str) -> list[int | None]:
    """Unit indexes of ``slug`` in ``region`` held by any instance (one entry per unit)."""
    query = (
        select(AcceleratorRow.unit)
        .join(InstanceRow, InstanceRow.id == AcceleratorRow.instance_id)
        .where(AcceleratorRow.slug == slug, InstanceRow.region == region)
    )
    return list(session.scalars(query))


def running_units(session: Session, slug: str, region: str) -> int:
    """Units of ``slug`` whose replica is starting or serving, over all instances."""
    query = (
        select(ReplicaRow.id)
        .join(InstanceRow, InstanceRow.id == ReplicaRow.instance_id)
        .where(ReplicaRow.accelerator_slug == slug, InstanceRow.region == region,
               ReplicaRow.handle.is_not(None))
    )
    return len(list(session.scalars(query)))


def lowest_free_unit(held: Iterable[int | None]) -> int:
    taken = {u for u in held if u is not None}
    unit = 0
    while unit in taken:
        unit += 1
    return unit


def add(
    session: Session,
    *,
    instance_id: str,
    accelerator: dict[str, object],
    replica: dict[str, object],
    now: datetime,
) -> tuple[ReplicaRow, AcceleratorRow]:
    """An accelerator unit and the replica on it, flushed (ids usable at once)."""
    unit = AcceleratorRow(id=str(uuid.uuid4()), instance_id=instance_id, created_at=now, updated_at=now, **accelerator)
    row = ReplicaRow(
        id=str(uuid.uuid4()), instance_id=instance_id, accelerator_id=unit.id, created_at=now, updated_at=now, **replica
    )
    session.add(unit)
    session.flush()
    session.add(row)
    session.flush()
    return row, unit


def remove(session: Session, replica: ReplicaRow, accelerators: dict[str, AcceleratorRow]) -> None:
    """The replica first: the database cascades an accelerator's deletion to its replica, which
    the ORM would then find already gone."""
    accelerator = accelerators.pop(replica.accelerator_id, None)
    session.delete(replica)
    session.flush()
    if accelerator is not None:
        session.delete(accelerator)
        session.flush()


def remove_instance(session: Session, instance: InstanceRow) -> None:
    session.execute(delete(AcceleratorRow).where(AcceleratorRow.instance_id == instance.id))
    session.delete(instance)


def record_handle(session: Session, replica_id: str, handle: str, now: datetime) -> bool:
    """False when the replica was removed meanwhile (the caller then ends what it started)."""
    replica = session.get(ReplicaRow, replica_id)
    if replica is None:
        return False
    replica.handle = handle
    replica.started_at = now
    replica.phase, replica.phase_since = "placing", now
    replica.updated_at = now
    return True


def stop_all(session: Session) -> list[str]:
    """Mark every running replica ``stopped`` (started again on the controller's return); their handles."""
    rows = list(session.scalars(select(ReplicaRow).where(ReplicaRow.handle.is_not(None))))
    found = []
    for replica in rows:
        found.append(replica.handle or "")
        if replica.status != "stopping":
            replica.status = "stopped"
        replica.handle = None
        replica.endpoint = None
        replica.phase = None
    return found
