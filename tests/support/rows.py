"""Gateway tests that need a ready replica without an engine: a small real HTTP server stands in
for the model server, and its replica row is written straight into the running server's database."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from inferd.store.db import Database
from inferd.store.tables import AcceleratorRow, ReplicaRow
from tests.support import specs
from tests.support.server import Server, free_port
from tests.support.waiting import wait_for


def mark_replica_ready(server: Server, instance_id: str, endpoint: str) -> None:
    """What the controller does when a model server answers its health check: one ready
    replica row (with its accelerator), committed at once."""
    database = Database(server.database_url)
    try:
        with database.session() as session:
            accelerator = AcceleratorRow(
                id=str(uuid.uuid4()), instance_id=instance_id, model_id=str(uuid.uuid4()), slug=specs.SLUG,
                name=specs.SLUG, role="prefill_decode", unit=None, status="active",
            )
            session.add(accelerator)
            session.flush()
            session.add(ReplicaRow(
                id=str(uuid.uuid4()), instance_id=instance_id, accelerator_id=accelerator.id,
                model_id=accelerator.model_id, model_slug=specs.MODEL, accelerator_slug=specs.SLUG,
                template="test", engine="test", endpoint=endpoint, phase="ready", status="ready",
            ))
    finally:
        database.dispose()


async def _completion(_: Request) -> JSONResponse:
    return JSONResponse({"choices": [{"message": {"content": "ok"}}], "usage": {"completion_tokens": 1}})


@contextmanager
def stand_in_model_server() -> Iterator[str]:
    """The base URL of a model server that answers every chat completion at once."""
    port = free_port()
    app = Starlette(routes=[Route("/v1/chat/completions", _completion, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=20, what="the stand-in model server")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
