"""One reconcile pass: observe every replica through the runtime, decide per instance, act.

Every pass is idempotent and safe to interrupt at any line:
- a replica row is committed (status ``starting``, no handle) *before* the runtime is asked to
  start it; the handle is recorded right after. A crash in between is repaired by adoption:
  ``Runtime.discover`` finds the replica by its id on the next pass;
- runtime calls happen outside database transactions, which stay short;
- a runtime that cannot be reached (``RuntimeUnavailable``) changes nothing: statuses stay,
  the gateway keeps serving what it knows, the next pass tries again.

A pass reads and decides only the instances that may need it (``steady``): those the change feed
reports, those the runtime reports differently, those not settled; a steady pass is the lease, one
feed query and one ``Runtime.observe``. A full pass (the first, every ``FULL_PASS_SECONDS``, after a
lease change or a lost track) reads every instance in two queries and reconciles those that differ
from memory. ``discover`` (adoption, strays) runs on full passes and whenever something is
reconciled: the local runtime's /proc scan costs milliseconds.

The reconciler does not know which runtime it drives, nor which engines exist.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm.exc import StaleDataError

from inferd.controller.act import Actor
from inferd.controller.decide import Decider
from inferd.controller.observe import Timeouts, Verdict, judge, needs_in_flight
from inferd.controller.plan import Group, ReplicaStatus
from inferd.controller.steady import InstanceView, Memory, ReplicaView
from inferd.domain.catalog import Catalog
from inferd.domain.inventory import cluster_counts
from inferd.runtime.base import ReplicaState, Runtime, RuntimeUnavailable
from inferd.store import capacity as capacity_store
from inferd.store import replicas as repo
from inferd.store.changes import ChangeFeed
from inferd.store.db import Database
from inferd.store.tables import InstanceRow, ReplicaRow, utcnow

log = logging.getLogger("inferd.controller")
LOG_SWEEP_SECONDS = 300.0
FULL_PASS_SECONDS = 30.0
"""Backstop: every instance is read (two queries) and compared with memory at least this often."""


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
    full_pass_interval: float = FULL_PASS_SECONDS

    def __post_init__(self) -> None:
        self._unavailable_since: datetime | None = None
        self._counts: dict[tuple[str, str], int] | None = None
        self._running: int | None = None
        self._spec_cache: dict[str, list[Group]] = {}
        self._next_log_sweep = 0.0
        self._memory = Memory()
        self._rows: dict[str, tuple[tuple[Any, ...], InstanceView]] = {}
        """Each instance's rows as last read, with the view made of them."""
        self._feed: ChangeFeed | None = None
        self._steady = -1

    def invalidate(self) -> None:
        """Forget what earlier passes saw (another controller may have acted): the next pass is full
        and reconciles every instance."""
        self._memory.clear()
        self._rows.clear()
        if self._feed is not None:
            self._feed.reset()

    def close(self) -> None:
        if self._feed is not None:
            self._feed.close()

    # -- the pass -------------------------------------------------------------------------
    def run_once(self) -> None:
        if self._feed is None:
            self._feed = ChangeFeed(self.database, listen=False, full_reload_interval=self.full_pass_interval)
        memory = self._memory
        try:
            catalog = self._refresh_inventory()
            changed = self._feed.poll()
            if changed is not None:
                memory.note_changed(changed)
            views = self._read(None if changed is None else memory.due)
            todo = memory.stale(views) if changed is None else set(memory.due)
            discovered = self._discover() if changed is None or todo else None
            states = self.runtime.observe(memory.handles)  # read only: Ray copies it to send it
            moved = memory.runtime_changed(states) - todo
            if moved:
                discovered = discovered if discovered is not None else self._discover()
                views.update(self._read(moved))
                todo |= moved
        except Exception as exc:  # a full read may not have happened: the next pass starts with one
            self._feed.reset()
            if not isinstance(exc, RuntimeUnavailable):
                raise
            self._report_unavailable(exc)
            return
        self._report_available()
        self._report_steady(memory.count() - len(todo))
        if todo:
            actor = Actor(self.database, self.runtime)
            decider = Decider(catalog, self.hf_token_of, self.max_download_bytes, self._spec_cache)
            for view in views.values():
                if view.id not in todo:
                    continue
                if not self.still_leader():  # what is left stays due; a new term forgets everything
                    log.warning("lost the controller lease mid-pass; stopping here")
                    return
                try:
                    self._reconcile(view, states, decider, actor)
                except RuntimeUnavailable as exc:
                    memory.failed(view.id)
                    self._report_unavailable(exc)
                    return
                except Exception:
                    memory.failed(view.id)
                    log.exception("reconcile failed", extra={"instance_id": view.id})
        if discovered is not None:
            self._end_strays(discovered)
        self._sweep_logs()

    def _read(self, instance_ids: Collection[str] | None) -> dict[str, InstanceView]:
        """Views of those instances (all with None), indexed for ``observe``; ones gone are forgotten.
        An instance whose rows read exactly as last time keeps its view object: a full pass over
        1,000 steady instances then compares rows as tuples, not views field by field."""
        if instance_ids is not None and not instance_ids:
            return {}
        with self.database.session() as session:
            heads = repo.instance_heads(session, instance_ids)
            rows = repo.replica_heads(session, instance_ids)
        replicas: dict[str, list[tuple[Any, ...]]] = {}
        for row in rows:
            replicas.setdefault(row[0], []).append(row)
        views: dict[str, InstanceView] = {}
        for head in heads:
            iid = head[0]
            raw = (head, tuple(replicas.get(iid, ())))
            cached = self._rows.get(iid)
            if cached is not None and cached[0] == raw:
                views[iid] = cached[1]
                continue
            _, status, reason, live, pending = head
            views[iid] = view = InstanceView(iid, status, reason, live, pending, tuple(
                ReplicaView(rid, ReplicaStatus(state), *rest) for _, rid, state, *rest in raw[1]))
            self._rows[iid] = (raw, view)
        gone = (self._rows.keys() if instance_ids is None else set(instance_ids)) - views.keys()
        for iid in list(gone):  # deleted
            self._memory.forget(iid)
            self._rows.pop(iid, None)
        for view in views.values():
            self._memory.index(view)
        return views

    def _reconcile(self, view: InstanceView, states: dict[str, ReplicaState], decider: Decider, actor: Actor) -> None:
        now = utcnow()
        mine = view.states(states)
        verdicts: dict[str, Verdict] = {}
        for replica, state in zip(view.replicas, mine, strict=True):
            busy = (self.runtime.in_flight(replica.handle)
                    if needs_in_flight(replica, now, self.timeouts) and replica.handle else None)
            verdicts[replica.id] = judge(replica, state, busy, now, self.timeouts)
        try:
            with self.database.session() as session:
                decisions = decider.decide(session, view.id, verdicts, now)
        except StaleDataError:  # the API changed the instance meanwhile: decide again next pass
            log.info("instance %s changed while deciding; deciding again", view.id, extra={"instance_id": view.id})
            self._memory.failed(view.id)
            return
        actor.carry_out(decisions)
        self._memory.reconciled(view, mine)

    def _report_steady(self, steady: int) -> None:
        """A line when the number of skipped instances changes (not every pass)."""
        if steady != self._steady:
            self._steady = steady
            log.info("%d of %d instances steady: skipped until the change feed or the runtime reports a change",
                     steady, self._memory.count())

    # -- adoption and strays -------------------------------------------------------------------
    def _discover(self) -> dict[str, str]:
        """What the runtime runs that memory does not record under the same handle: only those are
        looked up in the store, to adopt them (now) or end them as strays (after the pass)."""
        discovered = self.runtime.discover()
        if self._running is None:
            log.info("the %s runtime runs %d replicas of this installation: adopting them", self.runtime.name, len(discovered))
        self._running = len(discovered)
        known = self._memory.handles
        suspects = {rid: handle for rid, handle in discovered.items() if known.get(rid) != handle}
        self._adopt(suspects)
        return suspects

    def _adopt(self, discovered: dict[str, str]) -> None:
        """A replica committed without a handle (the controller died mid-start) takes the one found."""
        if not discovered:
            return
        with self.database.session() as session:
            for replica_id, handle in repo.existing(session, discovered).items():
                if handle is not None:
                    continue
                replica = session.get(ReplicaRow, replica_id)
                if replica is not None and replica.status == ReplicaStatus.STARTING.value:
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

