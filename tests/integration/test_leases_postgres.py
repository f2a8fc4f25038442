"""The lease race on real PostgreSQL: row locks and READ COMMITTED re-checks, not SQLite's
single writer, are what keep two controllers from both leading here."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from inferd.store.db import Database
from tests.conftest import migrated_database
from tests.support.postgres import postgres_admin_url, temporary_database
from tests.unit.test_leases import check_race, race

pytestmark = pytest.mark.postgres


@pytest.fixture
def database() -> Iterator[Database]:
    with temporary_database(postgres_admin_url()) as url, migrated_database(url) as db:
        yield db


def test_two_holders_racing_from_many_threads_never_overlap(database: Database) -> None:
    holders = ["a", "b"]
    # PostgreSQL round trips are slower than SQLite's: a longer TTL still changes hands often.
    wins = race(database, holders, threads_per_holder=8, calls=50, ttl=0.005)
    check_race(wins, holders)
    assert len({w.view.term for w in wins}) > 1, "the lease never changed hands: the race proved nothing"


def test_racing_to_create_a_missing_lease_row(database: Database) -> None:
    """Concurrent first INSERTs of one row: one wins, the others get no lease and no error."""
    wins = race(database, ["a", "b"], threads_per_holder=8, calls=5, ttl=60, name="other")
    check_race(wins, ["a", "b"])
    assert {w.view.term for w in wins} == {1}
