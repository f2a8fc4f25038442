"""``inferd di tokens list|create|revoke``: the ``di_`` tokens that open an instance's endpoints."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from inferd.cli.client.http import BASE
from inferd.cli.client.output import Column, Format, field
from inferd.cli.client.session import Session, client_command, fail, say

tokens = typer.Typer(help="Access tokens (di_…) of an instance's endpoints.", no_args_is_help=True)

InstanceId = Annotated[str, typer.Argument(help="Instance id.", show_default=False)]
TOKEN_COLUMNS: list[Column] = [("ID", field("id")), ("Name", field("name")), ("Created", field("created_at"))]


@tokens.command("list")
@client_command()
def list_tokens(session: Session, instance_id: InstanceId) -> None:
    """Token ids, names and creation times (values are never listed)."""
    session.output.items(session.api.all_pages(f"{BASE}/{instance_id}/tokens", "tokens"), TOKEN_COLUMNS)


@tokens.command("create")
@client_command()
def create_token(session: Session, instance_id: InstanceId,
                 name: Annotated[str, typer.Option(help="Token name.", show_default=False)]) -> None:
    """Create a token; its value is shown this once."""
    token = session.api.create_token(instance_id, name)
    session.output.item(token, TOKEN_COLUMNS + [("Value", field("value"))])
    if session.output.format is Format.table:
        say("the value is shown only once: keep it")


@tokens.command("revoke")
@client_command(output=False)
def revoke_token(session: Session, instance_id: InstanceId,
                 token_id: Annotated[str, typer.Argument(help="Token id.", show_default=False)],
                 force: Annotated[bool, typer.Option("--force", "-f", help="Do not ask for confirmation.")] = False) -> None:
    """Revoke a token: the gateway refuses it within about a second."""
    if not force and sys.stdin.isatty() and not typer.confirm(f"revoke token {token_id}?", default=False):
        fail("not revoked")
    session.api.delete(f"{BASE}/{instance_id}/tokens/{token_id}")
    say(f"revoked token {token_id}")
