"""Runs reconcile passes in a background thread until asked to stop."""

from __future__ import annotations

import hashlib
import logging
import socket
import threading

from inferd.config import Settings
from inferd.controller.reconciler import Reconciler

log = logging.getLogger("inferd.controller")


def runtime_owner(settings: Settings) -> str:
    """Identifies this installation's processes on this machine (several may share it)."""
    key = f"{socket.gethostname()}|{settings.resolved_database_url()}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class ControllerLoop:
    def __init__(self, reconciler: Reconciler, interval: float) -> None:
        self.reconciler = reconciler
        self.interval = interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inferd-controller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        log.info("controller started")
        while not self._stopping.is_set():
            try:
                self.reconciler.run_once()
            except Exception:  # a bad pass (database briefly away) must not end the loop
                log.exception("reconcile pass failed")
            self._stopping.wait(self.interval)

    def stop(self) -> None:
        """Finish the current pass, then stop every replica (clean shutdown, no orphans)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)
        self.reconciler.stop_all()
        log.info("controller stopped; replicas stopped")
