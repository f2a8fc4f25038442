"""``inferd auth init|switch|list|remove``: contexts, as ``doctl auth`` keeps them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from inferd.cli.client import config as cfg
from inferd.cli.client.http import BASE, ApiClient, ApiError, Connection
from inferd.cli.client.output import Column, Format, Output, field
from inferd.cli.client.session import (
    ApiUrlOpt,
    CaFileOpt,
    ConfigOpt,
    NoHeaderOpt,
    OutputOpt,
    TokenOpt,
    fail,
    failures_as_exit,
    say,
)

auth = typer.Typer(help="Contexts: which API to talk to, and with which token.", no_args_is_help=True)

NamedContext = Annotated[str, typer.Option("--context", help="Context name.")]
CONTEXT_COLUMNS: list[Column] = [
    ("Name", field("name")), ("API URL", field("api_url")), ("CA file", field("ca_file")),
    ("Current", lambda c: "*" if c.get("current") else ""),
]


def _path(config: Path | None) -> Path:
    return config.expanduser() if config else cfg.default_path()


def _ask_token() -> str:
    """Hidden prompt on a terminal; otherwise the first line of stdin (``echo $T | inferd auth init``)."""
    if sys.stdin.isatty():
        return str(typer.prompt("API token (dop_v1_…)", hide_input=True)).strip()
    return sys.stdin.readline().strip()


@auth.command("init")
def init(context: NamedContext = "default", api_url: ApiUrlOpt = None, ca_file: CaFileOpt = None,
         token: TokenOpt = None, config: ConfigOpt = None) -> None:
    """Check a token against the API, then save it with the API's URL and CA as a context.

    The token is stored in plain text in a file of mode 0600 (as doctl does)."""
    with failures_as_exit():
        path = _path(config)
        if not api_url:
            if not sys.stdin.isatty():
                fail("--api-url is required (or set INFERD_API_URL)")
            api_url = str(typer.prompt("API URL", default="https://127.0.0.1:8443"))
        if ca_file:
            ca_path = Path(ca_file).expanduser().resolve()
            if not ca_path.is_file():
                fail(f"--ca-file {ca_file}: no such file")
            ca_file = str(ca_path)
        token = token or _ask_token()
        if not token:
            fail("no token given")
        try:
            with ApiClient(Connection(api_url, token, ca_file)) as api:
                api.get(f"{BASE}/sizes")
        except ApiError as exc:
            fail(f"the API did not accept this token, nothing saved: {exc}")
        updated = cfg.with_context(cfg.load(path), context, cfg.Context(api_url.rstrip("/"), token, ca_file))
        cfg.save(path, updated)
        say(f"saved context {context!r} in {path} (mode 0600; the token is stored there in plain text)")
        if updated.current != context:
            say(f"current context is still {updated.current!r}; use it with: inferd auth switch --context {context}")


@auth.command("switch")
def switch(context: NamedContext, config: ConfigOpt = None) -> None:
    """Make another context the current one."""
    with failures_as_exit():
        path = _path(config)
        cfg.save(path, cfg.switched(cfg.load(path), context))
        say(f"now using context {context!r}")


@auth.command("list")
def list_contexts(config: ConfigOpt = None, output: OutputOpt = Format.table, no_header: NoHeaderOpt = False) -> None:
    """The contexts, the current one marked (tokens are never shown)."""
    with failures_as_exit():
        loaded = cfg.load(_path(config))
        rows = [{"name": n, "api_url": c.api_url, "ca_file": c.ca_file, "current": n == loaded.current}
                for n, c in sorted(loaded.contexts.items())]
        Output(output, no_header).items(rows, CONTEXT_COLUMNS)


@auth.command("remove")
def remove(context: NamedContext, config: ConfigOpt = None) -> None:
    """Forget a context and its token (the token itself stays valid: revoke it on the server)."""
    with failures_as_exit():
        path = _path(config)
        cfg.save(path, cfg.without_context(cfg.load(path), context))
        say(f"removed context {context!r}")
