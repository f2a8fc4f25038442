"""Queries and writes about replicas and the accelerator units they hold (controller, CLI)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from inferd.store.tables import AcceleratorRow, InstanceRow, ReplicaRow


def instance_ids(session: Session) -> list[str]:
    return list(session.scalars(select(InstanceRow.id)))


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
