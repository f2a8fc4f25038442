"""``inferd``: run the server and administer teams and tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from inferd import __version__
from inferd.config import Settings

app = typer.Typer(help="inferd: self-hosted DigitalOcean Dedicated Inference.", no_args_is_help=True)
admin = typer.Typer(help="Administer teams and control-plane tokens.", no_args_is_help=True)
team_cli = typer.Typer(help="Teams.", no_args_is_help=True)
token_cli = typer.Typer(help="Control-plane tokens (dop_v1_…).", no_args_is_help=True)
admin.add_typer(team_cli, name="team")
admin.add_typer(token_cli, name="token")
app.add_typer(admin, name="admin")
console = Console(stderr=True, soft_wrap=True)

DataDir = Annotated[Path | None, typer.Option(help="State directory [env INFERD_DATA_DIR].")]
DatabaseUrl = Annotated[str | None, typer.Option(help="SQLAlchemy URL [env INFERD_DATABASE_URL].")]


def _settings(data_dir: Path | None, database_url: str | None, **overrides: Any) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    if database_url is not None:
        values["database_url"] = database_url
    return Settings(**values)


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
) -> None:
    """Run inferd in one process (embedded default: SQLite in the data directory)."""
    import uvicorn

    from inferd.api.app import create_app
    from inferd.cli.bootstrap import build_state, ensure_default_team
    from inferd.config.logging import configure_logging
    from inferd.pki import ensure_local_tls

    settings = _settings(data_dir, database_url, host=host, port=port, catalog_file=catalog, tls=tls)
    configure_logging(settings.log_format)
    state = build_state(settings)
    first_token = ensure_default_team(state)
    ssl: dict[str, str] = {}
    scheme = "http"
    if settings.tls:
        files = ensure_local_tls(settings.data_dir / "tls", hostnames=settings.tls_hostnames + [settings.host])
        ssl = {"ssl_certfile": str(files.cert), "ssl_keyfile": str(files.key)}
        scheme = "https"
    shown_host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    url = f"{scheme}://{shown_host}:{settings.port}"
    _banner(settings, url, first_token)
    uvicorn.run(
        create_app(state), host=settings.host, port=settings.port, log_config=None, server_header=False, **ssl
    )


def _banner(settings: Settings, url: str, first_token: str | None) -> None:
    console.print(f"[bold]inferd {__version__}[/bold] API at [cyan]{url}[/cyan]  (database: {_safe_url(settings)})")
    if first_token:
        console.print(f"first admin token for team 'default' (shown once, also in {settings.data_dir / 'admin-token'}):")
        print(first_token, flush=True)
    else:
        console.print(f"admin token of the default team: {settings.data_dir / 'admin-token'}")
    if settings.tls:
        console.print(f"API CA certificate (trust it in clients): {settings.data_dir / 'tls' / 'api-ca.pem'}")
    console.print(f"OpenAPI document: {url}/v2/openapi.json")


def _safe_url(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.resolved_database_url()).render_as_string(hide_password=True)


# -- admin ----------------------------------------------------------------------------------
def _state(data_dir: Path | None, database_url: str | None) -> Any:
    from inferd.cli.bootstrap import build_state

    return build_state(_settings(data_dir, database_url))


def _print_table(headers: list[str], rows: list[list[str]]) -> None:
    """A table on a terminal; tab-separated lines when piped, so scripts can read whole ids."""
    out = Console()
    if not out.is_terminal:
        for row in rows:
            print("\t".join(row))
        return
    table = Table(*headers)
    for row in rows:
        table.add_row(*row)
    out.print(table)


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code=1)


@team_cli.command("create")
def team_create(name: str, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Create a team."""
    from inferd.domain.errors import DomainError
    from inferd.store import teams

    state = _state(data_dir, database_url)
    try:
        with state.database.session() as session:
            team = teams.create_team(session, name)
    except DomainError as exc:
        _fail(exc.message)
    print(team.id)


@team_cli.command("list")
def team_list(data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """List teams."""
    from inferd.store import teams

    state = _state(data_dir, database_url)
    with state.database.session() as session:
        rows = [[t.id, t.name, t.created_at.isoformat()] for t in teams.list_teams(session)]
    _print_table(["id", "name", "created_at"], rows)


@token_cli.command("create")
def token_create(
    team: Annotated[str, typer.Option(help="Team name or id.")],
    name: Annotated[str, typer.Option(help="A label for the token.")] = "cli",
    scope: Annotated[
        list[str] | None,
        typer.Option(help="read, create, update, delete (repeatable) or * for full access [default: *]."),
    ] = None,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a control-plane token; its value is printed once, on stdout."""
    from inferd.domain.errors import DomainError
    from inferd.domain.scopes import normalize_scopes
    from inferd.domain.tokens import hash_token, new_api_token
    from inferd.store import teams

    try:
        scopes = normalize_scopes(scope or ["*"])
    except ValueError as exc:
        _fail(str(exc))
    state = _state(data_dir, database_url)
    value = new_api_token()
    try:
        with state.database.session() as session:
            owner = teams.find_team(session, team)
            teams.add_api_token(session, owner, name=name, token_hash=hash_token(value), scopes=scopes)
    except DomainError as exc:
        _fail(exc.message)
    print(value)


@token_cli.command("list")
def token_list(
    team: Annotated[str, typer.Option(help="Team name or id.")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """List a team's tokens (never their values)."""
    from inferd.domain.errors import DomainError
    from inferd.store import teams

    state = _state(data_dir, database_url)
    try:
        with state.database.session() as session:
            tokens = teams.list_api_tokens(session, teams.find_team(session, team))
            rows = [[r.id, r.name, " ".join(r.scopes), r.created_at.isoformat()] for r in tokens]
    except DomainError as exc:
        _fail(exc.message)
    _print_table(["id", "name", "scopes", "created_at"], rows)


@token_cli.command("revoke")
def token_revoke(token_id: str, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """Revoke a control-plane token by id."""
    from inferd.domain.errors import DomainError
    from inferd.store import teams

    state = _state(data_dir, database_url)
    try:
        with state.database.session() as session:
            teams.revoke_api_token(session, token_id)
    except DomainError as exc:
        _fail(exc.message)
    console.print("revoked")
