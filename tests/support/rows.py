"""Rows written straight into a running server's database, for gateway tests that need a ready
replica without an engine (the upstream is a small real HTTP server of the test's own)."""

from __future__ import annotations

import uuid

from inferd.store.db import Database
from inferd.store.tables import AcceleratorRow, ReplicaRow
from tests.support import specs
from tests.support.server import Server


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
