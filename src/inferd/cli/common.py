"""What every ``inferd`` command shares: settings from flags, the store, tables, failing clearly."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from inferd.config import Settings

console = Console(stderr=True, soft_wrap=True)

DataDir = Annotated[Path | None, typer.Option(help="State directory [env INFERD_DATA_DIR].")]
DatabaseUrl = Annotated[str | None, typer.Option(help="SQLAlchemy URL [env INFERD_DATABASE_URL].")]


def settings_from(data_dir: Path | None, database_url: str | None, **overrides: Any) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    if database_url is not None:
        values["database_url"] = database_url
    return Settings(**values)


def state_from(data_dir: Path | None, database_url: str | None) -> Any:
    from inferd.cli.bootstrap import build_state

    return build_state(settings_from(data_dir, database_url))


def print_table(headers: list[str], rows: list[list[str]]) -> None:
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


def fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code=1)
