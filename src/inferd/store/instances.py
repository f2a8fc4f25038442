"""Instances, their spec versions (deployments), data-plane tokens and accelerators.

Every query that serves a caller is scoped by team: a row of another team is simply not
found, so nobody can even learn that it exists.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Select, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from inferd.domain.errors import Conflict, NotFound
from inferd.domain.spec import DeploymentSpec
from inferd.domain.status import DeploymentStatus, InstanceStatus
from inferd.store.tables import (
    AcceleratorRow,
    DeploymentRow,
    InstanceRow,
    InstanceTokenRow,
    utcnow,
)


def _valid_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _flush_or_conflict(session: Session, name: str) -> None:
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        raise Conflict(f"an instance named {name!r} already exists in this team") from exc


def _page(session: Session, query: Select[Any], total: int, offset: int, limit: int) -> list[Any]:
    """Rows of one page; a page past the end is empty without asking the database
    (huge page numbers would overflow SQL's OFFSET)."""
    if offset >= total:
        return []
    return list(session.scalars(query.offset(offset).limit(limit)))


def name_in_use(session: Session, team_id: str, name: str, *, except_id: str | None = None) -> bool:
    query = select(InstanceRow.id).where(
        InstanceRow.team_id == team_id,
        InstanceRow.name == name,
        InstanceRow.status != InstanceStatus.DELETING.value,
    )
    if except_id:
        query = query.where(InstanceRow.id != except_id)
    return session.scalar(query.limit(1)) is not None


def create_instance(
    session: Session,
    *,
    team_id: str,
    spec: DeploymentSpec,
    status: InstanceStatus,
    deployment_status: DeploymentStatus,
    ca_cert_pem: str,
    ca_key_sealed: str,
    access_tokens_sealed: str | None,
    instance_id: str | None = None,
) -> tuple[InstanceRow, DeploymentRow]:
    if name_in_use(session, team_id, spec.name):
        raise Conflict(f"an instance named {spec.name!r} already exists in this team")
    now = utcnow()
    instance = InstanceRow(
        id=instance_id or str(uuid.uuid4()),
        team_id=team_id,
        name=spec.name,
        region=spec.region,
        vpc_uuid=spec.vpc.uuid,
        status=status.value,
        ca_cert_pem=ca_cert_pem,
        ca_key_sealed=ca_key_sealed,
        access_tokens_sealed=access_tokens_sealed,
        created_at=now,
        updated_at=now,
    )
    session.add(instance)
    _flush_or_conflict(session, spec.name)
    deployment = add_deployment(session, instance, spec, deployment_status, now)
    instance.pending_deployment_id = deployment.id
    return instance, deployment


def add_deployment(
    session: Session, instance: InstanceRow, spec: DeploymentSpec, status: DeploymentStatus, now: datetime
) -> DeploymentRow:
    deployment = DeploymentRow(
        id=str(uuid.uuid4()),
        instance_id=instance.id,
        version=spec.version,
        spec=spec.model_dump(mode="json"),
        status=status.value,
        created_at=now,
        updated_at=now,
    )
    session.add(deployment)
    session.flush()
    return deployment


def get_instance(session: Session, team_id: str, instance_id: str, *, for_update: bool = False) -> InstanceRow:
    if not _valid_uuid(instance_id):
        raise NotFound("instance not found")
    query = select(InstanceRow).where(InstanceRow.id == instance_id, InstanceRow.team_id == team_id)
    if for_update:
        query = query.with_for_update()
    instance = session.scalar(query)
    if instance is None:
        raise NotFound("instance not found")
    return instance


def list_instances(
    session: Session, team_id: str, *, region: str | None, offset: int, limit: int
) -> tuple[list[InstanceRow], int]:
    where = [InstanceRow.team_id == team_id]
    if region:
        where.append(InstanceRow.region == region)
    total = session.scalar(select(func.count()).select_from(InstanceRow).where(*where)) or 0
    query = select(InstanceRow).where(*where).order_by(InstanceRow.created_at, InstanceRow.id)
    return _page(session, query, total, offset, limit), total


def deployments_by_id(session: Session, ids: set[str]) -> dict[str, DeploymentRow]:
    if not ids:
        return {}
    rows = session.scalars(select(DeploymentRow).where(DeploymentRow.id.in_(ids)))
    return {row.id: row for row in rows}


def supersede_pending(session: Session, instance: InstanceRow, now: datetime) -> None:
    """A newer spec replaces a rollout that had not finished."""
    if instance.pending_deployment_id:
        pending = session.get(DeploymentRow, instance.pending_deployment_id)
        if pending is not None:
            pending.status = DeploymentStatus.SUPERSEDED.value
            pending.updated_at = now
        instance.pending_deployment_id = None


def rename_instance(session: Session, instance: InstanceRow, name: str) -> None:
    if name != instance.name and name_in_use(session, instance.team_id, name, except_id=instance.id):
        raise Conflict(f"an instance named {name!r} already exists in this team")
    instance.name = name
    _flush_or_conflict(session, name)


# -- data-plane tokens ----------------------------------------------------------------------
def add_instance_token(session: Session, instance: InstanceRow, *, name: str, token_hash: str) -> InstanceTokenRow:
    row = InstanceTokenRow(id=str(uuid.uuid4()), instance_id=instance.id, name=name, token_hash=token_hash)
    session.add(row)
    session.flush()
    return row


def count_instance_tokens(session: Session, instance: InstanceRow) -> int:
    query = select(func.count()).select_from(InstanceTokenRow).where(InstanceTokenRow.instance_id == instance.id)
    return session.scalar(query) or 0


def list_instance_tokens(
    session: Session, instance: InstanceRow, *, offset: int, limit: int
) -> tuple[list[InstanceTokenRow], int]:
    total = count_instance_tokens(session, instance)
    query = (
        select(InstanceTokenRow)
        .where(InstanceTokenRow.instance_id == instance.id)
        .order_by(InstanceTokenRow.created_at, InstanceTokenRow.id)
    )
    return _page(session, query, total, offset, limit), total


def delete_instance_token(session: Session, instance: InstanceRow, token_id: str) -> None:
    if not _valid_uuid(token_id):
        raise NotFound("token not found")
    statement = delete(InstanceTokenRow).where(
        InstanceTokenRow.id == token_id, InstanceTokenRow.instance_id == instance.id
    )
    if cast(CursorResult[Any], session.execute(statement)).rowcount == 0:
        raise NotFound("token not found")


# -- accelerators ---------------------------------------------------------------------------
def list_accelerators(
    session: Session, instance: InstanceRow, *, slug: str | None, offset: int, limit: int
) -> tuple[list[AcceleratorRow], int]:
    where = [AcceleratorRow.instance_id == instance.id]
    if slug:
        where.append(AcceleratorRow.slug == slug)
    total = session.scalar(select(func.count()).select_from(AcceleratorRow).where(*where)) or 0
    query = (
        select(AcceleratorRow)
        .where(*where)
        .order_by(AcceleratorRow.created_at, AcceleratorRow.name)
    )
    return _page(session, query, total, offset, limit), total


def get_accelerator(session: Session, instance: InstanceRow, accelerator_id: str) -> AcceleratorRow:
    if not _valid_uuid(accelerator_id):
        raise NotFound("accelerator not found")
    row = session.scalar(
        select(AcceleratorRow).where(AcceleratorRow.id == accelerator_id, AcceleratorRow.instance_id == instance.id)
    )
    if row is None:
        raise NotFound("accelerator not found")
    return row
