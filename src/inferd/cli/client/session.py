"""What every client command shares: connection flags, output flags, exit codes, one-line errors.

doctl accepts its global flags after any subcommand; Typer has no such flags, so the
``client_command`` decorator adds them to each command's signature and turns them into a
``Session`` (an API client and an output format) before the command runs. Failures of the API,
the network or the config file end as one line on stderr and a documented exit code.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from inspect import Parameter
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from inferd.cli.client import config as cfg
from inferd.cli.client.http import ApiClient, ApiError, Connection, Unreachable
from inferd.cli.client.output import Format, Output

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_WAIT_ERROR, EXIT_WAIT_TIMEOUT = 0, 1, 2, 3, 4


class Failure(Exception):
    """A failure the user can act on, with the exit code it ends the command with."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def say(message: str) -> None:
    """A note for the person at the terminal (stderr, so stdout stays parseable)."""
    print(message, file=sys.stderr, flush=True)


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    raise Failure(message, code)


@contextmanager
def failures_as_exit() -> Iterator[None]:
    """API, network and config failures as ``error: …`` on stderr and an exit code, never a traceback."""
    try:
        yield
    except Failure as exc:
        say(f"error: {exc}")
        raise typer.Exit(exc.code) from None
    except (ApiError, Unreachable, cfg.ConfigError) as exc:
        say(f"error: {exc}")
        raise typer.Exit(EXIT_ERROR) from None
    except KeyboardInterrupt:
        say("interrupted")
        raise typer.Exit(130) from None


ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", envvar=cfg.CONFIG_ENV, show_envvar=False,
    help="Contexts file (env INFERD_CONFIG; default ${XDG_CONFIG_HOME:-~/.config}/inferd/config.yaml).")]
ContextOpt = Annotated[str | None, typer.Option(
    "--context", envvar="INFERD_CONTEXT", show_envvar=False, help="Context to use (env INFERD_CONTEXT; default: the current one).")]
ApiUrlOpt = Annotated[str | None, typer.Option(
    "--api-url", envvar="INFERD_API_URL", show_envvar=False, help="API base URL, overrides the context's (env INFERD_API_URL).")]
TokenOpt = Annotated[str | None, typer.Option(
    "--token", envvar="INFERD_TOKEN", show_envvar=False, help="API token (dop_v1_…), overrides the context's (env INFERD_TOKEN).")]
CaFileOpt = Annotated[str | None, typer.Option(
    "--ca-file", envvar="INFERD_CA_FILE", show_envvar=False, help="CA that signs the API's TLS certificate (env INFERD_CA_FILE).")]
OutputOpt = Annotated[Format, typer.Option("--output", "-o", help="Output format.")]
NoHeaderOpt = Annotated[bool, typer.Option("--no-header", help="Leave out the header line of tables.")]


@dataclass(frozen=True)
class Flags:
    """The connection flags as given (after their environment variables)."""

    config: Path | None = None
    context: str | None = None
    api_url: str | None = None
    token: str | None = None
    ca_file: str | None = None

    @property
    def config_path(self) -> Path:
        return self.config.expanduser() if self.config else cfg.default_path()


def resolve(flags: Flags, fallback: Connection | None = None) -> Connection:
    """Flags and environment first, then the chosen (or current) context, then ``fallback``."""
    config = cfg.load(flags.config_path)
    name = flags.context or config.current
    context = config.get(name) if name else None
    base = context or fallback
    api_url = flags.api_url or (base.api_url if base else None)
    token = flags.token or (base.token if base else None)
    ca_file = flags.ca_file or (base.ca_file if base else None)
    if not api_url or not token:
        missing = " and no ".join(n for n, v in (("API URL", api_url), ("token", token)) if not v)
        fail(f"no {missing} to use: run `inferd auth init`, or set INFERD_API_URL and INFERD_TOKEN")
    return Connection(api_url, token, ca_file)


@dataclass
class Session:
    """What a command gets: the API and how to print."""

    api: ApiClient
    output: Output


_CONNECTION = [
    ("config", ConfigOpt), ("context", ContextOpt), ("api_url", ApiUrlOpt), ("token", TokenOpt), ("ca_file", CaFileOpt),
]
_OUTPUT = [("output", OutputOpt, Format.table), ("no_header", NoHeaderOpt, False)]


def client_command(*, output: bool = True) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command whose first parameter is ``session: Session`` the shared flags, and run it
    with the API open and failures turned into exit codes."""

    def decorate(func: Callable[..., None]) -> Callable[..., None]:
        own = [p for p in inspect.signature(func, eval_str=True).parameters.values() if p.name != "session"]
        added = [Parameter(n, Parameter.KEYWORD_ONLY, default=None, annotation=a) for n, a in _CONNECTION]
        if output:
            added += [Parameter(n, Parameter.KEYWORD_ONLY, default=d, annotation=a) for n, a, d in _OUTPUT]

        @functools.wraps(func)
        def run(**kwargs: Any) -> None:
            flags = Flags(**{n: kwargs.pop(n) for n, _ in _CONNECTION})
            shown = Output(kwargs.pop("output"), kwargs.pop("no_header")) if output else Output()
            with failures_as_exit():
                with ApiClient(resolve(flags)) as api:
                    func(Session(api, shown), **kwargs)

        parameters = [p.replace(kind=Parameter.KEYWORD_ONLY) for p in own] + added
        run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in parameters}
        del run.__wrapped__  # Typer must see the signature above, not the function's own
        return run

    return decorate
