"""The gateway's view of the world: which replicas serve which instance and model, and which
token hashes open which instance.

It is a snapshot, loaded in full once at start and then kept current by the store's change
feed (:mod:`inferd.store.changes`): every ``interval`` seconds, or at once when PostgreSQL
NOTIFY says so, the table asks which instances changed and reads only those (a few indexed
queries) instead of every instance, replica and token. A revoked token or a new replica takes
effect within about ``interval``; a full reload now and then is the backstop. If the store
cannot be read, the last snapshot keeps serving: the data plane outlives a control-plane or
database outage, and the first cycle that works again reloads everything.

Between two cycles, a request that finds its instance unknown, its token unknown or no ready
replica for its model asks for a *targeted* reload of that one instance
(:meth:`RouteTable.reload`) before it is refused: the controller marks a replica ``ready`` in
the same transaction as the instance ``active``, so once the API says ``active`` the gateway
serves. Targeted reloads are coalesced and rate-limited per instance, and capped overall, so
a flood of requests for unknown ids cannot hammer the database.

Reading the store is :mod:`inferd.gateway.route_loader`'s job; its types are re-exported here.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from inferd.gateway import metrics
from inferd.gateway.route_loader import InstanceLoad, InstanceRoutes, RouteLoader, Snapshot, TokenRef, Upstream, load_snapshot
from inferd.store.changes import ChangeFeed
from inferd.store.db import Database

__all__ = [
    "InstanceLoad", "InstanceRoutes", "RouteLoader", "RouteTable", "Snapshot", "TokenRef", "Upstream",
    "load_snapshot", "route_table",
]

log = logging.getLogger("inferd.gateway")

_LISTENING_POLL = 5.0
"""Seconds between polls while PostgreSQL NOTIFY wakes the table (a listener cut off without an
error, e.g. by a silent network partition, delays changes by this much until TCP keepalives
break its connection)."""
_MIN_CYCLE = 0.05
"""Seconds between two cycles of the background thread at least, however often NOTIFY wakes it."""


@dataclass
class _InstanceReloads:
    """Targeted reloads of one instance (event-loop state)."""

    last_started: float = float("-inf")
    """When the latest load began reading (monotonic)."""
    finished_started: float = float("-inf")
    """When the latest *finished* load began reading."""
    pending: asyncio.Future[Snapshot] | None = None
    pending_starts: float = 0.0
    """When the pending load begins reading (or began): at or after this, its result is news."""


class RouteTable:
    """Holds the current snapshot; a background thread keeps it current, and :meth:`reload`
    reads one instance again on demand (from the event loop that serves the gateway).

    With a change feed (``changes`` and ``instances_loader``), each cycle reloads only the
    instances the feed reports, and everything only when the feed says so (at start, as a
    backstop, after losing track). Without one, each cycle reloads everything.
    """

    def __init__(
        self,
        loader: Callable[[], Snapshot],
        interval: float = 0.5,
        on_change: Callable[[Snapshot], None] | None = None,
        *,
        instance_loader: Callable[[str], InstanceLoad] | None = None,
        changes: ChangeFeed | None = None,
        instances_loader: Callable[[Collection[str]], Mapping[str, InstanceLoad]] | None = None,
        reload_interval: float = 0.2,
        reloads_per_second: float = 20.0,
        max_concurrent_reloads: int = 4,
    ) -> None:
        if (changes is None) != (instances_loader is None):
            raise ValueError("a change feed needs an instances_loader, and the other way round")
        self._loader = loader
        self._interval = interval
        self._on_change = on_change
        self._instance_loader = instance_loader
        self._changes = changes
        self._instances_loader = instances_loader
        self._reload_interval = reload_interval
        """At most one targeted load of an instance per this many seconds."""
        self._rate = reloads_per_second
        """Targeted loads of all instances together, per second (a token bucket of that size)."""
        self._bucket = reloads_per_second
        self._bucket_at = time.monotonic()
        self._max_concurrent = max_concurrent_reloads
        self._semaphore: asyncio.Semaphore | None = None
        self._reloads: dict[str, _InstanceReloads] = {}
        self.snapshot = Snapshot()
        self._lock = threading.Lock()
        """Serialises swaps of ``snapshot`` (refresh thread, reload workers) and ``on_change``."""
        self._fresh: dict[str, float] = {}
        """Instance id -> when the load of it now in ``snapshot`` began reading (targeted or
        from the change feed): a full refresh that began reading earlier keeps that entry, and
        a load that began earlier does not replace it."""
        self._applied_refresh_began = float("-inf")
        """When the full refresh now in ``snapshot`` began reading."""
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inferd-routes", daemon=True)
        self._failing = False
        self._reload_failing = False

    # -- the background cycle -----------------------------------------------------------------
    def refresh(self) -> None:
        """One cycle: reload what the change feed reports (everything when it says so, or when
        there is no feed). A failure leaves the snapshot as it was."""
        started = time.monotonic()
        try:
            changed = self._changes.poll() if self._changes is not None else None
            if changed is None:
                self._refresh_all(started)
            elif changed:
                self._refresh_some(changed, started)
        except Exception as exc:  # the store is away: keep serving what we know
            if self._changes is not None:
                self._changes.reset()  # what it reported may not be applied: start over
            if not self._failing:
                log.warning("route refresh failed, serving the last known routes: %s", exc)
            self._failing = True
            metrics.ROUTE_REFRESHES.labels(result="error").inc()
            return
        metrics.ROUTE_REFRESHES.labels(result="ok").inc()
        if self._failing:
            log.info("route refresh works again")
        self._failing = False

    def _refresh_all(self, started: float) -> None:
        try:
            snapshot = self._loader()
        except Exception:
            metrics.ROUTE_FULL_RELOADS.labels(result="error").inc()
            raise
        with self._lock:
            kept = {i: t for i, t in self._fresh.items() if t > started}  # read after this refresh began
            self._fresh = kept
            snapshot = _with_instances(snapshot, _loads_of(self.snapshot, kept))
            if self._on_change is not None:
                self._on_change(snapshot)
            self.snapshot = snapshot
            self._applied_refresh_began = started
        metrics.ROUTE_FULL_RELOADS.labels(result="ok").inc()

    def _refresh_some(self, changed: set[str], started: float) -> None:
        assert self._instances_loader is not None
        loads = self._instances_loader(changed)
        self._merge(loads, started)
        metrics.ROUTE_FEED_INSTANCES.inc(len(loads))

    def start(self) -> None:
        self.refresh()
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                if self._changes is not None:
                    self._changes.wait(self._cycle_timeout())  # early when NOTIFY says something changed
                else:
                    self._stopping.wait(self._interval)
                if self._stopping.is_set():
                    break
                cycle = time.monotonic()
                self.refresh()
                if self._changes is not None and self._changes.listening:
                    # a burst of notifications costs a cycle per _MIN_CYCLE, not one per change
                    self._stopping.wait(max(0.0, _MIN_CYCLE - (time.monotonic() - cycle)))
        finally:
            if self._changes is not None:
                self._changes.close()

    def _cycle_timeout(self) -> float:
        """Seconds to the next cycle: ``interval``; with NOTIFY working, which wakes the table as
        soon as something changes, the poll is only a safety net and runs less often."""
        if self._changes is not None and self._changes.listening:
            return max(self._interval, _LISTENING_POLL)
        return self._interval

    def stop(self) -> None:
        self._stopping.set()
        if self._changes is not None:
            self._changes.close()

    # -- targeted reloads (event loop) --------------------------------------------------------
    async def reload(self, instance_id: str, since: float) -> Snapshot:
        """The snapshot once a load of ``instance_id`` that began reading at or after ``since``
        (``time.monotonic()``, e.g. when the request arrived) has been applied.

        Concurrent callers share one load; loads of one instance are at least
        ``reload_interval`` apart (a caller may wait that long), and when the overall budget is
        spent the current snapshot is returned at once.
        """
        if self._instance_loader is None:
            return self.snapshot
        while True:
            state = self._reloads.get(instance_id)
            if state is not None and state.finished_started >= since:
                return self.snapshot
            if state is not None and state.pending is not None:
                if state.pending_starts >= since:
                    return await asyncio.shield(state.pending)
                await asyncio.shield(state.pending)  # began before the caller asked: one more
                continue
            if not self._take_budget():
                metrics.ROUTE_RELOADS.labels(result="refused").inc()
                return self.snapshot
            if state is None:
                state = self._reloads[instance_id] = _InstanceReloads()
                self._forget_idle()
            state.pending = asyncio.get_running_loop().create_future()
            state.pending_starts = max(time.monotonic(), state.last_started + self._reload_interval)
            asyncio.get_running_loop().create_task(self._load(instance_id, state, state.pending))
            return await asyncio.shield(state.pending)

    async def _load(self, instance_id: str, state: _InstanceReloads, done: asyncio.Future[Snapshot]) -> None:
        assert self._instance_loader is not None
        try:
            delay = state.pending_starts - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if self._semaphore is None:
                self._semaphore = asyncio.Semaphore(self._max_concurrent)
            async with self._semaphore:
                began = time.monotonic()
                state.last_started = began
                loaded = await asyncio.to_thread(self._instance_loader, instance_id)
                await asyncio.to_thread(self._apply, instance_id, loaded, began)
            state.finished_started = began
            self._reload_failing = False
            metrics.ROUTE_RELOADS.labels(result="ok").inc()
        except Exception as exc:  # the store is away: answer from what we know
            if not self._reload_failing:  # once per outage, not once per request
                log.warning("reloading the routes of instance %s failed: %s", instance_id, exc)
            self._reload_failing = True
            metrics.ROUTE_RELOADS.labels(result="error").inc()
        finally:
            state.pending = None
            if not done.done():
                done.set_result(self.snapshot)

    def _apply(self, instance_id: str, loaded: InstanceLoad, began: float) -> None:
        self._merge({instance_id: loaded}, began)

    def _merge(self, loads: Mapping[str, InstanceLoad], began: float) -> None:
        """Put loads that began reading at ``began`` into the snapshot, unless something that
        began reading later is there already (a full refresh, or a load of that instance)."""
        with self._lock:
            if began < self._applied_refresh_began:  # a full refresh read after us: it is newer
                return
            newer = {i: load for i, load in loads.items() if self._fresh.get(i, began) <= began}
            if not newer:
                return
            snapshot = _with_instances(self.snapshot, newer)
            if self._on_change is not None and any(load.routes is not None for load in newer.values()):
                self._on_change(snapshot)
            self.snapshot = snapshot
            self._fresh.update(dict.fromkeys(newer, began))

    def _take_budget(self) -> bool:
        now = time.monotonic()
        self._bucket = min(self._rate, self._bucket + (now - self._bucket_at) * self._rate)
        self._bucket_at = now
        if self._bucket < 1:
            return False
        self._bucket -= 1
        return True

    def _forget_idle(self) -> None:
        """Drop per-instance state that no longer limits anything (ids seen once)."""
        if len(self._reloads) < 1024:
            return
        horizon = time.monotonic() - self._reload_interval
        for instance_id, state in list(self._reloads.items()):
            if state.pending is None and state.last_started < horizon:
                del self._reloads[instance_id]


def _loads_of(snapshot: Snapshot, instance_ids: Collection[str]) -> dict[str, InstanceLoad]:
    """Those instances as ``snapshot`` has them."""
    tokens: dict[str, dict[str, TokenRef]] = {i: {} for i in instance_ids}
    if instance_ids:
        for token_hash, ref in snapshot.tokens.items():
            if ref.instance_id in tokens:
                tokens[ref.instance_id][token_hash] = ref
    return {i: InstanceLoad(snapshot.instances.get(i), tokens[i]) for i in instance_ids}


def _with_instances(snapshot: Snapshot, loads: Mapping[str, InstanceLoad]) -> Snapshot:
    """``snapshot`` with those instances' routes and token hashes replaced (routes None: gone)."""
    if not loads:
        return snapshot
    instances = dict(snapshot.instances)
    tokens = {h: ref for h, ref in snapshot.tokens.items() if ref.instance_id not in loads}
    for instance_id, load in loads.items():
        if load.routes is None:
            instances.pop(instance_id, None)
        else:
            instances[instance_id] = load.routes
        tokens.update(load.tokens)
    return Snapshot(instances=instances, tokens=tokens, loaded_at=snapshot.loaded_at)


def route_table(
    database: Database,
    interval: float = 0.5,
    on_change: Callable[[Snapshot], None] | None = None,
    *,
    full_reload_interval: float = 60.0,
    listen: bool = True,
) -> RouteTable:
    """The route table a gateway runs: one full load, then the store's change feed (polled
    every ``interval`` seconds, woken by NOTIFY on PostgreSQL), a full reload as a backstop."""
    loader = RouteLoader(database)
    return RouteTable(
        loader.load_all, interval, on_change, instance_loader=loader.load_instance,
        changes=ChangeFeed(database, listen=listen, full_reload_interval=full_reload_interval),
        instances_loader=loader.load_instances,
    )
