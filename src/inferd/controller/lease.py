"""Leadership among controllers: whoever holds the ``controller`` lease row acts.

Any number of ``inferd controller`` processes may share one database; each calls ``hold()``
every pass (well within the TTL) and acts only while ``is_held()``. A leader that cannot
renew (database away, process paused) stops acting on its own, ``ttl/5`` before the lease
expires, so it is quiet before another controller may take over.

Clock assumption: expiry is written and compared in each controller's *wall clock* (UTC),
so the controllers' clocks must agree to well under the TTL margin (``ttl/5``, one second
with the default 5 s TTL); run NTP. ``is_held()`` itself uses ``time.monotonic()``, so a
clock step on the leader alone does not extend its own belief.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time

from inferd.store import leases
from inferd.store.db import Database
from inferd.store.tables import utcnow

log = logging.getLogger("inferd.controller.lease")


def default_holder() -> str:
    """Unique per process, readable by an operator: ``hostname:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class LeaderLease:
    """This process's claim on a named lease; never raises on database errors."""

    def __init__(
        self, database: Database, holder: str | None = None, ttl_seconds: float = 5.0, name: str = "controller"
    ) -> None:
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        self.database = database
        self.name = name
        self.ttl_seconds = ttl_seconds
        self._holder = holder or default_holder()
        self._lock = threading.Lock()
        self._leader = False
        self._term = 0
        self._held_since: float | None = None  # monotonic time *before* the last successful hold

    @property
    def holder(self) -> str:
        return self._holder

    @property
    def term(self) -> int:
        """Term of the lease this process last held (0: never held); a fencing number."""
        return self._term

    def hold(self) -> bool:
        """Acquire or renew; True if this process is the leader now."""
        with self._lock:
            # Taken before asking: the lease runs from the ``now`` we send, not from the answer.
            started = time.monotonic()
            try:
                with self.database.session() as session:
                    view = leases.try_acquire(session, self.name, self._holder, self.ttl_seconds, utcnow())
            except Exception as exc:  # database away: not leader, but the loop goes on
                log.warning("could not hold the %s lease: %s", self.name, exc)
                self._set_leader(False, "database error")
                return False
            if view is None:  # someone else holds it: stop acting now, not at the margin
                self._held_since = None
                self._set_leader(False, "held by another controller")
                return False
            if not self._leader or view.term != self._term:
                log.info("became leader (term %d)", view.term)
            self._leader, self._term, self._held_since = True, view.term, started
            return True

    def is_held(self) -> bool:
        """True while the last successful hold is recent enough to act on (ttl minus ttl/5).

        A database error in ``hold()`` does not end this early (the lease may still be ours);
        finding another holder does.
        """
        held_since = self._held_since
        if held_since is None:
            return False
        return time.monotonic() - held_since < self.ttl_seconds * 0.8

    def release(self) -> None:
        """Give the lease up at once (clean shutdown), so the next controller need not wait."""
        with self._lock:
            was_leader = self._leader
            self._leader, self._held_since = False, None
            try:
                with self.database.session() as session:
                    released = leases.release(session, self.name, self._holder)
            except Exception as exc:
                log.warning("could not release the %s lease: %s", self.name, exc)
                return
            if released and was_leader:
                log.info("released leadership (term %d)", self._term)

    def _set_leader(self, leader: bool, reason: str) -> None:
        if self._leader and not leader:
            log.info("lost leadership (term %d): %s", self._term, reason)
        self._leader = leader
