"""Rows written straight into a store, as the API and the controller would write them: an
instance for store-level tests, and for gateway tests a ready replica whose model server is a
small real HTTP server standing in for the engine."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from inferd.store.db import Database
from inferd.store.tables import AcceleratorRow, DeploymentRow, InstanceRow, ReplicaRow, TeamRow
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


def new_instance(database: Database, *, public: bool = True) -> str:
    instance_id, deployment_id = str(uuid.uuid4()), str(uuid.uuid4())
    with database.session() as session:
        team = session.scalar(select(TeamRow.id).where(TeamRow.name == "feed"))
        if team is None:
            team = str(uuid.uuid4())
            session.add(TeamRow(id=team, name="feed"))
            session.flush()
        session.add(InstanceRow(
            id=instance_id, team_id=team, name=f"i-{instance_id[:8]}", region=specs.REGION, vpc_uuid=specs.VPC,
            status="provisioning", pending_deployment_id=deployment_id, ca_cert_pem="cert", ca_key_sealed="",
        ))
        session.flush()
        session.add(DeploymentRow(id=deployment_id, instance_id=instance_id, version=1,
                                  spec=specs.spec(public=public), status="provisioning"))
    return instance_id
