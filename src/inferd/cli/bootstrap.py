"""Turning settings into a ready process: data dir, secrets key, migrated database, catalog."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

from inferd.api.ratelimit import RateLimiter
from inferd.api.state import AppState
from inferd.cli.servers import ConnectionLimits, Listener
from inferd.config import Settings, load_catalog_document
from inferd.controller.lease import LeaderLease
from inferd.controller.loop import ControllerLoop
from inferd.controller.observe import Timeouts
from inferd.controller.reconciler import Reconciler
from inferd.domain.catalog import Catalog
from inferd.domain.scopes import FULL_ACCESS
from inferd.domain.tokens import hash_token, new_api_token
from inferd.gateway.metrics import create_metrics_app
from inferd.gateway.proxy import Gateway, Limits, Policy
from inferd.gateway.routes import RouteTable, route_table
from inferd.gateway.tls import InstanceCertificates
from inferd.pki import SecretBox, TLSFiles, load_or_create_key_file
from inferd.runtime.base import Runtime
from inferd.runtime.local import LocalRuntime
from inferd.store import teams
from inferd.store.db import Database
from inferd.store.migrate import upgrade
from inferd.store.tables import InstanceRow

DEFAULT_TEAM = "default"


def prepare_data_dir(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)


def secret_box(settings: Settings) -> SecretBox:
    key = settings.secret_key or load_or_create_key_file(settings.resolved_secret_key_file())
    return SecretBox.from_key_string(key)


def build_state(settings: Settings, *, migrate: bool = True) -> AppState:
    prepare_data_dir(settings)
    url = settings.resolved_database_url()
    if migrate:
        upgrade(url)
    return AppState(
        settings=settings,
        database=Database(url),
        catalog=Catalog.from_document(load_catalog_document(settings.catalog_file)),
        secrets=secret_box(settings),
        limiter=RateLimiter(settings.rate_limit_per_hour, settings.rate_limit_per_minute),
    )


def runtime_owner(settings: Settings) -> str:
    """Identifies this installation's processes on this machine (several may share it)."""
    key = f"{socket.gethostname()}|{settings.resolved_database_url()}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def build_runtime(settings: Settings) -> Runtime:
    """The runtime the settings name; Ray is imported only when chosen."""
    if settings.runtime == "ray":
        if not settings.ray_address:
            raise SystemExit("INFERD_RUNTIME=ray needs INFERD_RAY_ADDRESS (HOST:PORT of the Ray head)")
        from inferd.runtime.ray import RayRuntime

        return RayRuntime(settings.ray_address, settings.resolved_ray_namespace(), log_max_bytes=settings.replica_log_max_bytes)
    return LocalRuntime(
        runtime_owner(settings), cache_dir=settings.resolved_model_cache_dir(), log_dir=settings.replica_log_dir(),
        log_max_bytes=settings.replica_log_max_bytes,
    )


def build_controller(state: AppState, *, stop_replicas_on_exit: bool = False) -> ControllerLoop:
    settings = state.settings
    secrets = state.secrets

    def hf_token_of(instance: InstanceRow) -> str | None:
        token = secrets.open_json(instance.access_tokens_sealed).get("hugging_face_token")
        return str(token) if token else None

    reconciler = Reconciler(
        database=state.database,
        catalog=state.catalog,
        runtime=build_runtime(settings),
        timeouts=Timeouts(
            startup=settings.startup_timeout, placing=settings.placing_timeout,
            drain=settings.drain_seconds, stop=settings.stop_timeout,
            startup_by_engine={"vllm": settings.vllm_startup_timeout},
        ),
        hf_token_of=hf_token_of,
        max_download_bytes=settings.max_download_bytes,
    )
    lease = LeaderLease(state.database, ttl_seconds=settings.lease_ttl)
    return ControllerLoop(reconciler, settings.controller_interval, lease, stop_replicas_on_exit=stop_replicas_on_exit)


def gateway_listeners(state: AppState, tls_files: TLSFiles) -> tuple[RouteTable, list[Listener]]:
    """The public (http) and private (https, a certificate per instance by SNI) listeners, and
    the admin listener of the Prometheus metrics."""
    settings = state.settings
    certificates = InstanceCertificates(
        state.secrets, settings.private_template(), tls_files.cert, tls_files.key
    )
    routes = route_table(
        state.database, settings.gateway_refresh_interval, certificates.prepare,
        full_reload_interval=settings.gateway_full_reload_interval,
    )
    limits = Limits(
        max_body_bytes=settings.gateway_max_body_bytes,
        max_in_flight=settings.gateway_max_in_flight,
        max_in_flight_per_instance=settings.gateway_max_in_flight_per_instance,
        max_json_depth=settings.gateway_max_json_depth,
        body_timeout=settings.http_body_timeout,
    )
    policy = Policy(
        routing=settings.gateway_routing, token_rpm=settings.token_rpm, token_tpm=settings.token_tpm,
        embedders=state.catalog.embedding_slugs(),
        cors_origins=tuple(settings.gateway_cors_origins.split(",")),
    )
    gateway = Gateway(routes, limits, policy)
    connections = ConnectionLimits.from_settings(settings)
    public = Listener(
        gateway.endpoint("public"), settings.gateway_host, settings.gateway_public_port,
        limits=connections, name="public", reads_body_itself=True,
    )
    private = Listener(
        gateway.endpoint("private"),
        settings.gateway_host,
        settings.gateway_private_port,
        ssl_context=lambda: certificates.default,
        certfile=str(tls_files.cert),
        keyfile=str(tls_files.key),
        limits=connections,
        name="private",
        reads_body_itself=True,
    )
    metrics = Listener(
        create_metrics_app(settings.metrics_token), settings.metrics_host, settings.metrics_port,
        limits=connections, essential=False, name="metrics",
    )
    return routes, [public, private, metrics]


def write_private_file(path: Path, text: str) -> None:
    """Write ``text`` readable by the owner only, atomically."""
    temporary = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


def ensure_default_team(state: AppState) -> str | None:
    """On a fresh install, create the default team and a full-access token; return its value.

    The value is also kept in ``<data_dir>/admin-token`` (mode 0600) so that the machine's
    owner can find it again; the database holds only its hash.
    """
    with state.database.session() as session:
        if teams.list_teams(session):
            return None
        team = teams.create_team(session, DEFAULT_TEAM)
        value = new_api_token()
        teams.add_api_token(session, team, name="admin", token_hash=hash_token(value), scopes=[FULL_ACCESS])
    write_private_file(state.settings.data_dir / "admin-token", value + "\n")
    return value
