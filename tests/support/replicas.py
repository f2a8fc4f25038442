"""Looking at replicas from outside: the store's rows and the engine processes on this machine."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from tests.support.server import Server

HANDLE_ENV = b"INFERD_REPLICA_HANDLE="


def replicas(server: Server, instance_id: str) -> list[dict[str, Any]]:
    engine = create_engine(server.database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT id, model_slug, status, phase, node, endpoint, handle, restarts, last_error FROM replicas "
                     "WHERE instance_id = :id ORDER BY created_at"),
                {"id": instance_id},
            )
            return [dict(row._mapping) for row in rows]
    finally:
        engine.dispose()


def ready_urls(server: Server, instance_id: str) -> list[str]:
    return [r["endpoint"] for r in replicas(server, instance_id) if r["status"] == "ready" and r["endpoint"]]


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def engine_pids() -> dict[str, int]:
    """Every model-server process on this machine labelled by inferd: ``handle → pid``. An engine's
    children inherit its labels (vLLM's engine core and worker): the one whose parent is not
    labelled with the same handle is the engine."""
    labelled: dict[str, dict[int, int]] = {}  # handle → {pid: parent pid}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        for item in environ.split(b"\0"):
            if item.startswith(HANDLE_ENV) and process_exists(int(entry.name)):
                parent = int(stat[stat.rindex(")") + 2:].split()[1])
                labelled.setdefault(item[len(HANDLE_ENV):].decode(), {})[int(entry.name)] = parent
    return {handle: min(pid for pid, parent in tree.items() if parent not in tree) for handle, tree in labelled.items()}


def engine_pid(handle: str) -> int | None:
    return engine_pids().get(handle)


def chat(url: str, model: str, max_tokens: int = 8) -> dict[str, Any]:
    response = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "Name one colour."}], "max_tokens": max_tokens},
        timeout=60,
    )
    response.raise_for_status()
    return dict(response.json())
