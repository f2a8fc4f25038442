"""One reconcile pass: observe replicas, decide with ``plan``, act through the runtime.

Every pass is idempotent and safe to interrupt at any line:
- a replica row is committed (status ``starting``, port chosen) *before* its process starts,
  and the process carries the replica id in its environment, so a crash between the two is
  repaired by adopting the process (``Runtime.discover``) on the next pass;
- probes and process checks happen outside database transactions, which stay short.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from inferd.config import Settings
from inferd.controller.plan import (
    Group,
    Observed,
    ReplicaStatus,
    accelerator_status,
    backoff_seconds,
    derive_status,
    desired_groups,
    plan,
)
from inferd.domain.catalog import AcceleratorKind, Catalog
from inferd.domain.status import DeploymentStatus, InstanceStatus
from inferd.domain.tokens import accelerator_name
from inferd.engines.activity import in_flight
from inferd.engines.artifacts import resolve
from inferd.engines.base import LaunchSpec, engine_for
from inferd.engines.probe import is_ready_sync
from inferd.pki import SecretBox
from inferd.runtime.base import ProcessRef, Runtime
from inferd.runtime.local import log_tail
from inferd.store.db import Database
from inferd.store.tables import AcceleratorRow, DeploymentRow, InstanceRow, ReplicaRow, utcnow

log = logging.getLogger("inferd.controller")
REPLICA_HOST = "127.0.0.1"
KILL_GRACE_SECONDS = 10
"""Between SIGTERM and SIGKILL."""


def free_port(host: str = REPLICA_HOST) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class _Observation:
    """What a pass saw of one replica, applied later inside a transaction."""

    status: ReplicaStatus
    ref: ProcessRef | None = None
    error: str | None = None
    gone: bool = False
    terminate: bool = False
    kill: bool = False


@dataclass
class _Start:
    replica_id: str
    instance_id: str
    model_slug: str
    accelerator_slug: str
    region: str
    port: int
    hf_token: str | None


@dataclass
class _Decisions:
    starts: list[_Start] = field(default_factory=list)
    terminate: list[ProcessRef] = field(default_factory=list)
    kill: list[ProcessRef] = field(default_factory=list)


class Reconciler:
    def __init__(
        self, *, database: Database, catalog: Catalog, secrets: SecretBox, settings: Settings, runtime: Runtime
    ) -> None:
        self.database = database
        self.catalog = catalog
        self.secrets = secrets
        self.settings = settings
        self.runtime = runtime
        self._stop_requested: dict[str, datetime] = {}

    # -- the pass ---------------------------------------------------------------------------
    def run_once(self) -> None:
        with self.database.session() as session:
            ids = list(session.scalars(select(InstanceRow.id)))
        discovered = self.runtime.discover()
        for instance_id in ids:
            try:
                self.reconcile(instance_id, discovered)
            except Exception:
                log.exception("reconcile failed", extra={"instance_id": instance_id})
        self._kill_strays(discovered)

    def reconcile(self, instance_id: str, discovered: dict[str, ProcessRef]) -> None:
        with self.database.session() as session:
            replicas = list(session.scalars(select(ReplicaRow).where(ReplicaRow.instance_id == instance_id)))
        seen = {r.id: self._observe(r, discovered) for r in replicas}
        with self.database.session() as session:
            decisions = self._decide(session, instance_id, seen)
        for ref in decisions.terminate:
            self.runtime.terminate(ref)
        for ref in decisions.kill:
            self.runtime.kill(ref)
        for start in decisions.starts:
            self._start(start)

    # -- observe ----------------------------------------------------------------------------
    def _observe(self, replica: ReplicaRow, discovered: dict[str, ProcessRef]) -> _Observation:
        status = ReplicaStatus(replica.status)
        ref = ProcessRef(replica.pid, replica.pid_started or "") if replica.pid else discovered.get(replica.id)
        running = ref is not None and self.runtime.is_running(ref)
        now = utcnow()
        if status is ReplicaStatus.STOPPING:
            if not running:
                return _Observation(status, gone=True)
            # Out of the route table for ``drain_seconds`` first; then SIGTERM once the replica
            # has no request in flight (at most ``stop_timeout`` later); SIGKILL 10 s after that.
            waited = (now - self._stop_requested.setdefault(replica.id, now)).total_seconds()
            drain, patience = self.settings.drain_seconds, self.settings.stop_timeout
            idle = waited >= drain and not in_flight(replica.host, replica.port, replica.engine)
            return _Observation(
                status,
                ref=ref,
                terminate=idle or waited >= drain + patience,
                kill=waited >= drain + patience + KILL_GRACE_SECONDS,
            )
        if status in (ReplicaStatus.FAILED, ReplicaStatus.STOPPED):
            return _Observation(status, ref=ref if running else None)
        if not running:
            if replica.pid is None and replica.started_at is None:
                return _Observation(status)  # committed but never launched: launch it now
            tail = log_tail(self._log_path(replica))
            reason = "the model server exited" + (f": {tail.splitlines()[-1]}" if tail else "")
            return _Observation(ReplicaStatus.FAILED, error=reason)
        assert ref is not None
        if status is ReplicaStatus.READY:
            return _Observation(status, ref=ref)
        if is_ready_sync(replica.host, replica.port, replica.health_path, timeout=1.0):
            return _Observation(ReplicaStatus.READY, ref=ref)
        started = replica.started_at or replica.created_at
        if now - started > timedelta(seconds=self.settings.startup_timeout):
            return _Observation(
                ReplicaStatus.FAILED,
                ref=ref,
                kill=True,
                error=f"not ready within {int(self.settings.startup_timeout)} s",
            )
        return _Observation(status, ref=ref)

    # -- decide -----------------------------------------------------------------------------
    def _decide(self, session: Session, instance_id: str, seen: dict[str, _Observation]) -> _Decisions:
        decisions = _Decisions()
        instance = session.get(InstanceRow, instance_id, with_for_update=True)
        if instance is None:
            return decisions
        now = utcnow()
        replicas = {r.id: r for r in session.scalars(select(ReplicaRow).where(ReplicaRow.instance_id == instance_id))}
        accelerators = {a.id: a for a in session.scalars(select(AcceleratorRow).where(AcceleratorRow.instance_id == instance_id))}
        hf_token = self._hf_token(instance)

        for replica_id, observation in seen.items():
            replica = replicas.get(replica_id)
            if replica is None:
                continue
            if observation.gone:
                self._remove(session, replica, accelerators)
                del replicas[replica_id]
                continue
            if observation.kill and observation.ref:
                decisions.kill.append(observation.ref)
            elif observation.terminate and observation.ref:
                decisions.terminate.append(observation.ref)
            self._apply(replica, observation, now)

        if instance.status == InstanceStatus.DELETING:
            self._delete_instance(session, instance, replicas, accelerators, now)
            return decisions

        live = session.get(DeploymentRow, instance.live_deployment_id) if instance.live_deployment_id else None
        pending = session.get(DeploymentRow, instance.pending_deployment_id) if instance.pending_deployment_id else None
        desired = pending or live
        if desired is None:
            return decisions
        groups = desired_groups(desired.spec)
        observed = [_observed(r) for r in replicas.values()]
        actions = plan(groups, observed)

        for replica_id in actions.stop:
            self._begin_stop(replicas[replica_id], now)
        placement_error = self._create(session, instance, actions.create, decisions, hf_token, now)
        for replica in replicas.values():
            if self._due_for_start(replica, now):
                replica.restarts += 1 if replica.status != ReplicaStatus.STARTING.value else 0
                replica.status = ReplicaStatus.STARTING.value
                replica.port = free_port()
                replica.pid = None
                replica.pid_started = None
                replica.started_at = None
                replica.updated_at = now
                decisions.starts.append(self._start_of(instance, replica, hf_token))

        if actions.rolled_out and pending is not None and placement_error is None:
            self._promote(instance, live, pending, now)
            pending, live = None, pending
        self._sync_accelerators(replicas.values(), accelerators, now)
        status, reason = derive_status(
            groups=groups,
            replicas=[_observed(r) for r in replicas.values()],
            has_pending=pending is not None,
            has_live=live is not None,
            placement_error=placement_error,
        )
        if (instance.status, instance.status_reason) != (status.value, reason):
            log.info("instance %s: %s -> %s", instance.id, instance.status, status.value, extra={"instance_id": instance.id})
            instance.status, instance.status_reason = status.value, reason
            instance.updated_at = now
        return decisions

    def _apply(self, replica: ReplicaRow, observation: _Observation, now: datetime) -> None:
        previous = replica.status
        if observation.ref and replica.pid is None and observation.status is not ReplicaStatus.FAILED:
            replica.pid, replica.pid_started = observation.ref.pid, observation.ref.started  # adopted
            replica.started_at = replica.started_at or now
        if observation.status is ReplicaStatus.FAILED and previous != ReplicaStatus.FAILED.value:
            replica.failures += 1
            replica.last_error = observation.error
            replica.next_start_at = now + timedelta(seconds=backoff_seconds(replica.failures))
            replica.pid = replica.pid_started = None
            log.warning("replica %s failed (%s)", replica.id, observation.error, extra={"instance_id": replica.instance_id})
        if observation.status is ReplicaStatus.READY and previous != ReplicaStatus.READY.value:
            replica.failures = 0
            replica.last_error = None
            replica.ready_at = now
        if observation.status.value != previous:
            replica.status = observation.status.value
            replica.updated_at = now

    def _due_for_start(self, replica: ReplicaRow, now: datetime) -> bool:
        status = ReplicaStatus(replica.status)
        if status is ReplicaStatus.STOPPED:
            return True
        if status is ReplicaStatus.STARTING:
            return replica.pid is None and replica.started_at is None
        return status is ReplicaStatus.FAILED and (replica.next_start_at is None or replica.next_start_at <= now)

    def _begin_stop(self, replica: ReplicaRow, now: datetime) -> None:
        """Out of the route table now; SIGTERM follows after the drain period (``_observe``)."""
        self._stop_requested[replica.id] = now
        replica.status = ReplicaStatus.STOPPING.value
        replica.updated_at = now

    def _remove(self, session: Session, replica: ReplicaRow, accelerators: dict[str, AcceleratorRow]) -> None:
        self._stop_requested.pop(replica.id, None)
        accelerator = accelerators.pop(replica.accelerator_id, None)
        session.delete(replica)
        if accelerator is not None:
            session.delete(accelerator)
        session.flush()

    def _delete_instance(
        self,
        session: Session,
        instance: InstanceRow,
        replicas: dict[str, ReplicaRow],
        accelerators: dict[str, AcceleratorRow],
        now: datetime,
    ) -> None:
        """Stop every replica; once none is left, the instance and all it owns are removed."""
        for replica_id, replica in list(replicas.items()):
            if replica.status == ReplicaStatus.STOPPING.value:
                continue
            if replica.pid:
                self._begin_stop(replica, now)
            else:
                self._remove(session, replica, accelerators)
                del replicas[replica_id]
        if not replicas:
            session.execute(delete(AcceleratorRow).where(AcceleratorRow.instance_id == instance.id))
            session.delete(instance)
            log.info("instance %s deleted", instance.id, extra={"instance_id": instance.id})

    def _promote(self, instance: InstanceRow, live: DeploymentRow | None, pending: DeploymentRow, now: datetime) -> None:
        if live is not None:
            live.status, live.updated_at = DeploymentStatus.SUPERSEDED.value, now
        pending.status, pending.updated_at = DeploymentStatus.ACTIVE.value, now
        instance.live_deployment_id, instance.pending_deployment_id = pending.id, None
        instance.updated_at = now
        log.info("instance %s: version %s is live", instance.id, pending.version, extra={"instance_id": instance.id})

    # -- placement --------------------------------------------------------------------------
    def _create(
        self,
        session: Session,
        instance: InstanceRow,
        wanted: Iterable[Group],
        decisions: _Decisions,
        hf_token: str | None,
        now: datetime,
    ) -> str | None:
        """Allocate accelerators and replica rows; all of a slug or none (no half rollouts)."""
        by_slug: dict[str, list[Group]] = {}
        for group in wanted:
            by_slug.setdefault(group.accelerator_slug, []).append(group)
        for slug, groups in by_slug.items():
            kind = self.catalog.accelerator(slug, instance.region)
            capacity = kind.count if kind else 0
            used = self._units_in_use(session, slug, instance.region)
            if used + len(groups) > capacity:
                return (
                    f"not enough capacity: needs {len(groups)} more {slug} in {instance.region}, "
                    f"{capacity - used} of {capacity} free"
                )
        for slug, groups in by_slug.items():
            kind = self.catalog.accelerator(slug, instance.region)
            assert kind is not None
            for group in groups:
                replica = self._new_replica(session, instance, group, kind, now)
                decisions.starts.append(self._start_of(instance, replica, hf_token))
        return None

    def _units_in_use(self, session: Session, slug: str, region: str) -> int:
        query = (
            select(func.count())
            .select_from(AcceleratorRow)
            .join(InstanceRow, InstanceRow.id == AcceleratorRow.instance_id)
            .where(AcceleratorRow.slug == slug, InstanceRow.region == region)
        )
        return session.scalar(query) or 0

    def _new_replica(
        self, session: Session, instance: InstanceRow, group: Group, kind: AcceleratorKind, now: datetime
    ) -> ReplicaRow:
        accelerator = AcceleratorRow(
            id=str(uuid.uuid4()),
            instance_id=instance.id,
            model_id=group.model_id,
            slug=group.accelerator_slug,
            name=accelerator_name(kind.name_prefix),
            role=group.role,
            status=accelerator_status(ReplicaStatus.STARTING).value,
            created_at=now,
            updated_at=now,
        )
        replica = ReplicaRow(
            id=str(uuid.uuid4()),
            instance_id=instance.id,
            accelerator_id=accelerator.id,
            model_id=group.model_id,
            model_slug=group.model_slug,
            accelerator_slug=group.accelerator_slug,
            template=group.template,
            engine=kind.engine,
            host=REPLICA_HOST,
            port=free_port(),
            status=ReplicaStatus.STARTING.value,
            created_at=now,
            updated_at=now,
        )
        session.add(accelerator)
        session.flush()
        session.add(replica)
        session.flush()
        return replica

    def _sync_accelerators(
        self, replicas: Iterable[ReplicaRow], accelerators: dict[str, AcceleratorRow], now: datetime
    ) -> None:
        for replica in replicas:
            accelerator = accelerators.get(replica.accelerator_id)
            wanted = accelerator_status(ReplicaStatus(replica.status)).value
            if accelerator is not None and accelerator.status != wanted:
                accelerator.status, accelerator.updated_at = wanted, now

    # -- acting -----------------------------------------------------------------------------
    def _start_of(self, instance: InstanceRow, replica: ReplicaRow, hf_token: str | None) -> _Start:
        return _Start(
            replica_id=replica.id,
            instance_id=instance.id,
            model_slug=replica.model_slug,
            accelerator_slug=replica.accelerator_slug,
            region=instance.region,
            port=replica.port,
            hf_token=hf_token,
        )

    def _start(self, start: _Start) -> None:
        now = utcnow()
        try:
            launch = self._launch_spec(start)
            ref = self.runtime.start(start.replica_id, launch, self._log_path_of(start.instance_id, start.replica_id))
        except Exception as exc:  # a replica that cannot start is a status, not a crash
            log.warning("replica %s cannot start: %s", start.replica_id, exc, extra={"instance_id": start.instance_id})
            with self.database.session() as session:
                replica = session.get(ReplicaRow, start.replica_id)
                if replica is not None:
                    replica.status = ReplicaStatus.FAILED.value
                    replica.failures += 1
                    replica.last_error = str(exc)
                    replica.next_start_at = now + timedelta(seconds=backoff_seconds(replica.failures))
                    replica.updated_at = now
            return
        with self.database.session() as session:
            replica = session.get(ReplicaRow, start.replica_id)
            if replica is None:  # removed meanwhile: do not leak the process
                self.runtime.kill(ref)
                return
            replica.pid, replica.pid_started = ref.pid, ref.started
            replica.health_path = launch.health_path
            replica.started_at = now
            replica.updated_at = now

    def _launch_spec(self, start: _Start) -> LaunchSpec:
        model = self.catalog.model(start.model_slug)
        kind = self.catalog.accelerator(start.accelerator_slug, start.region)
        if model is None or kind is None:
            raise RuntimeError(f"{start.model_slug} on {start.accelerator_slug} is no longer in the catalog")
        source = model.sources.get(kind.engine)
        if source is None:
            raise RuntimeError(f"the catalog gives no {kind.engine} source for {model.slug}")
        artifact = resolve(
            source,
            slug=model.slug,
            cache_dir=self.settings.resolved_model_cache_dir(),
            hf_token=start.hf_token,
            gated=model.gated,
        )
        return engine_for(kind.engine).launch_spec(
            artifact,
            host=REPLICA_HOST,
            port=start.port,
            slots=kind.slots,
            threads=kind.threads,
            gpu_count=kind.gpus_per_unit,
            hf_token=start.hf_token,
        )

    def _hf_token(self, instance: InstanceRow) -> str | None:
        token = self.secrets.open_json(instance.access_tokens_sealed).get("hugging_face_token")
        return str(token) if token else None

    def _log_path(self, replica: ReplicaRow) -> Path:
        return self._log_path_of(replica.instance_id, replica.id)

    def _log_path_of(self, instance_id: str, replica_id: str) -> Path:
        return self.settings.replica_log_dir() / instance_id / f"{replica_id}.log"

    def _kill_strays(self, discovered: dict[str, ProcessRef]) -> None:
        """Processes of this installation whose replica no longer exists are ended."""
        if not discovered:
            return
        with self.database.session() as session:
            known = set(session.scalars(select(ReplicaRow.id).where(ReplicaRow.id.in_(list(discovered)))))
        for replica_id, ref in discovered.items():
            if replica_id not in known:
                log.warning("killing stray replica process %s (pid %s)", replica_id, ref.pid)
                self.runtime.kill(ref)

    # -- shutdown ---------------------------------------------------------------------------
    def stop_all(self) -> None:
        """Clean shutdown: stop every replica and remember to start them again on return."""
        with self.database.session() as session:
            replicas = list(session.scalars(select(ReplicaRow).where(ReplicaRow.pid.is_not(None))))
            refs = [ProcessRef(r.pid, r.pid_started or "") for r in replicas if r.pid]
            for replica in replicas:
                if replica.status != ReplicaStatus.STOPPING.value:
                    replica.status = ReplicaStatus.STOPPED.value
                replica.pid = replica.pid_started = None
        for ref in refs:
            self.runtime.terminate(ref)
        deadline = utcnow() + timedelta(seconds=KILL_GRACE_SECONDS)
        while any(self.runtime.is_running(ref) for ref in refs) and utcnow() < deadline:
            time.sleep(0.1)
        for ref in refs:
            self.runtime.kill(ref)


def _observed(replica: ReplicaRow) -> Observed:
    return Observed(
        id=replica.id,
        template=replica.template,
        status=ReplicaStatus(replica.status),
        failures=replica.failures,
        last_error=replica.last_error,
    )

