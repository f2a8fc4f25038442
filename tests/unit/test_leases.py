"""The lease primitive on a real SQLite database: semantics, then a many-thread race."""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from inferd.controller.lease import LeaderLease
from inferd.store import leases
from inferd.store.db import Database
from inferd.store.leases import LeaseView
from inferd.store.tables import LeaseRow, utcnow
from tests.conftest import migrated_database
from tests.support.waiting import wait_for

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    with migrated_database(f"sqlite:///{tmp_path / 'inferd.db'}") as db:
        yield db


def acquire(db: Database, holder: str, now: datetime, ttl: float = 10, name: str = "controller") -> LeaseView | None:
    with db.session() as session:
        return leases.try_acquire(session, name, holder, ttl, now)


def current(db: Database, name: str = "controller") -> LeaseView | None:
    with db.session() as session:
        return leases.current(session, name)


def release(db: Database, holder: str, name: str = "controller") -> bool:
    with db.session() as session:
        return leases.release(session, name, holder)


# -- store functions --------------------------------------------------------------------------
def test_migration_creates_a_free_controller_lease(database: Database) -> None:
    assert current(database) == LeaseView("controller", None, 0, None, None, None)
    assert current(database, "nothing") is None


def test_acquire_renew_steal_release(database: Database) -> None:
    first = acquire(database, "a", at(0))
    assert first == LeaseView("controller", "a", 1, at(10), at(0), at(0))

    renewed = acquire(database, "a", at(4))  # renewal: only expires_at and renewed_at move
    assert renewed == LeaseView("controller", "a", 1, at(14), at(0), at(4))

    assert acquire(database, "b", at(13)) is None  # held, unexpired
    assert acquire(database, "b", at(14)) is None  # expires_at < now is strict
    assert current(database) == renewed

    stolen = acquire(database, "b", at(14.5))
    assert stolen == LeaseView("controller", "b", 2, at(24.5), at(14.5), at(14.5))
    assert acquire(database, "a", at(15)) is None

    assert release(database, "a") is False  # not a's any more
    assert current(database) == stolen
    assert release(database, "b") is True
    assert current(database) == LeaseView("controller", None, 2, None, at(14.5), at(14.5))
    assert release(database, "b") is False

    again = acquire(database, "a", at(16))  # free at once after release, well before 24.5
    assert again is not None and (again.holder, again.term, again.acquired_at) == ("a", 3, at(16))


def test_the_same_holder_reacquiring_an_expired_lease_keeps_its_term(database: Database) -> None:
    acquire(database, "a", at(0))
    late = acquire(database, "a", at(60))  # nobody took it meanwhile: still term 1
    assert late is not None and (late.term, late.acquired_at, late.expires_at) == (1, at(0), at(70))


def test_a_late_renewal_never_shortens_the_lease(database: Database) -> None:
    acquire(database, "a", at(5))
    stale = acquire(database, "a", at(1))  # a call that took its clock reading earlier
    assert stale is not None and stale.expires_at == at(15)
    assert acquire(database, "b", at(12)) is None


def test_a_missing_lease_row_is_created_by_the_first_caller(database: Database) -> None:
    created = acquire(database, "a", at(0), name="other")
    assert created == LeaseView("other", "a", 1, at(10), at(0), at(0))
    assert acquire(database, "b", at(1), name="other") is None
    assert acquire(database, "b", at(11), name="other") is not None
    assert current(database, "other") == LeaseView("other", "b", 2, at(21), at(11), at(11))


def test_views_are_frozen_snapshots(database: Database) -> None:
    view = acquire(database, "a", at(0))
    assert type(view) is LeaseView and not isinstance(view, LeaseRow)
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.holder = "b"  # type: ignore[misc]


def test_naive_datetimes_and_bad_ttls_are_refused(database: Database) -> None:
    with pytest.raises(ValueError):
        acquire(database, "a", datetime(2026, 1, 1))
    with pytest.raises(ValueError):
        acquire(database, "a", at(0), ttl=0)


# -- the race ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Win:
    holder: str
    now: datetime
    view: LeaseView
    returned: datetime  # wall clock once the caller knew it had won


def race(
    db: Database, holders: list[str], threads_per_holder: int, calls: int, ttl: float, name: str = "controller"
) -> list[Win]:
    """Every thread calls try_acquire ``calls`` times as fast as it can; the wins, in order."""
    wins: list[Win] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(len(holders) * threads_per_holder)

    def work(holder: str) -> None:
        try:
            start.wait()
            for _ in range(calls):
                now = utcnow()
                with db.session() as session:
                    view = leases.try_acquire(session, name, holder, ttl, now)
                if view is not None:
                    win = Win(holder, now, view, utcnow())
                    with lock:
                        wins.append(win)
        except BaseException as exc:  # reported by the test, not lost in a thread
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=(holder,), name=f"race-{holder}-{i}")
        for holder in holders
        for i in range(threads_per_holder)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "race threads did not finish"
    assert not errors, errors
    return wins


def check_race(wins: list[Win], holders: list[str]) -> None:
    """Never two holders with an unexpired lease at once, in database time and in real time."""
    assert wins, "nobody ever won"
    for win in wins:
        assert win.view.holder == win.holder
        assert win.view.expires_at is not None and win.view.expires_at > win.now
    # One holder per term, and terms only grow with each holder change.
    holder_of: dict[int, str] = {}
    for win in wins:
        assert holder_of.setdefault(win.view.term, win.holder) == win.holder, f"term {win.view.term} had two holders"
    # Every promise of a term ends before the next term began (its acquired_at is its takeover ``now``).
    terms = sorted(holder_of)
    for earlier, later in zip(terms, terms[1:], strict=False):
        last_expiry = max(w.view.expires_at for w in wins if w.view.term == earlier)  # type: ignore[type-var]
        next_start = {w.view.acquired_at for w in wins if w.view.term == later}
        assert len(next_start) == 1
        (started,) = next_start
        assert started is not None and last_expiry < started, (earlier, later, last_expiry, started)
    # In real time: from when a caller learnt it had won until its expiry, no one else had.
    windows = sorted((w.returned, w.view.expires_at, w.holder) for w in wins if w.returned < w.view.expires_at)  # type: ignore[operator]
    latest: dict[str, datetime] = {}
    for begin, end, holder in windows:
        for other, other_end in latest.items():
            assert other == holder or other_end <= begin, f"{holder} and {other} both held the lease at {begin}"
        latest[holder] = max(latest.get(holder, end), end)
    assert set(holder_of.values()) <= set(holders)


def test_two_holders_racing_from_many_threads_never_overlap(database: Database) -> None:
    holders = ["a", "b"]
    wins = race(database, holders, threads_per_holder=8, calls=50, ttl=0.002)
    check_race(wins, holders)
    assert len({w.view.term for w in wins}) > 1, "the lease never changed hands: the race proved nothing"
    final = current(database)
    assert final is not None and final.term == max(w.view.term for w in wins)


def test_racing_to_create_a_missing_lease_row(database: Database) -> None:
    wins = race(database, ["a", "b"], threads_per_holder=8, calls=5, ttl=60, name="other")
    check_race(wins, ["a", "b"])
    assert {w.view.term for w in wins} == {1}  # one inserter won; the others were told no, none failed


# -- LeaderLease ------------------------------------------------------------------------------
def test_leader_lease_hands_over_on_release(database: Database, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="inferd.controller.lease")
    a = LeaderLease(database, holder="a", ttl_seconds=30)
    b = LeaderLease(database, holder="b", ttl_seconds=30)
    assert not a.is_held() and a.term == 0

    assert a.hold() and a.is_held() and a.term == 1
    assert a.hold() and a.term == 1  # a renewal: no new term, no second log line
    assert not b.hold() and not b.is_held()
    assert [r.getMessage() for r in caplog.records] == ["became leader (term 1)"]

    a.release()
    assert not a.is_held()
    assert b.hold() and b.is_held() and b.term == 2
    assert not a.hold()
    assert "became leader (term 2)" in caplog.messages


def test_leader_lease_stops_acting_before_another_may_take_over(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="inferd.controller.lease")
    a = LeaderLease(database, holder="a", ttl_seconds=0.5)
    b = LeaderLease(database, holder="b", ttl_seconds=0.5)
    assert a.hold()
    wait_for(lambda: not a.is_held(), timeout=10, interval=0.01, what="a to stop acting")
    wait_for(b.hold, timeout=10, interval=0.01, what="b to take over the expired lease")
    assert not a.is_held() and b.is_held() and b.term == 2
    assert not a.hold() and a.term == 1
    assert "lost leadership" in caplog.text


def test_leader_lease_survives_database_errors(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broken = Database(f"sqlite:///{tmp_path / 'missing' / 'inferd.db'}")  # directory does not exist
    try:
        lease = LeaderLease(broken, holder="a")
        with caplog.at_level(logging.WARNING, logger="inferd.controller.lease"):
            assert lease.hold() is False
            lease.release()
        assert not lease.is_held()
        assert "could not hold" in caplog.text and "could not release" in caplog.text
    finally:
        broken.dispose()


def test_default_holder_names_the_process() -> None:
    database = Database("sqlite://")
    try:
        first, second = LeaderLease(database), LeaderLease(database)
        host, pid, token = first.holder.rsplit(":", 2)
        assert (host, pid) == (socket.gethostname(), str(os.getpid())) and len(token) == 8
        assert first.holder != second.holder
    finally:
        database.dispose()
