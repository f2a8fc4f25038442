"""One reconcile pass: observe every replica through the runtime, decide per instance, act.

Every pass is idempotent and safe to interrupt at any line:
- a replica row is committed (status ``starting``, no handle) *before* the runtime is asked to
  start it; the handle is recorded right after. A crash in between is repaired by adoption:
  ``Runtime.discover`` finds the replica by its id on the next pass;
- runtime calls happen outside database transactions, which stay short;
- a runtime that cannot be reached (``RuntimeUnavailable``) changes nothing: statuses stay,
  the gateway keeps serving what it knows, the next pass tries again.

The reconciler does not know which runtime it drives, nor which engines exist.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm.exc import StaleDataError

from inferd.controller.act import Actor
from inferd.controller.decide import Decider
from inferd.controller.observe import Seen, Timeouts, Verdict, judge, needs_in_flight
from inferd.controller.plan import Group, ReplicaStatus
from inferd.domain.catalog import Catalog
from inferd.domain.inventory import cluster_counts
from inferd.runtime.base import ReplicaState, Runtime, RuntimeUnavailable
from inferd.store import capacity as capacity_store
from inferd.store import replicas as repo
from inferd.store.db import Database
from inferd.store.tables import InstanceRow, ReplicaRow, utcnow

log = logging.getLogger("inferd.controller")
LOG_SWEEP_SECONDS = 300.0


@dataclass
class Reconciler:
    database: Database
    catalog: Catalog
    runtime: Runtime
    timeouts: Timeouts
    hf_token_of: Callable[[InstanceRow], str | None]
    max_download_bytes: int | None = None
    still_leader: Callable[[], bool] = lambda: True
    """Checked before acting on each instance: a controller that lost its lease stops at once."""

    def __post_init__(self) -> None:
        self._unavailable_since: datetime | None = None
        self._counts: dict[tuple[str, str], int] | None = None
        self._running: int | None = None
        self._spec_cache: dict[str, list[Group]] = {}
        self._next_log_sweep = 0.0

    # -- the pass -------------------------------------------------------------------------
    def run_once(self) -> None:
        try:
            catalog = self._refresh_inventory()
            discovered = self.runtime.discover()
            with self.database.session() as session:
                ids = repo.instance_ids(session)
                handles = repo.handles(session)
            states = self.runtime.observe(handles)
        except RuntimeUnavailable as exc:
            self._report_unavailable(exc)
            return
        self._report_available()
        if self._running is None:
            log.info("the %s runtime runs %d replicas of this installation: adopting them", self.runtime.name, len(discovered))
        self._running = len(discovered)
        self._adopt(discovered)
        actor = Actor(self.database, self.runtime)
        decider = Decider(catalog, self.hf_token_of, self.max_download_bytes, self._spec_cache)
        for instance_id in ids:
            if not self.still_leader():
                log.warning("lost the controller lease mid-pass; stopping here")
                return
            try:
                self._reconcile(instance_id, states, decider, actor)
            except RuntimeUnavailable as exc:
                self._report_unavailable(exc)
                return
            except Exception:
                log.exception("reconcile failed", extra={"instance_id": instance_id})
        self._end_strays(discovered)
        self._sweep_logs()

    def _reconcile(self, instance_id: str, states: dict[str, ReplicaState], decider: Decider, actor: Actor) -> None:
        now = utcnow()
        with self.database.session() as session:
            seen = [_seen(r) for r in repo.of_instance(session, instance_id).values()]
        verdicts: dict[str, Verdict] = {}
        for replica in seen:
            busy = self.runtime.in_flight(replica.handle) if needs_in_flight(replica, now, self.timeouts) and replica.handle else None
            verdicts[replica.id] = judge(replica, states.get(replica.id), busy, now, self.timeouts)
        try:
            with self.database.session() as session:
                decisions = decider.decide(session, instance_id, verdicts, now)
        except StaleDataError:  # the API changed the instance meanwhile: decide again next pass
            log.info("instance %s changed while deciding; deciding again", instance_id, extra={"instance_id": instance_id})
            return
        actor.carry_out(decisions)

    # -- adoption and strays -------------------------------------------------------------------
    def _adopt(self, discovered: dict[str, str]) -> None:
        """A replica committed without a handle (the controller died mid-start) takes the one found."""
        with self.database.session() as session:
            for replica_id, handle in repo.existing(session, discovered).items():
                replica = session.get(ReplicaRow, replica_id)
                if handle is None and replica is not None and replica.status == ReplicaStatus.STARTING.value:
                    log.info("adopting replica %s (%s)", replica_id, discovered[replica_id])
                    repo.record_handle(session, replica_id, discovered[replica_id], utcnow())

    def _end_strays(self, discovered: dict[str, str]) -> None:
        """What the runtime runs under a handle the store does not record is ended: a replica
        that no longer exists, or one whose handle was cleared (failed, stopped) before a crash
        kept the controller from ending it. Kill before forget, even across a crash."""
        if not discovered:
            return
        with self.database.session() as session:
            known = repo.existing(session, discovered)
        for replica_id, handle in discovered.items():
            if known.get(replica_id, "") != handle:
                log.warning("ending stray replica %s (%s)", replica_id, handle)
                self.runtime.kill(handle)

    def _sweep_logs(self) -> None:
        """Logs of replicas that no longer exist go, on the first pass and every few minutes."""
        now = time.monotonic()
        if now < self._next_log_sweep:
            return
        self._next_log_sweep = now + LOG_SWEEP_SECONDS
        logged = self.runtime.logged_replicas()
        if not logged:
            return
        with self.database.session() as session:
            alive = set(repo.existing(session, {replica_id for _, replica_id in logged}))
        for instance_id, replica_id in logged:
            if replica_id not in alive:
                self.runtime.discard_logs(instance_id, replica_id)

    # -- inventory -----------------------------------------------------------------------------
    def _refresh_inventory(self) -> Catalog:
        """Counts of cluster-counted kinds from the runtime's nodes, stored for the API."""
        if not self.catalog.counted_by_cluster():
            return self.catalog
        nodes = self.runtime.nodes()
        if nodes is None:
            return self.catalog
        counts = cluster_counts(self.catalog, [n.resources for n in nodes if n.alive])
        if counts != self._counts:
            with self.database.session() as session:
                capacity_store.write_counts(session, counts)
            log.info("cluster capacity: %s", ", ".join(f"{s}@{r}={n}" for (s, r), n in sorted(counts.items())))
            self._counts = counts
        return self.catalog.with_counts(counts)

    def _report_unavailable(self, exc: Exception) -> None:
        if self._unavailable_since is None:
            self._unavailable_since = utcnow()
            log.error("runtime %s unreachable (%s): keeping every status as it is and retrying", self.runtime.name, exc)

    def _report_available(self) -> None:
        if self._unavailable_since is not None:
            seconds = (utcnow() - self._unavailable_since).total_seconds()
            log.warning("runtime %s reachable again after %.0f s", self.runtime.name, seconds)
            self._unavailable_since = None

    # -- shutdown --------------------------------------------------------------------------
    def stop_all(self) -> None:
        """Explicit stop (``--stop-replicas-on-exit``): end every replica, start them again on return."""
        with self.database.session() as session:
            handles = repo.stop_all(session)
        Actor(self.database, self.runtime).stop_and_wait(handles)


def _seen(replica: ReplicaRow) -> Seen:
    return Seen(
        id=replica.id,
        status=ReplicaStatus(replica.status),
        handle=replica.handle,
        phase=replica.phase,
        phase_since=replica.phase_since,
        stop_requested_at=replica.stop_requested_at,
        engine=replica.engine,
    )
