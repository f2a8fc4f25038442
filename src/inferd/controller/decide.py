"""One instance's decisions, inside one short transaction: apply what was observed, plan with
``plan``, place new replicas on free units, derive the instance's status.

Nothing here talks to a runtime: the result is a list of requests to start and handles to
signal, which ``act`` carries out after the commit.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from inferd.controller.launch import NotLaunchable, replica_request
from inferd.controller.observe import Verdict
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
from inferd.domain.catalog import Catalog
from inferd.domain.status import DeploymentStatus, InstanceStatus
from inferd.domain.tokens import accelerator_name
from inferd.runtime.base import ReplicaRequest
from inferd.store import replicas as repo
from inferd.store.tables import AcceleratorRow, DeploymentRow, InstanceRow, ReplicaRow

log = logging.getLogger("inferd.controller")
SPEC_CACHE_SIZE = 10_000


@dataclass
class Decisions:
    starts: list[ReplicaRequest] = field(default_factory=list)
    terminate: list[str] = field(default_factory=list)
    kill: list[str] = field(default_factory=list)
    removed: list[tuple[str, str]] = field(default_factory=list)
    """``(instance_id, replica_id)`` of replicas removed for good: their logs go too."""


@dataclass
class Decider:
    catalog: Catalog
    """With the cluster's current counts."""
    hf_token_of: Callable[[InstanceRow], str | None]
    max_download_bytes: int | None = None
    spec_cache: dict[str, list[Group]] = field(default_factory=dict)
    """Groups of each deployment id seen: a deployment never changes once written, so its
    spec (with a tenant's ``workload_config``) is read and parsed once, not every pass."""

    def _groups(self, session: Session, deployment_id: str) -> list[Group]:
        groups = self.spec_cache.get(deployment_id)
        if groups is None:
            spec = session.scalar(select(DeploymentRow.spec).where(DeploymentRow.id == deployment_id))
            groups = desired_groups(spec or {"model_deployments": []})
            if len(self.spec_cache) >= SPEC_CACHE_SIZE:
                self.spec_cache.pop(next(iter(self.spec_cache)))
            self.spec_cache[deployment_id] = groups
        return groups

    def decide(self, session: Session, instance_id: str, verdicts: dict[str, Verdict], now: datetime) -> Decisions:
        decisions = Decisions()
        instance = session.get(InstanceRow, instance_id, with_for_update=True)
        if instance is None:
            return decisions
        replicas = repo.of_instance(session, instance_id)
        accelerators = repo.accelerators_of(session, instance_id)
        for replica_id, verdict in verdicts.items():
            replica = replicas.get(replica_id)
            if replica is None:
                continue
            if verdict.kill and replica.handle:
                decisions.kill.append(replica.handle)
            elif verdict.terminate and replica.handle:
                decisions.terminate.append(replica.handle)
            if verdict.gone:
                repo.remove(session, replica, accelerators)
                decisions.removed.append((instance_id, replica_id))
                del replicas[replica_id]
                continue
            _apply(replica, verdict, now)

        if instance.status == InstanceStatus.DELETING:
            self._delete_instance(session, instance, replicas, accelerators, decisions, now)
            return decisions

        desired_id = instance.pending_deployment_id or instance.live_deployment_id
        if desired_id is None:
            return decisions
        groups = self._groups(session, desired_id)
        templates = {g.template: g for g in groups}
        if instance.live_deployment_id and instance.live_deployment_id != desired_id:  # old replicas restart as they were
            templates = {g.template: g for g in self._groups(session, instance.live_deployment_id)} | templates
        actions = plan(groups, [_observed(r) for r in replicas.values()])
        for replica_id in actions.stop:
            _begin_stop(replicas[replica_id], now)
        placement_error = self._create(session, instance, actions.create, replicas, accelerators, now)
        hf_token = self.hf_token_of(instance)
        queued: Counter[str] = Counter()
        for replica in replicas.values():
            if _due_for_start(replica, now):
                group = templates.get(replica.template)
                error = self._start(session, instance, replica, accelerators, hf_token, decisions, queued, now,
                                    group.workload_config if group else {})
                placement_error = placement_error or error

        has_pending, has_live = instance.pending_deployment_id is not None, instance.live_deployment_id is not None
        if actions.rolled_out and has_pending and placement_error is None:
            _promote(session, instance, now)
            has_pending, has_live = False, True
        _sync_accelerators(replicas.values(), accelerators, now)
        status, reason = derive_status(
            groups=groups,
            replicas=[_observed(r) for r in replicas.values()],
            has_pending=has_pending,
            has_live=has_live,
            placement_error=placement_error,
        )
        if reason is None and status in (InstanceStatus.PROVISIONING, InstanceStatus.UPDATING):
            reason = _progress(replicas.values())
        if instance.status != status.value:
            log.info("instance %s: %s -> %s", instance.id, instance.status, status.value, extra={"instance_id": instance.id})
            instance.status, instance.updated_at = status.value, now
        if instance.status_reason != reason:  # progress alone does not count as a change of the instance
            instance.status_reason = reason
        return decisions

    # -- placement ----------------------------------------------------------------------------
    def _create(
        self, session: Session, instance: InstanceRow, wanted: Iterable[Group], replicas: dict[str, ReplicaRow],
        accelerators: dict[str, AcceleratorRow], now: datetime,
    ) -> str | None:
        """Allocate units and replica rows; all of a slug or none (no half rollouts)."""
        by_slug: dict[str, list[Group]] = {}
        for group in wanted:
            by_slug.setdefault(group.accelerator_slug, []).append(group)
        for slug, groups in by_slug.items():
            capacity = self.catalog.capacity(slug, instance.region)
            used = len(repo.units_held(session, slug, instance.region))
            if used + len(groups) > capacity:
                log.info("instance %s waits for %d %s in %s: %d of %d units free", instance.id, len(groups), slug,
                         instance.region, max(0, capacity - used), capacity, extra={"instance_id": instance.id})
                return (  # the tenant's terms: not other teams' usage
                    f"not enough capacity: {len(groups)} more {slug} needed in {instance.region}, "
                    "more than are free now; it starts when units free up"
                )
        for slug, groups in by_slug.items():
            kind = self.catalog.accelerator(slug, instance.region)
            assert kind is not None
            for group in groups:
                unit = repo.lowest_free_unit(repo.units_held(session, slug, instance.region))
                replica, accelerator = repo.add(
                    session,
                    instance_id=instance.id,
                    accelerator={"model_id": group.model_id, "slug": slug, "name": accelerator_name(kind.name_prefix),
                                 "role": group.role, "unit": unit,
                                 "status": accelerator_status(ReplicaStatus.STARTING).value},
                    replica={"model_id": group.model_id, "model_slug": group.model_slug, "accelerator_slug": slug,
                             "template": group.template, "engine": kind.engine,
                             "status": ReplicaStatus.STARTING.value},
                    now=now,
                )
                replicas[replica.id] = replica
                accelerators[accelerator.id] = accelerator
        return None

    def _start(
        self, session: Session, instance: InstanceRow, replica: ReplicaRow, accelerators: dict[str, AcceleratorRow],
        hf_token: str | None, decisions: Decisions, queued: Counter[str], now: datetime, workload_config: dict[str, Any],
    ) -> str | None:
        """Queue a (re)start; returns a reason when the cluster has no room for it now."""
        capacity = self.catalog.capacity(replica.accelerator_slug, instance.region)
        running = repo.running_units(session, replica.accelerator_slug, instance.region)
        if running + queued[replica.accelerator_slug] >= capacity:
            log.info("replica %s waits: %s in %s has %d units, %d running", replica.id, replica.accelerator_slug,
                     instance.region, capacity, running, extra={"instance_id": instance.id})
            return (f"capacity lost: {replica.accelerator_slug} in {instance.region} has fewer units than are "
                    "running and wanted now; waiting for capacity to return")
        accelerator = accelerators.get(replica.accelerator_id)
        try:
            request = replica_request(
                self.catalog, replica_id=replica.id, instance_id=instance.id, model_slug=replica.model_slug,
                accelerator_slug=replica.accelerator_slug, region=instance.region,
                unit=accelerator.unit if accelerator else None, hf_token=hf_token,
                max_download_bytes=self.max_download_bytes, workload_config=workload_config,
            )
        except NotLaunchable as exc:
            mark_failed(replica, str(exc), now)
            return None
        if replica.status != ReplicaStatus.STARTING.value:
            replica.restarts += 1
        replica.status = ReplicaStatus.STARTING.value
        replica.started_at = None
        replica.endpoint = replica.node = replica.phase = replica.detail = None
        replica.updated_at = now
        decisions.starts.append(request)
        queued[replica.accelerator_slug] += 1
        return None

    def _delete_instance(
        self, session: Session, instance: InstanceRow, replicas: dict[str, ReplicaRow],
        accelerators: dict[str, AcceleratorRow], decisions: Decisions, now: datetime,
    ) -> None:
        """Stop every replica; once none is left, the instance and all it owns are removed."""
        for replica_id, replica in list(replicas.items()):
            if replica.status == ReplicaStatus.STOPPING.value:
                continue
            if replica.handle:
                _begin_stop(replica, now)
            else:
                repo.remove(session, replica, accelerators)
                decisions.removed.append((instance.id, replica_id))
                del replicas[replica_id]
        if not replicas:
            repo.remove_instance(session, instance)
            log.info("instance %s deleted", instance.id, extra={"instance_id": instance.id})


def _progress(replicas: Iterable[ReplicaRow]) -> str | None:
    """What a replica still on its way is doing, for ``status_reason`` while provisioning."""
    starting = None
    for replica in replicas:
        if replica.status != ReplicaStatus.STARTING.value:
            continue
        if replica.phase in ("downloading", "placing") and replica.detail:
            return f"{replica.model_slug}: {replica.detail}"
        if replica.phase == "starting":  # the engine's own log lines are for operators only
            starting = starting or f"{replica.model_slug}: starting the model server"
    return starting


def _apply(replica: ReplicaRow, verdict: Verdict, now: datetime) -> None:
    previous = replica.status
    state = verdict.state
    if state is not None:
        if replica.phase != state.phase.value:
            replica.phase, replica.phase_since = state.phase.value, now
        replica.endpoint = state.endpoint or replica.endpoint
        replica.node = state.node or replica.node
        replica.detail = state.detail
    if verdict.forget:
        replica.handle = None
    if verdict.status is ReplicaStatus.FAILED and previous != ReplicaStatus.FAILED.value:
        mark_failed(replica, verdict.error, now)
        return
    if verdict.status is ReplicaStatus.READY and previous != ReplicaStatus.READY.value:
        replica.failures = 0
        replica.last_error = None
        replica.ready_at = now
    if verdict.status.value != previous:
        replica.status = verdict.status.value
        replica.updated_at = now


def mark_failed(replica: ReplicaRow, error: str | None, now: datetime) -> None:
    replica.status = ReplicaStatus.FAILED.value
    replica.failures += 1
    replica.last_error = error
    replica.next_start_at = now + timedelta(seconds=backoff_seconds(replica.failures))
    replica.handle = None
    replica.updated_at = now
    log.warning("replica %s failed (%s)", replica.id, error, extra={"instance_id": replica.instance_id})


def _due_for_start(replica: ReplicaRow, now: datetime) -> bool:
    status = ReplicaStatus(replica.status)
    if status is ReplicaStatus.STOPPED:
        return True
    if status is ReplicaStatus.STARTING:
        return replica.handle is None and replica.started_at is None
    return status is ReplicaStatus.FAILED and (replica.next_start_at is None or replica.next_start_at <= now)


def _begin_stop(replica: ReplicaRow, now: datetime) -> None:
    """Out of the route table now; SIGTERM follows after the drain period (``observe``)."""
    replica.status = ReplicaStatus.STOPPING.value
    replica.stop_requested_at = now
    replica.updated_at = now


def _promote(session: Session, instance: InstanceRow, now: datetime) -> None:
    live = session.get(DeploymentRow, instance.live_deployment_id) if instance.live_deployment_id else None
    pending = session.get(DeploymentRow, instance.pending_deployment_id)
    assert pending is not None
    if live is not None:
        live.status, live.updated_at = DeploymentStatus.SUPERSEDED.value, now
    pending.status, pending.updated_at = DeploymentStatus.ACTIVE.value, now
    instance.live_deployment_id, instance.pending_deployment_id = pending.id, None
    instance.updated_at = now
    log.info("instance %s: version %s is live", instance.id, pending.version, extra={"instance_id": instance.id})


def _sync_accelerators(replicas: Iterable[ReplicaRow], accelerators: dict[str, AcceleratorRow], now: datetime) -> None:
    for replica in replicas:
        accelerator = accelerators.get(replica.accelerator_id)
        wanted = accelerator_status(ReplicaStatus(replica.status)).value
        if accelerator is not None and accelerator.status != wanted:
            accelerator.status, accelerator.updated_at = wanted, now


def _observed(replica: ReplicaRow) -> Observed:
    return Observed(
        id=replica.id,
        template=replica.template,
        status=ReplicaStatus(replica.status),
        failures=replica.failures,
        last_error=replica.last_error,
    )
