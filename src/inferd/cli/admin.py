"""``inferd admin``: teams, their quotas, control-plane tokens (dop_v1_…), and the data-plane
limits of an instance's ``di_`` tokens."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import typer

from inferd.cli.common import DatabaseUrl, DataDir, console
from inferd.cli.common import fail as _fail
from inferd.cli.common import print_table as _print_table
from inferd.cli.common import state_from as _state

admin = typer.Typer(help="Administer teams and control-plane tokens.", no_args_is_help=True)
team_cli = typer.Typer(help="Teams.", no_args_is_help=True)
token_cli = typer.Typer(help="Control-plane tokens (dop_v1_…).", no_args_is_help=True)
admin.add_typer(team_cli, name="team")
admin.add_typer(token_cli, name="token")


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


def _quota_rows(state: Any, team_id: str) -> list[list[str]]:
    """Each quota of a team: what it holds, its limit, and where the limit comes from."""
    from inferd.api.quotas import limits
    from inferd.store import quotas

    with state.database.session() as session:
        override = quotas.override_of(session, team_id)
        effective = limits(state.settings, override)
        count = quotas.instance_count(session, team_id)
        held = quotas.units_held(session, team_id)
    own_units = (override.max_units or {}) if override else {}
    own_instances = override is not None and override.max_instances is not None
    rows = [["instances", str(count), str(effective.max_instances), "team" if own_instances else "default"]]
    for slug in sorted(set(held) | set(effective.units)):
        limit = effective.units_of(slug)
        rows.append([f"units:{slug}", str(held.get(slug, 0)), "-" if limit is None else str(limit),
                     "team" if slug in own_units else "default"])
    if effective.default_units is not None:
        rows.append(["units:*", "-", str(effective.default_units), "default"])
    return rows


@team_cli.command("set-quota")
def team_set_quota(
    team: Annotated[str, typer.Argument(help="Team name or id.")],
    instances: Annotated[str | None, typer.Option(
        help="Most instances the team may have (deleting ones not counted), or 'default'.")] = None,
    units: Annotated[list[str] | None, typer.Option(
        help="SLUG=N: most accelerator units of SLUG in the team's specs; SLUG=default drops it (repeatable).")] = None,
    reset: Annotated[bool, typer.Option("--reset", help="Drop every override of the team first.")] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Set a team's own quotas (over INFERD_TEAM_MAX_INSTANCES / INFERD_TEAM_MAX_UNITS) and
    print the team's quotas; existing instances are kept, only new demand is refused."""
    from inferd.domain.errors import DomainError
    from inferd.store import quotas, teams

    def count(text: str, what: str) -> int | Literal["default"]:
        if text == "default":
            return "default"
        if not text.isdigit():
            _fail(f"{what}: give a whole number of 0 or more, or 'default' (not {text!r})")
        return int(text)

    unit_limits: dict[str, int | Literal["default"]] = {}
    for item in units or []:
        slug, sep, value = item.partition("=")
        if not sep or not slug:
            _fail(f"--units {item!r}: expected SLUG=N")
        unit_limits[slug.strip()] = count(value.strip(), f"--units {slug}")
    state = _state(data_dir, database_url)
    try:
        with state.database.session() as session:
            owner = teams.find_team(session, team)
            team_id = owner.id
            quotas.set_override(
                session, owner, instances=count(instances, "--instances") if instances is not None else None,
                units=unit_limits, reset=reset,
            )
    except DomainError as exc:
        _fail(exc.message)
    _print_table(["quota", "in use", "limit", "set by"], _quota_rows(state, team_id))


@team_cli.command("quota")
def team_quota(
    team: Annotated[str, typer.Argument(help="Team name or id.")],
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Show a team's quotas and what it holds against them."""
    from inferd.domain.errors import DomainError
    from inferd.store import teams

    state = _state(data_dir, database_url)
    try:
        with state.database.session() as session:
            team_id = teams.find_team(session, team).id
    except DomainError as exc:
        _fail(exc.message)
    _print_table(["quota", "in use", "limit", "set by"], _quota_rows(state, team_id))


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


def _limit_value(text: str | None, what: str) -> int | Literal["default"] | None:
    """An option of ``limits``: None when not given, ``"default"``, or a whole number."""
    from inferd.store.token_limits import MAX_LIMIT

    if text is None:
        return None
    if text == "default":
        return "default"
    if not text.isdigit() or int(text) > MAX_LIMIT:
        _fail(f"{what}: give a whole number from 0 to {MAX_LIMIT} (0: unlimited), or 'default' (not {text!r})")
    return int(text)


@admin.command("limits")
def instance_limits(
    instance_id: Annotated[str, typer.Argument(help="Instance id.")],
    rpm: Annotated[str | None, typer.Option(
        "--rpm", help="Requests per minute per di_ token: N (0: unlimited) or 'default' (INFERD_TOKEN_RPM).")] = None,
    tpm: Annotated[str | None, typer.Option(
        "--tpm", help="Tokens per minute per di_ token: N (0: unlimited) or 'default' (INFERD_TOKEN_TPM).")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Drop both of the instance's own limits first.")] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Show, or set, the limits of an instance's di_ tokens on the data plane (each token has
    its own budget); the gateway applies a change within about a second (change feed)."""
    from inferd.gateway.tokenlimits import effective_limits
    from inferd.store.token_limits import get_token_limits, set_token_limits

    new_rpm, new_tpm = _limit_value(rpm, "--rpm"), _limit_value(tpm, "--tpm")
    state = _state(data_dir, database_url)
    with state.database.session() as session:
        own = get_token_limits(session, instance_id)
        if own is None:
            _fail(f"no instance {instance_id!r}")
            return
        if clear or new_rpm is not None or new_tpm is not None:
            own_rpm, own_tpm = (None, None) if clear else own
            own_rpm = own_rpm if new_rpm is None else None if new_rpm == "default" else new_rpm
            own_tpm = own_tpm if new_tpm is None else None if new_tpm == "default" else new_tpm
            set_token_limits(session, instance_id, own_rpm, own_tpm)
            own = own._replace(rpm=own_rpm, tpm=own_tpm)
    global_rpm: int | None = state.settings.token_rpm
    global_tpm: int | None = state.settings.token_tpm
    effective = effective_limits(global_rpm, global_tpm, own.rpm, own.tpm)

    def shown(value: int | None) -> str:
        return "unlimited" if not value else str(value)

    _print_table(["limit", "instance", "global", "effective"], [
        ["requests per minute", "default" if own.rpm is None else shown(own.rpm), shown(global_rpm),
         shown(effective.requests_per_minute)],
        ["tokens per minute", "default" if own.tpm is None else shown(own.tpm), shown(global_tpm),
         shown(effective.tokens_per_minute)],
    ])
