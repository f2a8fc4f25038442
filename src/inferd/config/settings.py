"""Process settings.

Every value can come from an ``INFERD_<NAME>`` environment variable so that the API,
controller and gateway processes of a production install share one configuration
without a config file per process.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "inferd"


class Settings(BaseSettings):
    """All knobs of an inferd process; defaults give the embedded single-machine setup."""

    model_config = SettingsConfigDict(env_prefix="INFERD_", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str | None = None
    """SQLAlchemy URL; default ``sqlite:///<data_dir>/inferd.db``."""

    host: str = "127.0.0.1"
    port: int = 8443
    tls: bool = True
    """Serve the API over HTTPS with a local CA (pydo refuses bearer tokens over http)."""
    tls_hostnames: list[str] = Field(default_factory=list)
    """Extra names/IPs for the API certificate besides localhost, 127.0.0.1 and ::1."""

    secret_key: str | None = None
    """Key for secrets at rest; default: generated once into ``<data_dir>/secret.key``."""

    catalog_file: Path | None = None
    """TOML file describing regions, accelerator inventory and models (see docs/catalog.md)."""

    public_url: str | None = None
    """Base URL clients use to reach the API, for pagination links; default: from the request."""

    public_endpoint_template: str | None = None
    """Public endpoint URL of an instance (``{id}`` is replaced); default: the public gateway
    listener with the instance id as path prefix. The gateway also routes ``{id}-public.<domain>``."""
    private_endpoint_template: str | None = None
    """Private endpoint URL; its host name is what the instance's TLS certificate is issued for.
    Default ``https://{id}-private.inferd.localhost:<private port>``."""

    gateway_host: str = "127.0.0.1"
    gateway_public_port: int = 8080
    gateway_private_port: int = 8444
    gateway_refresh_interval: float = Field(default=0.5, gt=0)
    """Seconds between polls of the store's change feed (revocations apply within that)."""
    gateway_full_reload_interval: float = Field(default=60.0, gt=0)
    """Seconds between full reloads of the route table. In between, the gateway reloads only the
    instances the store's change feed reports (every ``gateway_refresh_interval``, or at once on
    a PostgreSQL NOTIFY): the full reload is a backstop, not how changes arrive."""
    gateway_max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    gateway_max_in_flight: int = Field(default=512, ge=1)
    gateway_max_in_flight_per_instance: int = Field(default=128, ge=1)
    gateway_routing: Literal["prefix", "least-outstanding"] = "prefix"
    """How a replica is chosen: prefix-cache affinity balanced against load, or load alone."""
    token_rpm: int | None = Field(default=None, ge=0)
    """Requests per minute per ``di_`` token (None or 0: unlimited); an instance may set its own."""
    token_tpm: int | None = Field(default=None, ge=0)
    """Tokens (prompt + completion) per minute per ``di_`` token (None or 0: unlimited)."""

    # -- listeners and gateway hardening (issue 8) --
    gateway_max_json_depth: int = Field(default=64, ge=2, le=512)
    """Deepest nesting of arrays/objects in a gateway request body (deeper: 400)."""
    gateway_cors_origins: str = "*"
    """Origins whose web pages may call the instance endpoints from a browser: ``*`` (any: the
    endpoints take only explicit bearer tokens, never cookies), a comma-separated list of exact
    origins (``https://app.example.com``), or empty for none."""
    gateway_metrics_urls: str = ""
    """Comma-separated ``/metrics`` URLs of the gateways, which the API reads for the console's
    per-instance charts; default: this installation's metrics listener."""
    metrics_host: str = "127.0.0.1"
    """Admin listener of the Prometheus metrics (never the public or private endpoints)."""
    metrics_port: int = 9464
    metrics_token: str | None = None
    """If set, ``/metrics`` wants ``Authorization: Bearer <token>``."""
    http_header_timeout: float = Field(default=10.0, gt=0)
    """Seconds a connection has for its request line and headers (and a TLS handshake), on
    every listener (API, public, private, metrics); then it is dropped."""
    http_body_timeout: float = Field(default=30.0, gt=0)
    """Seconds after the headers for the whole request body to arrive; then 408."""
    http_keep_alive_timeout: float = Field(default=5.0, gt=0)
    """Seconds an idle kept-alive connection stays open."""
    http_max_connections: int = Field(default=1000, ge=1)
    """Open connections per listener; more are closed as soon as they are accepted."""

    rate_limit_per_hour: int = Field(default=5000, ge=1)
    rate_limit_per_minute: int = Field(default=250, ge=1)
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024)
    # -- API hardening (issue 8) --
    trusted_proxies: list[str] | str = Field(default_factory=list)
    """Addresses or CIDRs of reverse proxies (comma-separated or a JSON list). Only when the
    socket peer is one of them are ``X-Forwarded-For`` / ``Forwarded`` /
    ``X-Forwarded-Proto`` believed; otherwise the client is the socket peer. Default: none."""
    team_max_instances: int = Field(default=20, ge=0)
    """Instances a team may have (those being deleted not counted); per team: ``set-quota``."""
    team_max_units: dict[str, int] | int | None = None
    """Accelerator units a team's desired specs may hold, per slug: a JSON map ``{slug: n}``
    (other slugs: no limit) or one number for every slug. Default: only capacity limits."""

    def trusted_proxy_networks(self) -> list[Any]:
        """``trusted_proxies`` parsed (``ipaddress`` networks); ValueError names a bad entry."""
        import ipaddress

        raw = self.trusted_proxies
        entries = [e.strip() for e in (raw.split(",") if isinstance(raw, str) else raw)]
        networks = []
        for entry in filter(None, entries):
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError as exc:
                raise ValueError(f"INFERD_TRUSTED_PROXIES: {entry!r} is not an address or CIDR") from exc
        return networks

    def model_post_init(self, context: Any, /) -> None:
        self.trusted_proxy_networks()
        units = self.team_max_units
        if any(n < 0 for n in (units.values() if isinstance(units, dict) else [units] if units is not None else [])):
            raise ValueError("INFERD_TEAM_MAX_UNITS: unit counts must be 0 or more")

    controller_interval: float = Field(default=0.5, gt=0)
    """Seconds between reconcile passes."""
    startup_timeout: float = Field(default=180, gt=0)
    """Seconds a llama.cpp replica may take to answer its health check before it counts as failed."""
    vllm_startup_timeout: float = Field(default=1200, gt=0)
    """The same for vLLM, which loads weights, compiles and captures CUDA graphs (minutes on a GPU)."""
    drain_seconds: float = Field(default=2, ge=0)
    """A replica leaves the route table at once but gets SIGTERM only after this grace period,
    so routers that refresh their table about every second never pick a dying replica."""
    stop_timeout: float = Field(default=60, gt=0)
    """After the drain period, the longest a replica being stopped may finish its requests in
    flight before SIGTERM anyway (SIGKILL follows 10 s later)."""
    runtime: Literal["local", "ray"] = "local"
    """Where replicas run: ``local`` processes on this machine, or actors on a Ray cluster."""
    ray_address: str | None = None
    """``HOST:PORT`` of the Ray head (``ray start --head``); needed with ``runtime=ray``."""
    ray_namespace: str | None = None
    """Ray namespace of this installation's actors; default ``inferd-<hash of the database URL>``."""
    lease_ttl: float = Field(default=5.0, gt=0.5)
    """Seconds a controller's leadership lasts without renewal (takeover delay after a crash)."""
    placing_timeout: float = Field(default=300, gt=0)
    """Seconds a replica may wait for a node with room before it counts as failed."""
    max_download_bytes: int | None = Field(default=None, ge=1)
    """Largest model download a replica may start (checked against the hub's listing first)."""
    stop_replicas_on_exit: bool | None = None
    """Stop every replica when the controller stops; default: yes for ``serve`` on the local
    runtime, no otherwise (``inferd controller``, Ray)."""
    # -- runtime hardening (issue 8) --
    replica_log_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    """Most a replica's engine log takes on disk: ``<replica>.log`` is rotated by copy-truncate
    into ``<replica>.log.1`` (one generation) at half of it, checked every reconcile pass. The Ray
    runtime passes it to each replica's actor. Logs are removed with their replica."""
    model_cache_dir: Path | None = None
    """Where downloaded models go; default ``<data_dir>/models``."""
    log_format: str = "text"
    """``text`` for terminals, ``json`` for one JSON object per line."""

    def resolved_gateway_metrics_urls(self) -> list[str]:
        listed = [u.strip() for u in self.gateway_metrics_urls.split(",") if u.strip()]
        host = "127.0.0.1" if self.metrics_host in ("0.0.0.0", "::", "") else self.metrics_host
        host = f"[{host}]" if ":" in host else host
        return listed or [f"http://{host}:{self.metrics_port}/metrics"]

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'inferd.db'}"

    def public_template(self) -> str:
        host = "127.0.0.1" if self.gateway_host in ("0.0.0.0", "::") else self.gateway_host
        return self.public_endpoint_template or f"http://{host}:{self.gateway_public_port}/{{id}}"

    def private_template(self) -> str:
        return self.private_endpoint_template or f"https://{{id}}-private.inferd.localhost:{self.gateway_private_port}"

    def resolved_ray_namespace(self) -> str:
        import hashlib

        digest = hashlib.sha256(self.resolved_database_url().encode()).hexdigest()[:12]
        return self.ray_namespace or f"inferd-{digest}"

    def resolved_model_cache_dir(self) -> Path:
        return self.model_cache_dir or self.data_dir / "models"

    def replica_log_dir(self) -> Path:
        return self.data_dir / "logs"

    def resolved_secret_key_file(self) -> Path:
        return self.data_dir / "secret.key"


def load_catalog_document(path: Path | None) -> dict[str, Any]:
    """Read the catalog TOML: the given file, or the packaged default for a CPU-only machine."""
    if path is None:
        text = resources.files("inferd.config").joinpath("default_catalog.toml").read_text()
    else:
        text = path.read_text()
    return tomllib.loads(text)
