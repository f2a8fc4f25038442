"""The client CLI: ``inferd auth``, ``inferd di …``, ``inferd sizes``, ``inferd models``, ``inferd chat``.

Everything here talks to the API over HTTPS like any other client, never to the database.
"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the client commands to the ``inferd`` command."""
    from inferd.cli.client.auth import auth
    from inferd.cli.client.catalog import models, sizes
    from inferd.cli.client.chat import chat
    from inferd.cli.client.instances import di
    from inferd.cli.client.tokens import tokens

    di.add_typer(tokens, name="tokens")
    app.add_typer(auth, name="auth")
    app.add_typer(di, name="di")
    app.command("sizes")(sizes)
    app.command("models")(models)
    app.command("chat")(chat)
