"""Tables. Timestamps are stored as naive UTC and read back timezone-aware."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    """Microseconds kept: lists are ordered by creation time."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Same wall-clock value on SQLite (no time zones) and PostgreSQL."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use timezone-aware UTC")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None


class Base(DeclarativeBase):
    type_annotation_map: dict[Any, Any] = {datetime: UTCDateTime(), dict[str, Any]: JSON}


_ID = String(36)
_LIVE = text("status != 'deleting'")


class TeamRow(Base):
    __tablename__ = "teams"
    id: Mapped[str] = mapped_column(_ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiTokenRow(Base):
    """A control-plane token (``dop_v1_…``); only its SHA-256 is kept."""

    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(_ID, primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class InstanceRow(Base):
    """A Dedicated Inference instance: identity, observed status and its secrets (sealed)."""

    __tablename__ = "instances"
    id: Mapped[str] = mapped_column(_ID, primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    region: Mapped[str] = mapped_column(String(32), index=True)
    vpc_uuid: Mapped[str] = mapped_column(_ID)
    status: Mapped[str] = mapped_column(String(16))
    status_reason: Mapped[str | None] = mapped_column(Text, default=None)
    live_deployment_id: Mapped[str | None] = mapped_column(_ID, default=None)
    pending_deployment_id: Mapped[str | None] = mapped_column(_ID, default=None)
    access_tokens_sealed: Mapped[str | None] = mapped_column(Text, default=None)
    ca_cert_pem: Mapped[str] = mapped_column(Text)
    ca_key_sealed: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    token_rpm: Mapped[int | None] = mapped_column(Integer, default=None)
    """Data-plane requests per minute per ``di_`` token (None: no limit)."""
    token_tpm: Mapped[int | None] = mapped_column(Integer, default=None)
    """Data-plane tokens per minute per ``di_`` token (None: no limit)."""
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    """Row version: every ORM update is ``… WHERE version = <read>`` and bumps it, so two writers
    (API requests, a controller) never overwrite each other's change; the loser gets
    ``StaleDataError`` and reads again (SQLite has no ``SELECT … FOR UPDATE``)."""

    __mapper_args__ = {"version_id_col": version}

    __table_args__ = (
        # A name is unique among a team's instances that are not on their way out.
        Index(
            "uq_instances_team_name_live",
            "team_id",
            "name",
            unique=True,
            sqlite_where=_LIVE,
            postgresql_where=_LIVE,
        ),
        Index("ix_instances_team_created", "team_id", "created_at", "id"),
    )


class DeploymentRow(Base):
    """One version of an instance's spec; the instance points at its live and pending one."""

    __tablename__ = "deployments"
    id: Mapped[str] = mapped_column(_ID, primary_key=True)
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("instance_id", "version", name="uq_deployments_instance_version"),)


class InstanceTokenRow(Base):
    """A data-plane token (``di_…``) of one instance; only its SHA-256 is kept."""

    __tablename__ = "instance_tokens"
    id: Mapped[str] = mapped_column(_ID, primary_key=True)
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class InstanceChangeRow(Base):
    """One change of what decides how an instance is served, appended by database triggers
    (migration 0007) and read by :mod:`inferd.store.changes`. ``instance_id`` is no foreign
    key: a deleted instance must still be reported. ``AUTOINCREMENT`` on SQLite: a seq is
    never reused, even after the newest rows were deleted."""

    __tablename__ = "instance_changes"
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True)
    instance_id: Mapped[str] = mapped_column(_ID)
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_instance_changes_changed_at", "changed_at"), {"sqlite_autoincrement": True})


class AcceleratorRow(Base):
    """An accelerator unit placed for an instance by the controller."""

    __tablename__ = "accelerators"
    id: Mapped[str] = mapped_column(_ID, primary_key=True)
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[str] = mapped_column(_ID)
    slug: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(32))
    unit: Mapped[int | None] = mapped_column(Integer, default=None)
    """Index of the unit among its kind's units in the region (which GPUs it owns locally)."""
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReplicaRow(Base):
    """A model server the controller runs on one accelerator unit, through a runtime.

    The row is written *before* the runtime is asked to start it (status ``starting``, no
    handle); the handle the runtime returns is recorded right after. A controller that dies in
    between finds the replica again by its id (``Runtime.discover``) and adopts it.
    """

    __tablename__ = "replicas"
    id: Mapped[str] = mapped_column(_ID, primary_key=True)
    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), index=True)
    accelerator_id: Mapped[str] = mapped_column(ForeignKey("accelerators.id", ondelete="CASCADE"), unique=True)
    model_id: Mapped[str] = mapped_column(_ID)
    model_slug: Mapped[str] = mapped_column(String(255))
    accelerator_slug: Mapped[str] = mapped_column(String(64))
    template: Mapped[str] = mapped_column(String(32))
    """Hash of what the process runs; replicas with the template a spec asks for are reused."""
    engine: Mapped[str] = mapped_column(String(16))
    handle: Mapped[str | None] = mapped_column(String(255), default=None)
    """The runtime's opaque name for the running replica (a local process, a Ray actor)."""
    node: Mapped[str | None] = mapped_column(String(255), default=None)
    endpoint: Mapped[str | None] = mapped_column(String(255), default=None)
    """``http://<node address>:<port>``, as the runtime reported it."""
    phase: Mapped[str | None] = mapped_column(String(16), default=None)
    """The runtime's last word: placing, downloading, starting, ready, exited, lost."""
    detail: Mapped[str | None] = mapped_column(Text, default=None)
    """Progress while preparing (download percentage)."""
    phase_since: Mapped[datetime | None] = mapped_column(default=None)
    """When ``phase`` last changed: timeouts apply per phase (a long download is not a hang)."""
    status: Mapped[str] = mapped_column(String(16))
    restarts: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    """Consecutive failed starts; reset when the replica becomes ready."""
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    next_start_at: Mapped[datetime | None] = mapped_column(default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    ready_at: Mapped[datetime | None] = mapped_column(default=None)
    stop_requested_at: Mapped[datetime | None] = mapped_column(default=None)
    """When draining began: kept in the row so a new leader continues the same drain."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class CapacityRow(Base):
    """Units of an accelerator kind the cluster has now (kinds whose catalog count is ``cluster``).

    Written by the leading controller from the runtime's node list; read by the API for
    ``/sizes`` and for validating specs, so API processes never talk to the cluster.
    """

    __tablename__ = "capacity"
    slug: Mapped[str] = mapped_column(String(64), primary_key=True)
    region: Mapped[str] = mapped_column(String(32), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class LeaseRow(Base):
    """A named lease (``controller``): whoever holds it unexpired acts, the others wait.

    ``term`` grows by one each time the holder changes, so work can be fenced by it.
    """

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(255), default=None)
    term: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    acquired_at: Mapped[datetime | None] = mapped_column(default=None)
    renewed_at: Mapped[datetime | None] = mapped_column(default=None)
