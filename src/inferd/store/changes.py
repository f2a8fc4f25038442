"""The change feed: which instances changed since a reader last looked.

Database triggers (migration 0007) append the id of an instance to ``instance_changes``
whenever a row that decides how it is served changes: the instance's status, deployments,
version or rate limits, a replica's status or endpoint, a token added or revoked. No write path
can forget to report a change, and a reader (the gateway's route table, the controller) reloads
only those instances instead of everything on a timer. On PostgreSQL the trigger also sends
``NOTIFY inferd_changes`` so that readers wake at once; on SQLite they poll, and a poll that
finds nothing is one indexed ``seq > mark`` query.

The ordering trap (PostgreSQL). ``seq`` is taken from a sequence when the row is *inserted*,
but transactions *commit* in any order: transaction A takes seq 41, B takes 42 and commits, a
reader sees 42 and would remember "everything up to 42 read"; then A commits 41, which that
reader would never ask for. So the reader remembers the holes below its high-water mark (seqs
it has not seen) for ``gap_horizon`` seconds and asks for them again on every poll
(``seq > mark OR seq IN (holes)``). A hole that stays empty was a rolled-back transaction (a
sequence never gives a value back) or a transaction longer than the horizon; for the latter a
slow full reload (``full_reload_interval``) is the backstop. When everything is reloaded the
mark restarts at ``max(seq)``, and the newest ``rebase_window`` seqs that are missing then
become holes too (transactions in flight during the reload). SQLite serialises writers and
``AUTOINCREMENT`` never reuses a value, so it never has holes; the same code serves both.

``poll`` answers ``None`` ("reload everything") on the first call, when the backstop is due,
and whenever the reader may have lost track: too long without a successful poll (rows may have
been pruned meanwhile), too many holes, or after :meth:`ChangeFeed.reset` (the caller could not
act on an answer). Readers prune rows older than ``retention`` now and then; several readers
pruning is harmless, and the newest row is always kept so that ``max(seq)`` stays meaningful.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, delete, func, or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from inferd.store.db import Database
from inferd.store.notify import Listener, can_listen
from inferd.store.tables import InstanceChangeRow, utcnow

log = logging.getLogger("inferd.store.changes")

_MAX_IN = 256
"""Holes asked for by ``IN (…)``; with more, the poll reads the range from the oldest hole."""
_SINCE = select(InstanceChangeRow.seq, InstanceChangeRow.instance_id).where(InstanceChangeRow.seq > bindparam("mark"))


class ChangeFeed:
    """Reader of instance_changes for one process (gateway or controller).

    Used by one thread (``poll`` and ``wait``); :meth:`close` may come from another.
    """

    def __init__(
        self,
        database: Database,
        *,
        listen: bool = True,
        full_reload_interval: float = 60.0,
        retention: float = 600.0,
        gap_horizon: float = 30.0,
        rebase_window: int = 1000,
        max_gaps: int = 10_000,
        prune_interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._database = database
        self._clock = clock
        self._full_reload_interval = full_reload_interval
        self._retention = retention
        self._gap_horizon = gap_horizon
        self._rebase_window = rebase_window
        self._max_gaps = max_gaps
        self._prune_interval = prune_interval
        self._mark: int | None = None
        """Highest seq seen; None: nothing known, the next poll reloads everything."""
        self._gaps: dict[int, float] = {}
        """Seqs below the mark not seen yet -> when first missed (monotonic)."""
        self._next_full = 0.0
        self._synced_at = 0.0
        self._next_prune = clock() + prune_interval
        self._closed = threading.Event()
        self._conn: Connection | None = None
        self._conn_lock = threading.Lock()
        self._listener = Listener(database) if listen and can_listen(database) else None

    @property
    def listening(self) -> bool:
        """Whether NOTIFY can wake :meth:`wait` right now (PostgreSQL, connection up)."""
        return self._listener is not None and self._listener.connected

    @property
    def holes(self) -> int:
        """Seqs below the mark not seen yet, still awaited (PostgreSQL: commits out of order)."""
        return len(self._gaps)

    def reset(self) -> None:
        """Forget everything: the next poll answers None (e.g. a reload the caller could not finish)."""
        self._mark = None

    def poll(self) -> set[str] | None:
        """Instance ids changed since the previous poll; None means 'reload everything' (first poll,
        or track was lost, e.g. rows pruned past our mark)."""
        if self._listener is not None:
            self._listener.drain()  # notifications so far are answered by this poll
        now = self._clock()
        lost = now - self._synced_at > self._retention / 2
        if self._mark is None or now >= self._next_full or lost:
            self._rebase(now)
            return None
        changed = self._advance(self._read(*self._query()), now)
        self._synced_at = now
        if changed is None:
            self._rebase(now)
            return None
        if now >= self._next_prune:
            self._prune(now)
        return changed

    def wait(self, timeout: float) -> None:
        """Block up to timeout: returns early when PostgreSQL NOTIFY says something changed; on SQLite
        just waits."""
        if self._listener is not None and not self._closed.is_set() and self._listener.wait(timeout):
            return
        self._closed.wait(timeout)

    def close(self) -> None:
        self._closed.set()
        if self._listener is not None:
            self._listener.close()
        with self._conn_lock:
            self._drop_connection()

    # -- internals ----------------------------------------------------------------------------
    def _read(self, statement: Any, parameters: dict[str, Any] | None = None) -> Sequence[Any]:
        """Rows of one statement on the feed's own connection, in autocommit: an idle poll is
        one round trip (a pooled session adds a checkout, a ping, BEGIN and COMMIT: 5x the CPU)."""
        with self._conn_lock:
            if self._conn is None:
                self._conn = self._database.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            try:
                return self._conn.execute(statement, parameters).all()
            except Exception:
                self._drop_connection()  # maybe broken: the next poll connects again
                raise

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.invalidate()
                conn.close()
            except Exception:  # a broken connection: nothing more to do
                pass

    def _query(self) -> tuple[Any, dict[str, Any]]:
        assert self._mark is not None
        seq = InstanceChangeRow.seq
        if not self._gaps:
            return _SINCE, {"mark": self._mark}  # built once: an idle poll compiles nothing
        query = select(seq, InstanceChangeRow.instance_id)
        if len(self._gaps) <= _MAX_IN:
            return query.where(or_(seq > self._mark, seq.in_(sorted(self._gaps)))), {}
        return query.where(seq >= min(self._gaps)), {}  # many holes: one range read, filtered below

    def _advance(self, rows: Sequence[Any], now: float) -> set[str] | None:
        """Move the mark over ``rows``, remembering the holes below it; None when the holes to
        remember would be too many (the caller reloads everything instead)."""
        assert self._mark is not None
        mark = self._mark
        changed: set[str] = set()
        above: set[int] = set()
        for seq, instance_id in rows:
            if seq > mark:
                above.add(seq)
                changed.add(instance_id)
            elif self._gaps.pop(seq, None) is not None:  # a hole filled: a late commit
                changed.add(instance_id)
        top = max(above, default=mark)
        if len(self._gaps) + (top - mark - len(above)) > self._max_gaps:
            return None
        for missing in range(mark + 1, top):
            if missing not in above:
                self._gaps[missing] = now
        self._mark = top
        horizon = now - self._gap_horizon
        self._gaps = {s: t for s, t in self._gaps.items() if t >= horizon}
        return changed

    def _rebase(self, now: float) -> None:
        """Start over at the current end of the feed: what the caller loads next is newer."""
        self._mark = None
        if self._listener is not None:
            self._listener.connect()  # listen before reading: no change falls between the two
        seq = InstanceChangeRow.seq
        low, high = self._read(select(func.min(seq), func.max(seq)))[0]
        window_start = max((high or 0) - self._rebase_window, (low or 1) - 1)
        present = {row[0] for row in self._read(select(seq).where(seq > window_start))}
        holes = [s for s in range(window_start + 1, (high or 0) + 1) if s not in present]
        self._gaps = dict.fromkeys(holes[-(self._max_gaps // 2) :] if self._max_gaps > 1 else [], now)
        self._mark = high or 0
        self._next_full = now + self._full_reload_interval
        self._synced_at = now

    def _prune(self, now: float) -> None:
        self._next_prune = now + self._prune_interval
        try:
            with self._database.session() as session:
                removed = prune(session, self._retention)
        except Exception as exc:  # e.g. a read-only database role: readers need not prune
            log.debug("pruning instance_changes failed: %s", exc)
            return
        if removed:
            log.debug("pruned %d rows of instance_changes", removed)


def prune(session: Session, older_than_seconds: float) -> int:
    """Delete change rows older than that (never the newest); how many went. Checks with a read
    first, so that a prune with nothing to do takes no write lock."""
    cutoff = utcnow() - timedelta(seconds=older_than_seconds)
    seq, changed_at = InstanceChangeRow.seq, InstanceChangeRow.changed_at
    if session.execute(select(seq).where(changed_at < cutoff).limit(1)).first() is None:
        return 0
    newest = session.execute(select(func.max(seq))).scalar_one()
    result = session.execute(delete(InstanceChangeRow).where(changed_at < cutoff, seq < newest))
    return int(getattr(result, "rowcount", 0) or 0)
