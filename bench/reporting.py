"""The end of every benchmark run: the table on stdout, the JSON on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def finish(report: dict[str, Any], out: Path, table: str) -> int:
    print()
    print(table)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nJSON: {out}  ({report['duration_s']}s)")
    return 0
