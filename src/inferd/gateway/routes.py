"""The gateway's view of the world: which replicas serve which instance and model, and which
token hashes open which instance.

It is a snapshot, reloaded from the store every ``interval`` seconds (a revoked token or a new
replica takes effect within about a second). If the store cannot be read, the last snapshot
keeps serving: the data plane outlives a control-plane or database outage.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select

from inferd.domain.status import InstanceStatus
from inferd.store.db import Database
from inferd.store.tables import DeploymentRow, InstanceRow, InstanceTokenRow, ReplicaRow

log = logging.getLogger("inferd.gateway")


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


def load_snapshot(database: Database) -> Snapshot:
    with database.session() as session:
        instances = list(session.scalars(select(InstanceRow).where(InstanceRow.status != InstanceStatus.DELETING.value)))
        deployment_ids = {i.live_deployment_id or i.pending_deployment_id for i in instances} - {None}
        specs = {d.id: d.spec for d in session.scalars(select(DeploymentRow).where(DeploymentRow.id.in_(deployment_ids)))}
        ready: dict[str, dict[str, list[Upstream]]] = {}
        query = select(ReplicaRow).where(ReplicaRow.status == "ready", ReplicaRow.endpoint.is_not(None))
        for replica in session.scalars(query):
            ready.setdefault(replica.instance_id, {}).setdefault(replica.model_slug, []).append(
                Upstream(replica.id, replica.endpoint or "")
            )
        tokens = {h: i for h, i in session.execute(select(InstanceTokenRow.token_hash, InstanceTokenRow.instance_id))}
    routes = {}
    for instance in instances:
        spec = specs.get(instance.live_deployment_id or instance.pending_deployment_id or "")
        if spec is None:
            continue
        slugs = [d["model_slug"] for d in spec["model_deployments"]]
        serving = ready.get(instance.id, {})
        models = {slug: tuple(serving.get(slug, ())) for slug in slugs}
        for slug, upstreams in serving.items():  # a replaced model may still serve during an update
            models.setdefault(slug, tuple(upstreams))
        routes[instance.id] = InstanceRoutes(
            id=instance.id,
            public=bool(spec["enable_public_endpoint"]),
            models=models,
            ca_cert_pem=instance.ca_cert_pem,
            ca_key_sealed=instance.ca_key_sealed,
        )
    return Snapshot(instances=routes, tokens=tokens, loaded_at=time.time())


class RouteTable:
    """Holds the current snapshot; a background thread refreshes it."""

    def __init__(
        self,
        loader: Callable[[], Snapshot],
        interval: float = 0.5,
        on_change: Callable[[Snapshot], None] | None = None,
    ) -> None:
        self._loader = loader
        self._interval = interval
        self._on_change = on_change
        self.snapshot = Snapshot()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inferd-routes", daemon=True)
        self._failing = False

    def refresh(self) -> None:
        try:
            snapshot = self._loader()
        except Exception as exc:  # the store is away: keep serving what we know
            if not self._failing:
                log.warning("route refresh failed, serving the last known routes: %s", exc)
            self._failing = True
            return
        if self._failing:
            log.info("route refresh works again")
        self._failing = False
        if self._on_change is not None:
            self._on_change(snapshot)
        self.snapshot = snapshot

    def start(self) -> None:
        self.refresh()
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            self.refresh()

    def stop(self) -> None:
        self._stopping.set()
