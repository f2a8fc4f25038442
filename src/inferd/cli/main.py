"""``inferd``: run the server and administer teams and tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from inferd import __version__
from inferd.cli.admin import admin
from inferd.cli.common import DatabaseUrl, DataDir, console
from inferd.cli.common import fail as _fail
from inferd.cli.common import settings_from as _settings
from inferd.config import Settings

app = typer.Typer(help="inferd: self-hosted DigitalOcean Dedicated Inference.", no_args_is_help=True)
app.add_typer(admin, name="admin")


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)


@app.command()
def migrate(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Upgrade the database schema to the latest version."""
    from inferd.store.migrate import upgrade

    settings = _settings(data_dir, database_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    upgrade(settings.resolved_database_url())
    console.print("database is up to date")


@app.command()
def serve(
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    host: Annotated[str | None, typer.Option(help="Listen address [env INFERD_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port [env INFERD_PORT].")] = None,
    catalog: Annotated[Path | None, typer.Option(help="Catalog TOML [env INFERD_CATALOG_FILE].")] = None,
    tls: Annotated[bool | None, typer.Option("--tls/--no-tls", help="Serve HTTPS with a local CA.")] = None,
    controller: Annotated[bool, typer.Option("--controller/--no-controller", help="Run the reconciler too.")] = True,
    gateway: Annotated[bool, typer.Option("--gateway/--no-gateway", help="Run the data-plane gateway too.")] = True,
    gateway_port: Annotated[int | None, typer.Option(help="Public gateway port [env INFERD_GATEWAY_PUBLIC_PORT].")] = None,
    private_port: Annotated[int | None, typer.Option(help="Private gateway port [env INFERD_GATEWAY_PRIVATE_PORT].")] = None,
    stop_replicas_on_exit: Annotated[bool | None, typer.Option(
        "--stop-replicas-on-exit/--keep-replicas-on-exit",
        help="Stop every model server when this process stops [default: yes on the local runtime, "
             "no on Ray; env INFERD_STOP_REPLICAS_ON_EXIT].")] = None,
) -> None:
    """Run inferd in one process: API, controller and gateway (embedded default: SQLite)."""
    from inferd.api.app import create_app
    from inferd.cli.bootstrap import (
        build_controller,
        build_state,
        ensure_default_team,
        gateway_listeners,
    )
    from inferd.cli.servers import Listener, serve_all
    from inferd.config.logging import configure_logging

    settings = _settings(
        data_dir, database_url, host=host, port=port, catalog_file=catalog, tls=tls,
        gateway_public_port=gateway_port, gateway_private_port=private_port,
    )
    configure_logging(settings.log_format)
    state = build_state(settings)
    first_token = ensure_default_team(state)
    tls_files = _local_tls(settings)
    scheme = "https" if settings.tls else "http"
    url = f"{scheme}://{_shown(settings.host)}:{settings.port}"
    _banner(settings, url, first_token, gateway)
    api = create_app(state)
    if controller:
        stop = _first(stop_replicas_on_exit, settings.stop_replicas_on_exit, settings.runtime == "local")
        api.router.lifespan_context = _with_controller(build_controller(state, stop_replicas_on_exit=stop))
    listeners = [Listener(api, settings.host, settings.port, certfile=str(tls_files.cert) if settings.tls else None,
                          keyfile=str(tls_files.key) if settings.tls else None)]
    if gateway:
        routes, gateway_side = gateway_listeners(state, tls_files)
        routes.start()
        listeners += gateway_side
    serve_all(listeners)


@app.command("gateway")
def gateway_command(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Run only the data-plane gateway (production: a separate process; shares the secret key)."""
    from inferd.cli.bootstrap import build_state, gateway_listeners
    from inferd.cli.servers import serve_all
    from inferd.config.logging import configure_logging

    settings = _settings(data_dir, database_url)
    configure_logging(settings.log_format)
    state = build_state(settings, migrate=False)
    routes, listeners = gateway_listeners(state, _local_tls(settings))
    routes.start()
    console.print(
        f"gateway: public http://{_shown(settings.gateway_host)}:{settings.gateway_public_port}, "
        f"private https://…:{settings.gateway_private_port}"
    )
    serve_all(listeners)


def _shown(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::") else host


def _local_tls(settings: Settings) -> Any:
    from inferd.pki import ensure_local_tls

    return ensure_local_tls(settings.data_dir / "tls", hostnames=settings.tls_hostnames + [settings.host])


def _with_controller(loop: Any) -> Any:
    """Run the controller for the life of the server: on SIGTERM, uvicorn finishes the
    lifespan (replicas are stopped here) before it lets the signal end the process."""
    from contextlib import asynccontextmanager

    import anyio

    @asynccontextmanager
    async def lifespan(_: Any) -> Any:
        loop.start()
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(loop.stop)

    return lifespan


def _first(*values: bool | None) -> bool:
    return next(v for v in values if v is not None)


@app.command("controller")
def controller_command(
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    stop_replicas_on_exit: Annotated[bool | None, typer.Option(
        "--stop-replicas-on-exit/--keep-replicas-on-exit",
        help="Stop every model server when this controller stops [default: no: the next leader adopts them].",
    )] = None,
) -> None:
    """Run only the reconciler (production: API, controller and gateway as separate processes).

    Any number may run against one database: one holds the lease and acts, the others stand by."""
    import signal
    import threading

    from inferd.cli.bootstrap import build_controller, build_state
    from inferd.config.logging import configure_logging

    settings = _settings(data_dir, database_url)
    configure_logging(settings.log_format)
    stop = _first(stop_replicas_on_exit, settings.stop_replicas_on_exit, False)
    loop = build_controller(build_state(settings), stop_replicas_on_exit=stop)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    loop.start()
    done.wait()
    loop.stop()


@app.command()
def quickstart(
    data_dir: DataDir = None,
    api_url: Annotated[str | None, typer.Option(help="API base URL [default: from settings].")] = None,
    name: Annotated[str, typer.Option(help="Instance name.")] = "quickstart",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for active.")] = 180,
) -> None:
    """Create an instance of the first catalog model through the API, wait until it is active,
    and print a curl that gets a completion from it."""
    import time

    import httpx

    from inferd.config import load_catalog_document
    from inferd.domain.catalog import Catalog

    settings = _settings(data_dir, None)
    token = (settings.data_dir / "admin-token").read_text().strip()
    scheme = "https" if settings.tls else "http"
    base = api_url or f"{scheme}://{'127.0.0.1' if settings.host in ('0.0.0.0', '::') else settings.host}:{settings.port}"
    verify: Any = str(settings.data_dir / "tls" / "api-ca.pem") if scheme == "https" else False
    catalog = Catalog.from_document(load_catalog_document(settings.catalog_file))
    model = catalog.models[0]
    slug = next(a for a in catalog.accelerators if a.slug in model.accelerator_slugs and a.count > 0)
    body = {"spec": {
        "version": 1, "name": name, "region": slug.region, "vpc": {"uuid": "00000000-0000-4000-8000-000000000000"},
        "enable_public_endpoint": True,
        "model_deployments": [{"model_slug": model.slug, "model_provider": model.provider, "workload_config": {},
                               "accelerators": [{"scale": 1, "type": "prefill_decode", "accelerator_slug": slug.slug}]}],
    }}
    with httpx.Client(base_url=base, verify=verify, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        created = client.post("/v2/dedicated-inferences", json=body)
        if created.status_code != 202:
            _fail(f"create failed ({created.status_code}): {created.json().get('message')}")
        instance_id = created.json()["dedicated_inference"]["id"]
        console.print(f"created instance {instance_id}; waiting for it to be active …")
        deadline = time.monotonic() + timeout
        status = "provisioning"
        while time.monotonic() < deadline:
            instance = client.get(f"/v2/dedicated-inferences/{instance_id}").json()["dedicated_inference"]
            status = instance["status"]
            if status == "active" and "pending_deployment_spec" not in instance:
                break
            if status == "error":
                _fail(f"instance failed: {instance.get('status_reason')}")
            time.sleep(0.5)
        else:
            _fail(f"instance still {status} after {timeout:.0f} s; see: inferd logs {instance_id}")
    endpoint = instance["endpoints"].get("public_endpoint_fqdn") or instance["endpoints"]["private_endpoint_fqdn"]
    token = created.json()["token"]["value"]
    console.print(f"[green]active[/green]: {model.name} is served at {endpoint}/v1 (token shown once, below)")
    print(
        f"curl -s {endpoint}/v1/chat/completions -H 'Authorization: Bearer {token}' "
        f"-H 'Content-Type: application/json' "
        f"""-d '{{"model": "{model.slug}", "messages": [{{"role": "user", "content": "Say hello"}}], "max_tokens": 32}}'"""
    )


def _banner(settings: Settings, url: str, first_token: str | None, gateway: bool = False) -> None:
    console.print(f"[bold]inferd {__version__}[/bold] API at [cyan]{url}[/cyan]  (database: {_safe_url(settings)})")
    if first_token:
        console.print(f"first admin token for team 'default' (shown once, also in {settings.data_dir / 'admin-token'}):")
        print(first_token, flush=True)
    else:
        console.print(f"admin token of the default team: {settings.data_dir / 'admin-token'}")
    if settings.tls:
        console.print(f"API CA certificate (trust it in clients): {settings.data_dir / 'tls' / 'api-ca.pem'}")
    console.print(f"OpenAPI document: {url}/v2/openapi.json")
    if gateway:
        console.print(
            f"gateway: public endpoints {settings.public_template()}, "
            f"private endpoints {settings.private_template()}"
        )
    console.print("create a first instance and get a curl for it:  [bold].venv/bin/inferd quickstart[/bold]")


def _safe_url(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.resolved_database_url()).render_as_string(hide_password=True)


from inferd.cli import ops  # noqa: E402  (registers replicas, logs, status on ``app``)

ops.register(app)
