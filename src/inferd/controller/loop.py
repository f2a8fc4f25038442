"""Runs reconcile passes in a background thread while this process holds the controller lease.

Any number of controllers may run; the one holding the lease (``LeaderLease``) acts, the
others renew their claim attempt every interval and take over within the lease TTL when the
leader dies. Stopping a controller never stops model servers unless asked to
(``stop_replicas_on_exit``): the next leader adopts them.
"""

from __future__ import annotations

import logging
import threading
import time

from inferd.controller.lease import LeaderLease
from inferd.controller.reconciler import Reconciler

log = logging.getLogger("inferd.controller")


class ControllerLoop:
    def __init__(
        self, reconciler: Reconciler, interval: float, lease: LeaderLease, *, stop_replicas_on_exit: bool = False
    ) -> None:
        self.reconciler = reconciler
        self.interval = interval
        self.lease = lease
        self.stop_replicas_on_exit = stop_replicas_on_exit
        reconciler.still_leader = lease.is_held
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inferd-controller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        log.info("controller started (%s runtime, lease holder %s)", self.reconciler.runtime.name, self.lease.holder)
        while not self._stopping.is_set():
            try:
                if self.lease.hold():
                    self.reconciler.run_once()
            except Exception:  # a bad pass (database briefly away) must not end the loop
                log.exception("reconcile pass failed")
            self._stopping.wait(self.interval)

    def stop(self) -> None:
        """Finish the current pass and hand the lease over; replicas keep serving unless asked."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)
        if self.stop_replicas_on_exit and self._await_lease():
            self.reconciler.stop_all()
            log.info("controller stopped; replicas stopped (--stop-replicas-on-exit)")
        else:
            log.info("controller stopped; replicas keep serving")
        self.lease.release()
        self.reconciler.runtime.close()

    def _await_lease(self) -> bool:
        """Stopping replicas is the leader's act: a controller that restarted after a crash may
        have to wait for the dead one's lease to expire first (at most its TTL)."""
        deadline = time.monotonic() + self.lease.ttl_seconds + 1
        while not self.lease.hold():
            if time.monotonic() > deadline:
                log.warning("another controller leads: replicas keep serving")
                return False
            time.sleep(0.2)
        return True
