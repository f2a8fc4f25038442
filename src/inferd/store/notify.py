"""Waking change-feed readers at once on PostgreSQL: a dedicated connection that LISTENs on the
channel the triggers of migration 0007 NOTIFY. Only a speed-up: the poll finds every change
either way (:mod:`inferd.store.changes`).
"""

from __future__ import annotations

import logging
import select as io_select
import threading
import time
from typing import Any

from sqlalchemy.engine import make_url

from inferd.store.db import Database

log = logging.getLogger("inferd.store.changes")

CHANNEL = "inferd_changes"
"""The PostgreSQL NOTIFY channel the triggers send an instance id on."""
_LISTEN_RETRY = 5.0
"""Seconds between attempts to (re)open the LISTEN connection."""


def can_listen(database: Database) -> bool:
    dialect = database.engine.dialect
    return dialect.name == "postgresql" and dialect.driver == "psycopg"


class Listener:
    """A dedicated autocommit psycopg connection that LISTENs on :data:`CHANNEL`.

    If it breaks, the feed carries on by polling and it reconnects now and then: a notification
    only wakes the reader early, the poll finds the change either way.
    """

    def __init__(self, database: Database) -> None:
        url = make_url(database.url).set(drivername="postgresql")
        self._conninfo = url.render_as_string(hide_password=False)
        self._conn: Any = None
        self._next_attempt = 0.0
        self._lock = threading.Lock()
        self._closed = False
        self._failing = False

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def connect(self) -> None:
        if self._conn is not None or self._closed or time.monotonic() < self._next_attempt:
            return
        import psycopg

        try:
            conn = psycopg.connect(  # keepalives: a peer gone silently breaks the connection in ~25 s
                self._conninfo, autocommit=True, connect_timeout=5,
                keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3,
            )
            conn.execute(f"LISTEN {CHANNEL}")
        except Exception as exc:
            self._next_attempt = time.monotonic() + _LISTEN_RETRY
            if not self._failing:
                log.warning("cannot LISTEN for changes, polling instead: %s", exc)
            self._failing = True
            return
        if self._failing:
            log.info("listening for changes again")
        self._failing = False
        self._conn = conn

    def wait(self, timeout: float) -> bool:
        """Whether it waited (up to ``timeout``, less when notified); False: not connected.

        One ``select`` on the connection's socket: psycopg's own ``notifies(timeout=…)`` wakes
        every 0.1 s, which costs more than everything else an idle gateway does."""
        self.connect()
        with self._lock:
            if self._conn is None or self._closed:
                return False
            try:
                if not self._consume():
                    readable, _, _ = io_select.select([self._conn.fileno()], [], [], timeout)
                    if readable:
                        self._consume()
            except Exception as exc:
                self._broken(exc)
                return False
            if self._closed:  # close() came while we waited
                self._close_connection()
        return True

    def _consume(self) -> bool:
        """Read what has arrived without blocking; whether it held a notification."""
        return any(True for _ in self._conn.notifies(timeout=0))

    def drain(self) -> None:
        """Consume notifications already received (the poll that follows answers them)."""
        with self._lock:
            if self._conn is None or self._closed:
                return
            try:
                self._consume()
            except Exception as exc:
                self._broken(exc)

    def _broken(self, exc: Exception) -> None:
        log.warning("the LISTEN connection broke, polling until it is back: %s", exc)
        self._failing = True
        self._next_attempt = time.monotonic() + _LISTEN_RETRY
        self._close_connection()

    def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # closing a broken connection: nothing more to do
                pass

    def close(self) -> None:
        self._closed = True
        if self._lock.acquire(timeout=0.05):  # else the waiting thread sees _closed soon enough
            try:
                self._close_connection()
            finally:
                self._lock.release()
