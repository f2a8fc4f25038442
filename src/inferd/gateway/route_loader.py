"""Reading the gateway's routes from the store: which replicas serve which instance and model,
which token hashes open which instance, and each instance's own token limits.

:class:`RouteLoader` reads everything (:meth:`RouteLoader.load_all`, at start and as a backstop)
or a few instances (:meth:`RouteLoader.load_instances`, what the change feed reports). What
never changes is read once: a deployment (one version of a spec, a new spec is a new
deployment id) and an instance's CA are cached by id; a load reads only ids it has not seen.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select

from inferd.domain.status import InstanceStatus
from inferd.store.db import Database
from inferd.store.tables import DeploymentRow, InstanceRow, InstanceTokenRow, ReplicaRow

_IN_CHUNK = 500
"""Ids per ``IN (…)`` query (SQLite limits bound parameters)."""
@dataclass(frozen=True)
class Upstream:
    replica_id: str
    url: str


@dataclass(frozen=True)
class TokenRef:
    """Who a ``di_`` token hash is: its instance, and its own id (usage is labelled with it)."""

    instance_id: str
    token_id: str


@dataclass(frozen=True)
class InstanceRoutes:
    id: str
    public: bool
    models: dict[str, tuple[Upstream, ...]]
    """Deployed model slug -> ready replicas (maybe none right now)."""
    ca_cert_pem: str = ""
    ca_key_sealed: str = ""
    token_rpm: int | None = None
    """Requests per minute per ``di_`` token of this instance (None: no limit)."""
    token_tpm: int | None = None
    """Tokens per minute per ``di_`` token of this instance (None: no limit)."""


@dataclass(frozen=True)
class Snapshot:
    instances: dict[str, InstanceRoutes] = field(default_factory=dict)
    tokens: dict[str, TokenRef] = field(default_factory=dict)
    """SHA-256 of a di_ token -> its instance and id."""
    loaded_at: float = 0.0


@dataclass(frozen=True)
class InstanceLoad:
    """One instance as the store has it now: its routes (None: gone) and its token hashes."""

    routes: InstanceRoutes | None
    tokens: dict[str, TokenRef]


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

    def load_all(self) -> Snapshot:
        """Every instance (the first load, and the change feed's backstop)."""
        with self._database.session() as session:
            routes, tokens, deployments = self._read(session.connection(), None)
        with self._lock:  # forget what no instance refers to any more
            self._specs = {d: s for d, s in self._specs.items() if d in deployments}
            self._cas = {i: c for i, c in self._cas.items() if i in routes}
        return Snapshot(instances=routes, tokens=tokens, loaded_at=time.time())

    def load_instances(self, instance_ids: Collection[str]) -> dict[str, InstanceLoad]:
        """Those instances' routes and token hashes (an id that is gone maps to an empty load),
        read in one transaction, ``_IN_CHUNK`` ids per indexed query."""
        routes: dict[str, InstanceRoutes] = {}
        tokens: dict[str, dict[str, TokenRef]] = {i: {} for i in instance_ids}
        with self._database.session() as session:
            for chunk in _chunks(tokens):
                some_routes, some_tokens, _ = self._read(session.connection(), chunk)
                routes.update(some_routes)
                for token_hash, ref in some_tokens.items():
                    tokens[ref.instance_id][token_hash] = ref
        with self._lock:
            for instance_id in tokens.keys() - routes.keys():
                self._cas.pop(instance_id, None)
        return {i: InstanceLoad(routes.get(i), tokens[i] if i in routes else {}) for i in instance_ids}

    def load_instance(self, instance_id: str) -> InstanceLoad:
        """That instance's routes and token hashes: a few primary-key and indexed queries."""
        return self.load_instances([instance_id])[instance_id]

    def _read(
        self, connection: Connection, ids: list[str] | None
    ) -> tuple[dict[str, InstanceRoutes], dict[str, TokenRef], set[str]]:
        """Instances that serve (not deleting, with a spec) among ``ids`` (None: all of them),
        their token hashes, and the deployments they serve. Core rows, not ORM: a full load
        builds 10,000s of them."""
        query = select(
            InstanceRow.id, InstanceRow.live_deployment_id, InstanceRow.pending_deployment_id,
            InstanceRow.token_rpm, InstanceRow.token_tpm,
        ).where(InstanceRow.status != InstanceStatus.DELETING.value)
        replicas = select(ReplicaRow.id, ReplicaRow.instance_id, ReplicaRow.model_slug, ReplicaRow.endpoint).where(
            ReplicaRow.status == "ready", ReplicaRow.endpoint.is_not(None)
        )
        hashes = select(InstanceTokenRow.token_hash, InstanceTokenRow.instance_id, InstanceTokenRow.id)
        if ids is not None:
            query = query.where(InstanceRow.id.in_(ids))
            replicas = replicas.where(ReplicaRow.instance_id.in_(ids))
            hashes = hashes.where(InstanceTokenRow.instance_id.in_(ids))
        instances = connection.execute(query).all()
        deployments = {d for d in map(_deployment_of, instances) if d}
        specs = self._specs_for(connection, deployments)
        cas = self._cas_for(connection, {row.id for row in instances})
        ready: dict[str, dict[str, list[Upstream]]] = {}
        for replica_id, instance_id, slug, endpoint in connection.execute(replicas).all():
            ready.setdefault(instance_id, {}).setdefault(slug, []).append(Upstream(replica_id, endpoint or ""))
        routes = {}
        for row in instances:
            spec = specs.get(_deployment_of(row) or "")
            if spec is not None:
                routes[row.id] = _routes(row, spec, ready.get(row.id, {}), cas.get(row.id))
        tokens = {h: TokenRef(i, t) for h, i, t in connection.execute(hashes).all() if i in routes}
        return routes, tokens, deployments

    # -- caches of what never changes ---------------------------------------------------------
    def _specs_for(self, connection: Connection, deployment_ids: set[str]) -> dict[str, _Spec]:
        with self._lock:
            known = {d: self._specs[d] for d in deployment_ids if d in self._specs}
        missing = deployment_ids - known.keys()
        loaded: dict[str, _Spec] = {}
        for chunk in _chunks(missing):
            for row in connection.execute(select(DeploymentRow.id, DeploymentRow.spec).where(DeploymentRow.id.in_(chunk))):
                loaded[row.id] = _parse_spec(row.spec)
        if loaded:
            with self._lock:
                self._specs.update(loaded)
        return {**known, **loaded}

    def _cas_for(self, connection: Connection, instance_ids: set[str]) -> dict[str, tuple[str, str]]:
        with self._lock:
            known = {i: self._cas[i] for i in instance_ids if i in self._cas}
        missing = instance_ids - known.keys()
        loaded: dict[str, tuple[str, str]] = {}
        for chunk in _chunks(missing):
            for instance_id, cert, key in connection.execute(
                select(InstanceRow.id, InstanceRow.ca_cert_pem, InstanceRow.ca_key_sealed).where(
                    InstanceRow.id.in_(chunk)
                )
            ):
                loaded[instance_id] = (cert, key)
        if loaded:
            with self._lock:
                self._cas.update(loaded)
        return {**known, **loaded}


def _deployment_of(row: Any) -> str | None:
    """The deployment that serves: the live one, or the first one while nothing is live yet."""
    deployment_id: str | None = row.live_deployment_id or row.pending_deployment_id
    return deployment_id


def _routes(row: Any, spec: _Spec, serving: Mapping[str, list[Upstream]], ca: tuple[str, str] | None) -> InstanceRoutes:
    models = {slug: tuple(serving.get(slug, ())) for slug in spec.slugs}
    for slug, upstreams in serving.items():  # a replaced model may still serve during an update
        models.setdefault(slug, tuple(upstreams))
    cert, key = ca or ("", "")
    return InstanceRoutes(
        id=row.id, public=spec.public, models=models, ca_cert_pem=cert, ca_key_sealed=key,
        token_rpm=row.token_rpm, token_tpm=row.token_tpm,
    )


def load_snapshot(database: Database) -> Snapshot:
    """One snapshot, read with nothing cached (a :class:`RouteLoader` keeps its caches)."""
    return RouteLoader(database).load_all()
