"""Runs reconcile passes in a background thread while this process holds the controller lease.

Any number of controllers may run; the one holding the lease (``LeaderLease``) acts, the
others renew their claim attempt every interval and take over within the lease TTL when the
leader dies. Stopping a controller never stops model servers unless asked to
(``stop_replicas_on_exit``): the next leader adopts them.

The lease is renewed once ``RENEW_AFTER`` of its TTL has passed (2 s of the default 5 s), not every
pass: a renewal is a write transaction (about 4 ms of CPU on PostgreSQL), more than a whole steady
pass. It is renewed in the middle of a long pass too (a first pass over 1,000 instances takes
seconds), and the reconciler still checks before each instance that the last renewal is younger
than 80 % of the TTL (``is_held``), so acting stays as safe as when it renewed every pass.
The reconciler remembers what it saw to skip steady instances; when the lease's term changes (another
controller held it in between and may have acted), it forgets and reconciles everything.
"""

from __future__ import annotations

import logging
import threading
import time

from inferd.controller.lease import LeaderLease
from inferd.controller.reconciler import Reconciler

log = logging.getLogger("inferd.controller")
RENEW_AFTER = 0.4
"""Fraction of the lease TTL after which it is renewed; ``is_held`` ends at 0.8: 40 % of the TTL
(2 s by default) is left for a renewal to come through."""


class ControllerLoop:
    def __init__(
        self, reconciler: Reconciler, interval: float, lease: LeaderLease, *, stop_replicas_on_exit: bool = False
    ) -> None:
        self.reconciler = reconciler
        self.interval = interval
        self.lease = lease
        self.stop_replicas_on_exit = stop_replicas_on_exit
        reconciler.still_leader = self._still_leader
        self._renewed_at: float | None = None
        self._term: int | None = None
        """The lease term the reconciler's memory belongs to."""
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inferd-controller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        log.info("controller started (%s runtime, lease holder %s)", self.reconciler.runtime.name, self.lease.holder)
        while not self._stopping.is_set():
            try:
                self.pass_once()
            except Exception:  # a bad pass (database briefly away) must not end the loop
                log.exception("reconcile pass failed")
            self._stopping.wait(self.interval)

    def pass_once(self) -> bool:
        """One turn of the loop without its wait: hold the lease, then reconcile. Whether it led."""
        if not self._hold():
            return False
        if self.lease.term != self._term:  # someone else may have led since this memory was made
            self.reconciler.invalidate()
            self._term = self.lease.term
        self.reconciler.run_once()
        return True

    def _hold(self) -> bool:
        """Renew the lease once ``RENEW_AFTER`` of its TTL has passed since the last renewal; until
        then the last renewal stands (``is_held``: younger than 80 % of the TTL)."""
        now = time.monotonic()
        fresh = self._renewed_at is not None and now - self._renewed_at < self.lease.ttl_seconds * RENEW_AFTER
        if fresh and self.lease.is_held():
            return True
        self._renewed_at = now
        if self.lease.hold():
            return True
        self._renewed_at = None
        return False

    def _still_leader(self) -> bool:
        """Before each instance a pass acts on: renewed when due, and still the same term."""
        return self._hold() and self.lease.term == self._term

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
        self.reconciler.close()
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
