"""``inferd``: run the server and administer teams and tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from inferd import __version__
from inferd.cli.admin import admin
from inferd.cli.common import DatabaseUrl, DataDir, console
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
    api_url: Annotated[str | None, typer.Option(help="API base URL (default: the context's, else from settings).")] = None,
    name: Annotated[str, typer.Option(help="Instance name.")] = "quickstart",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for active.")] = 180,
    context: Annotated[str | None, typer.Option(help="Client context (default: the current one, else the data dir's admin token).")] = None,
) -> None:
    """Create an instance of the first catalog model through the API, wait until it is active,
    and print a curl that gets a completion from it."""
    import os

    from inferd.cli.client import quickstart as client_quickstart
    from inferd.cli.client.session import Flags

    flags = Flags(context=context, api_url=api_url, token=os.environ.get("INFERD_TOKEN"),
                  ca_file=os.environ.get("INFERD_CA_FILE"))
    client_quickstart.run(flags, data_dir, name, timeout)


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
    console.print(f"web console: [cyan]{url}/console[/cyan] (sign in with a dop_v1_ token)")
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

from inferd.cli import client  # noqa: E402  (registers auth, di, sizes, models, chat on ``app``)

client.register(app)
