"""Carrying out decisions with the runtime, after the transaction that made them has committed."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from inferd.controller.decide import Decisions, mark_failed
from inferd.controller.observe import KILL_GRACE_SECONDS
from inferd.runtime.base import (
    RUNNING_PHASES,
    ReplicaRequest,
    Runtime,
    RuntimeUnavailable,
)
from inferd.store import replicas as repo
from inferd.store.db import Database
from inferd.store.tables import ReplicaRow, utcnow

log = logging.getLogger("inferd.controller")


class Actor:
    def __init__(self, database: Database, runtime: Runtime) -> None:
        self.database = database
        self.runtime = runtime

    def carry_out(self, decisions: Decisions) -> None:
        for handle in decisions.terminate:
            self.runtime.terminate(handle)
        for handle in decisions.kill:
            self.runtime.kill(handle)
        for instance_id, replica_id in decisions.removed:
            self.runtime.discard_logs(instance_id, replica_id)
        for request in decisions.starts:
            self.start(request)

    def start(self, request: ReplicaRequest) -> None:
        try:
            handle = self.runtime.start(request)
        except RuntimeUnavailable:
            raise
        except Exception as exc:  # a replica that cannot start is a status, not a crash
            log.warning("replica %s cannot start: %s", request.replica_id, exc, extra={"instance_id": request.instance_id})
            self._start_failed(request.replica_id, str(exc))
            return
        with self.database.session() as session:
            recorded = repo.record_handle(session, request.replica_id, handle, utcnow())
        if not recorded:  # removed meanwhile: do not leak what was started
            self.runtime.kill(handle)

    def _start_failed(self, replica_id: str, error: str) -> None:
        with self.database.session() as session:
            replica = session.get(ReplicaRow, replica_id)
            if replica is not None:
                mark_failed(replica, error, utcnow())

    def stop_and_wait(self, handles: Iterable[str]) -> None:
        """SIGTERM every replica, wait up to ``KILL_GRACE_SECONDS``, then end what is left."""
        handles = list(handles)
        for handle in handles:
            self.runtime.terminate(handle)
        deadline = time.monotonic() + KILL_GRACE_SECONDS
        while handles and time.monotonic() < deadline:
            states = self.runtime.observe({h: h for h in handles})
            if not any(s.phase in RUNNING_PHASES for s in states.values()):
                break
            time.sleep(0.1)
        for handle in handles:
            self.runtime.kill(handle)

