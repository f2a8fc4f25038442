"""The gateway's view of the world: which replicas serve which instance and model, and which
token hashes open which instance.

It is a snapshot, reloaded from the store every ``interval`` seconds (a revoked token or a new
replica takes effect within about a second). If the store cannot be read, the last snapshot
keeps serving: the data plane outlives a control-plane or database outage.

Between two refreshes, a request that finds its instance unknown, its token unknown or no
ready replica for its model asks for a *targeted* reload of that one instance
(:meth:`RouteTable.reload`) before it is refused: the controller marks a replica ``ready`` in
the same transaction as the instance ``active``, so once the API says ``active`` the gateway
serves. Targeted reloads are coalesced and rate-limited per instance, and capped overall, so
a flood of requests for unknown ids cannot hammer the database.

What never changes is read once: a deployment (one version of a spec, a new spec is a new
deployment id) and an instance's CA are cached by id; a refresh reads only ids it has not seen.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from inferd.domain.status import InstanceStatus
from inferd.gateway import metrics
from inferd.store.db import Database
from inferd.store.tables import DeploymentRow, InstanceRow, InstanceTokenRow, ReplicaRow

log = logging.getLogger("inferd.gateway")

_IN_CHUNK = 500
"""Ids per ``IN (…)`` query (SQLite limits bound parameters)."""


@dataclass(frozen=True)
class Upstream:
    replica_id: str
    url: str


@dataclass(frozen=True)
class InstanceRoutes:
    id: str
    public: bool
    models: dict[str, tuple[Upstream, ...]]
    """Deployed model slug -> ready replicas (maybe none right now)."""
    ca_cert_pem: str = ""
    ca_key_sealed: str = ""


@dataclass(frozen=True)
class Snapshot:
    instances: dict[str, InstanceRoutes] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    """SHA-256 of a di_ token -> its instance id."""
    loaded_at: float = 0.0


@dataclass(frozen=True)
class InstanceLoad:
    """One instance as the store has it now: its routes (None: gone) and its token hashes."""

    routes: InstanceRoutes | None
    tokens: dict[str, str]


@dataclass(frozen=True)
class _Spec:
    """What the gateway needs of a deployment's spec (the rest, workload_config included, is
    not kept)."""

    public: bool
    slugs: tuple[str, ...]


def _parse_spec(spec: Mapping[str, Any]) -> _Spec:
    return _Spec(
        public=bool(spec["enable_public_endpoint"]),
        slugs=tuple(d["model_slug"] for d in spec["model_deployments"]),
    )


def _chunks(ids: Iterable[str]) -> Iterable[list[str]]:
    items = sorted(ids)
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]


class RouteLoader:
    """Reads route snapshots from the store and re-reads nothing immutable it has seen.

    Thread-safe: the refresh thread and targeted reloads (worker threads) share the caches.
    """

    def __init__(self, database: Database) -> None:
        self._database = database
        self._specs: dict[str, _Spec] = {}
        """Deployment id -> parsed spec. Deployments are written once: a new spec is a new id."""
        self._cas: dict[str, tuple[str, str]] = {}
        """Instance id -> (CA certificate, sealed CA key), fixed when the instance is created."""
        self._lock = threading.Lock()

    # -- the whole table ----------------------------------------------------------------------
    def load_all(self) -> Snapshot:
        with self._database.session() as session:
            instances = session.execute(
                select(InstanceRow.id, InstanceRow.live_deployment_id, InstanceRow.pending_deployment_id).where(
                    InstanceRow.status != InstanceStatus.DELETING.value
                )
            ).all()
            deployment_of = {row.id: row.live_deployment_id or row.pending_deployment_id for row in instances}
            specs = self._specs_for(session, {d for d in deployment_of.values() if d})
            cas = self._cas_for(session, set(deployment_of))
            ready: dict[str, dict[str, list[Upstream]]] = {}
            query = select(ReplicaRow.id, ReplicaRow.instance_id, ReplicaRow.model_slug, ReplicaRow.endpoint).where(
                ReplicaRow.status == "ready", ReplicaRow.endpoint.is_not(None)
            )
            for replica in session.execute(query):
                ready.setdefault(replica.instance_id, {}).setdefault(replica.model_slug, []).append(
                    Upstream(replica.id, replica.endpoint or "")
                )
            hashes = select(InstanceTokenRow.token_hash, InstanceTokenRow.instance_id)
            tokens = {h: i for h, i in session.execute(hashes)}
        with self._lock:  # forget what no instance refers to any more
            self._specs = {d: s for d, s in self._specs.items() if d in specs}
            self._cas = {i: c for i, c in self._cas.items() if i in deployment_of}
        routes = {}
        for instance_id, deployment_id in deployment_of.items():
            spec = specs.get(deployment_id or "")
            if spec is not None:
                routes[instance_id] = _routes(instance_id, spec, ready.get(instance_id, {}), cas.get(instance_id))
        return Snapshot(instances=routes, tokens=tokens, loaded_at=time.time())

    # -- one instance -------------------------------------------------------------------------
    def load_instance(self, instance_id: str) -> InstanceLoad:
        """That instance's routes and token hashes: a few primary-key and indexed queries."""
        with self._database.session() as session:
            row = session.execute(
                select(InstanceRow.status, InstanceRow.live_deployment_id, InstanceRow.pending_deployment_id).where(
                    InstanceRow.id == instance_id
                )
            ).first()
            if row is None or row.status == InstanceStatus.DELETING.value:
                return InstanceLoad(None, {})
            deployment_id = row.live_deployment_id or row.pending_deployment_id
            spec = self._specs_for(session, {deployment_id}).get(deployment_id) if deployment_id else None
            if spec is None:
                return InstanceLoad(None, {})
            ca = self._cas_for(session, {instance_id}).get(instance_id)
            ready: dict[str, list[Upstream]] = {}
            query = select(ReplicaRow.id, ReplicaRow.model_slug, ReplicaRow.endpoint).where(
                ReplicaRow.instance_id == instance_id, ReplicaRow.status == "ready", ReplicaRow.endpoint.is_not(None)
            )
            for replica in session.execute(query):
                ready.setdefault(replica.model_slug, []).append(Upstream(replica.id, replica.endpoint or ""))
            tokens = {
                h: instance_id
                for (h,) in session.execute(
                    select(InstanceTokenRow.token_hash).where(InstanceTokenRow.instance_id == instance_id)
                )
            }
        return InstanceLoad(_routes(instance_id, spec, ready, ca), tokens)

    # -- caches of what never changes ---------------------------------------------------------
    def _specs_for(self, session: Any, deployment_ids: set[str]) -> dict[str, _Spec]:
        with self._lock:
            known = {d: self._specs[d] for d in deployment_ids if d in self._specs}
        missing = deployment_ids - known.keys()
        loaded = {}
        for chunk in _chunks(missing):
            for deployment_id, spec in session.execute(
                select(DeploymentRow.id, DeploymentRow.spec).where(DeploymentRow.id.in_(chunk))
            ):
                loaded[deployment_id] = _parse_spec(spec)
        if loaded:
            with self._lock:
                self._specs.update(loaded)
        return {**known, **loaded}

    def _cas_for(self, session: Any, instance_ids: set[str]) -> dict[str, tuple[str, str]]:
        with self._lock:
            known = {i: self._cas[i] for i in instance_ids if i in self._cas}
        missing = instance_ids - known.keys()
        loaded = {}
        for chunk in _chunks(missing):
            for instance_id, cert, key in session.execute(
                select(InstanceRow.id, InstanceRow.ca_cert_pem, InstanceRow.ca_key_sealed).where(
                    InstanceRow.id.in_(chunk)
                )
            ):
                loaded[instance_id] = (cert, key)
        if loaded:
            with self._lock:
                self._cas.update(loaded)
        return {**known, **loaded}


def _routes(
    instance_id: str, spec: _Spec, serving: Mapping[str, list[Upstream]], ca: tuple[str, str] | None
) -> InstanceRoutes:
    models = {slug: tuple(serving.get(slug, ())) for slug in spec.slugs}
    for slug, upstreams in serving.items():  # a replaced model may still serve during an update
        models.setdefault(slug, tuple(upstreams))
    cert, key = ca or ("", "")
    return InstanceRoutes(id=instance_id, public=spec.public, models=models, ca_cert_pem=cert, ca_key_sealed=key)


def load_snapshot(database: Database) -> Snapshot:
    """One snapshot, read with nothing cached (a :class:`RouteLoader` keeps its caches)."""
    return RouteLoader(database).load_all()


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
    """Holds the current snapshot; a background thread refreshes it, and :meth:`reload` reads
    one instance again on demand (from the event loop that serves the gateway)."""

    def __init__(
        self,
        loader: Callable[[], Snapshot],
        interval: float = 0.5,
        on_change: Callable[[Snapshot], None] | None = None,
        *,
        instance_loader: Callable[[str], InstanceLoad] | None = None,
        reload_interval: float = 0.2,
        reloads_per_second: float = 20.0,
        max_concurrent_reloads: int = 4,
    ) -> None:
        self._loader = loader
        self._interval = interval
        self._on_change = on_change
        self._instance_loader = instance_loader
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
        """Instance id -> when the targeted load now in ``snapshot`` began reading: a full
        refresh that began reading earlier keeps that instance's newer entry."""
        self._applied_refresh_began = float("-inf")
        """When the full refresh now in ``snapshot`` began reading."""
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inferd-routes", daemon=True)
        self._failing = False
        self._reload_failing = False

    # -- full refreshes (background thread) ---------------------------------------------------
    def refresh(self) -> None:
        started = time.monotonic()
        try:
            snapshot = self._loader()
        except Exception as exc:  # the store is away: keep serving what we know
            if not self._failing:
                log.warning("route refresh failed, serving the last known routes: %s", exc)
            self._failing = True
            metrics.ROUTE_REFRESHES.labels(result="error").inc()
            return
        if self._failing:
            log.info("route refresh works again")
        self._failing = False
        with self._lock:
            current = self.snapshot
            for instance_id, loaded_at in list(self._fresh.items()):
                if loaded_at > started:  # read after this refresh began: newer than what it saw
                    snapshot = _with_instance(snapshot, instance_id, current.instances.get(instance_id),
                                              {h: i for h, i in current.tokens.items() if i == instance_id})
                else:
                    del self._fresh[instance_id]
            if self._on_change is not None:
                self._on_change(snapshot)
            self.snapshot = snapshot
            self._applied_refresh_began = started
        metrics.ROUTE_REFRESHES.labels(result="ok").inc()

    def start(self) -> None:
        self.refresh()
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            self.refresh()

    def stop(self) -> None:
        self._stopping.set()

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
        with self._lock:
            if began < self._applied_refresh_began:  # a full refresh read after us: it is newer
                return
            snapshot = _with_instance(self.snapshot, instance_id, loaded.routes, loaded.tokens)
            if self._on_change is not None and loaded.routes is not None:
                self._on_change(snapshot)
            self.snapshot = snapshot
            self._fresh[instance_id] = began

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


def _with_instance(
    snapshot: Snapshot, instance_id: str, routes: InstanceRoutes | None, tokens: Mapping[str, str]
) -> Snapshot:
    """``snapshot`` with one instance's routes and token hashes replaced (routes None: gone)."""
    instances = dict(snapshot.instances)
    if routes is None:
        instances.pop(instance_id, None)
    else:
        instances[instance_id] = routes
    merged = {h: i for h, i in snapshot.tokens.items() if i != instance_id}
    merged.update(tokens)
    return Snapshot(instances=instances, tokens=merged, loaded_at=snapshot.loaded_at)
