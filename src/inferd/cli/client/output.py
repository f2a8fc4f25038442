"""Rendering API objects: aligned columns (doctl's look) or the objects themselves as JSON.

Tables go to stdout as plain text padded into columns, whether or not stdout is a terminal,
so that ``awk``/``cut`` read them the same way a person does; ``--no-header`` drops the header.
"""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

Row = dict[str, Any]
Column = tuple[str, Callable[[Row], Any]]


class Format(enum.StrEnum):
    table = "table"
    json = "json"


@dataclass(frozen=True)
class Output:
    format: Format = Format.table
    no_header: bool = False

    def items(self, items: Sequence[Row], columns: Sequence[Column], *, stream: TextIO | None = None) -> None:
        """A list command's result: a JSON array, or one table row per item."""
        out = stream or sys.stdout
        if self.format is Format.json:
            out.write(json.dumps(list(items), indent=2) + "\n")
        else:
            out.write(table(items, columns, header=not self.no_header))

    def item(self, item: Any, columns: Sequence[Column], *, row: Row | None = None, stream: TextIO | None = None) -> None:
        """One object: as JSON (all of ``item``), or a one-row table made from ``row`` (default ``item``)."""
        out = stream or sys.stdout
        if self.format is Format.json:
            out.write(json.dumps(item, indent=2) + "\n")
        else:
            out.write(table([row if row is not None else item], columns, header=not self.no_header))


def cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(cell(v) for v in value) or "-"
    return str(value).replace("\n", " ")


def table(items: Sequence[Row], columns: Sequence[Column], *, header: bool = True) -> str:
    """Columns padded to their widest cell, two spaces apart; no trailing blanks."""
    rows = [[cell(get(item)) for _, get in columns] for item in items]
    if header:
        rows.insert(0, [name for name, _ in columns])
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def field(*path: str | int) -> Callable[[Row], Any]:
    """A getter for a nested value: ``field("spec", "name")``; missing parts give ``None``."""
    def get(item: Row) -> Any:
        value: Any = item
        for part in path:
            try:
                value = value[part]
            except (KeyError, IndexError, TypeError):
                return None
        return value
    return get
