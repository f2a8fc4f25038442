"""The change feed (inferd.store.changes) on real SQLite and PostgreSQL databases migrated with
the real migrations: the triggers report what routing depends on and nothing else, the first
poll reloads everything, a transaction that commits after a later one is not missed
(PostgreSQL), holes and the backstop expire on the feed's clock, old rows are pruned, NOTIFY
wakes a waiting reader; and a route table kept current by the feed equals a full load.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import delete, func, select, update

from inferd.gateway.routes import RouteTable, Snapshot, load_snapshot, route_table
from inferd.store.changes import ChangeFeed, prune
from inferd.store.db import Database
from inferd.store.tables import (
    AcceleratorRow,
    InstanceChangeRow,
    InstanceRow,
    InstanceTokenRow,
    ReplicaRow,
    utcnow,
)
from tests.conftest import database_url, migrated_database
from tests.support import specs
from tests.support.rows import new_instance


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """One migrated database per backend; every test makes its own instances."""
    with database_url(request.param, tmp_path_factory.mktemp(f"feed-{request.param}")) as url, migrated_database(url) as db:
        yield db


@pytest.fixture(scope="module")
def postgres_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """For what only PostgreSQL can show: commits out of seq order, and seqs that are never used
    (SQLite serialises writers and gives a rolled-back seq out again)."""
    with database_url("postgres", tmp_path_factory.mktemp("feed-pg")) as url, migrated_database(url) as db:
        yield db


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def postgres(database: Database) -> bool:
    return database.engine.dialect.name == "postgresql"


# -- rows as the API and the controller write them ---------------------------------------------
def new_token(database: Database, instance_id: str) -> str:
    token_id = str(uuid.uuid4())
    with database.session() as session:
        session.add(InstanceTokenRow(id=token_id, instance_id=instance_id, name="t", token_hash=uuid.uuid4().hex * 2))
    return token_id


def new_replica(database: Database, instance_id: str, *, status: str = "starting", endpoint: str | None = None) -> str:
    replica_id = str(uuid.uuid4())
    with database.session() as session:
        accelerator = AcceleratorRow(id=str(uuid.uuid4()), instance_id=instance_id, model_id=str(uuid.uuid4()),
                                     slug=specs.SLUG, name=specs.SLUG, role="prefill_decode", status="active")
        session.add(accelerator)
        session.flush()
        session.add(ReplicaRow(id=replica_id, instance_id=instance_id, accelerator_id=accelerator.id,
                               model_id=accelerator.model_id, model_slug=specs.MODEL, accelerator_slug=specs.SLUG,
                               template="t", engine="llamacpp", status=status, endpoint=endpoint))
    return replica_id


def set_replica(database: Database, replica_id: str, **values: object) -> None:
    with database.session() as session:
        session.execute(update(ReplicaRow).where(ReplicaRow.id == replica_id).values(**values))


def set_instance(database: Database, instance_id: str, **values: object) -> None:
    """Through the ORM, as the API and controller do (the version is bumped)."""
    with database.session() as session:
        row = session.get(InstanceRow, instance_id)
        assert row is not None
        for key, value in values.items():
            setattr(row, key, value)


def started_feed(database: Database, **options: object) -> ChangeFeed:
    feed = ChangeFeed(database, **options)  # type: ignore[arg-type]
    assert feed.poll() is None  # the first poll: reload everything
    assert feed.poll() == set()
    return feed


# -- what the triggers report ------------------------------------------------------------------
def test_the_triggers_report_what_routing_depends_on_and_nothing_else(database: Database) -> None:
    feed = started_feed(database)
    try:
        instance = new_instance(database)
        assert feed.poll() == {instance}
        set_instance(database, instance, status="active", live_deployment_id=str(uuid.uuid4()))
        assert feed.poll() == {instance}
        set_instance(database, instance, token_rpm=60, token_tpm=6000)
        assert feed.poll() == {instance}
        with database.session() as session:  # a raw update of nothing routing reads: silent
            session.execute(update(InstanceRow).where(InstanceRow.id == instance).values(status_reason="why"))
            session.execute(update(InstanceRow).where(InstanceRow.id == instance).values(status="active"))
        assert feed.poll() == set()
        token = new_token(database, instance)
        assert feed.poll() == {instance}
        replica = new_replica(database, instance)
        assert feed.poll() == {instance}
        set_replica(database, replica, phase="starting", detail="42%", restarts=1)
        assert feed.poll() == set()
        set_replica(database, replica, status="ready", endpoint="http://127.0.0.1:1")
        assert feed.poll() == {instance}
        set_replica(database, replica, endpoint="http://127.0.0.1:1")
        assert feed.poll() == set()
        other = new_instance(database)
        with database.session() as session:
            session.execute(delete(InstanceTokenRow).where(InstanceTokenRow.id == token))
        assert feed.poll() == {instance, other}
        with database.session() as session:  # cascades to tokens, replicas: still reported
            session.execute(delete(InstanceRow).where(InstanceRow.id == instance))
        assert feed.poll() == {instance}
        assert feed.poll() == set()
    finally:
        feed.close()


def test_first_poll_reset_and_backstop_reload_everything(database: Database) -> None:
    clock = Clock()
    feed = started_feed(database, clock=clock, full_reload_interval=60, retention=600)
    try:
        instance = new_instance(database)
        clock.now += 59
        assert feed.poll() == {instance}
        clock.now += 1.5
        assert feed.poll() is None  # the backstop
        assert feed.poll() == set()
        feed.reset()  # e.g. the caller failed to load what the feed reported
        assert feed.poll() is None
        clock.now += 301  # longer than half the retention without a poll: rows may be gone
        assert feed.poll() is None
        assert feed.poll() == set()
    finally:
        feed.close()


# -- the ordering trap -------------------------------------------------------------------------
@pytest.mark.postgres
def test_a_change_committed_after_a_later_one_is_not_missed(postgres_database: Database) -> None:
    """Transaction A takes a seq, B takes the next and commits, the reader moves past both;
    then A commits: the reader still reports A's instance (PostgreSQL; SQLite's writers are
    serialised, so there the second writer waits and the order is the commit order)."""
    database = postgres_database
    first, second = new_instance(database), new_instance(database)
    feed = started_feed(database)
    try:
        with database.engine.connect() as late:
            with late.begin():
                late.execute(InstanceTokenRow.__table__.insert().values(  # type: ignore[attr-defined]
                    id=str(uuid.uuid4()), instance_id=first, name="late", token_hash=uuid.uuid4().hex * 2,
                    created_at=utcnow()))
                new_token(database, second)  # another connection, committed now
                assert feed.poll() == {second}
                assert feed.holes == 1  # the seq of the transaction still open
                assert feed.poll() == set()
            assert feed.poll() == {first}  # committed after the mark moved past it
            assert feed.holes == 0
    finally:
        feed.close()


@pytest.mark.postgres
def test_a_transaction_in_flight_during_a_full_reload_is_not_missed(postgres_database: Database) -> None:
    """The same trap at the start: the full load reads up to max(seq), which a transaction still
    open may lie below; the feed takes the missing seqs of its last window as holes."""
    database = postgres_database
    first, second = new_instance(database), new_instance(database)
    with database.engine.connect() as late:
        with late.begin():
            late.execute(InstanceTokenRow.__table__.insert().values(  # type: ignore[attr-defined]
                id=str(uuid.uuid4()), instance_id=first, name="late", token_hash=uuid.uuid4().hex * 2,
                created_at=utcnow()))
            new_token(database, second)
            feed = ChangeFeed(database)
            assert feed.poll() is None and feed.holes >= 1
        try:
            assert feed.poll() == {first}
        finally:
            feed.close()


@pytest.mark.postgres
def test_holes_of_rolled_back_transactions_expire(postgres_database: Database) -> None:
    database = postgres_database
    instance = new_instance(database)
    clock = Clock()
    feed = started_feed(database, clock=clock, gap_horizon=30)
    try:
        with database.engine.connect() as connection, connection.begin() as transaction:
            connection.execute(update(InstanceRow).where(InstanceRow.id == instance).values(status="error"))
            transaction.rollback()
        new_token(database, instance)
        assert feed.poll() == {instance}
        assert feed.holes == 1
        clock.now += 29
        assert feed.poll() == set() and feed.holes == 1
        clock.now += 2
        assert feed.poll() == set() and feed.holes == 0
    finally:
        feed.close()


@pytest.mark.postgres
def test_too_many_holes_reload_everything(postgres_database: Database) -> None:
    database = postgres_database
    instance = new_instance(database)
    feed = started_feed(database, max_gaps=3)
    try:
        for _ in range(4):
            with database.engine.connect() as connection, connection.begin() as transaction:
                connection.execute(update(InstanceRow).where(InstanceRow.id == instance).values(status="error"))
                transaction.rollback()
        new_token(database, instance)
        assert feed.poll() is None
        assert feed.poll() == set()
    finally:
        feed.close()


# -- pruning -----------------------------------------------------------------------------------
def test_prune_removes_old_rows_but_never_the_newest(database: Database) -> None:
    with database.session() as session:
        session.execute(delete(InstanceChangeRow))
        old = utcnow() - timedelta(minutes=20)
        for minutes in (0, 1, 2):
            session.add(InstanceChangeRow(instance_id=str(uuid.uuid4()), changed_at=old + timedelta(minutes=minutes)))
        session.add(InstanceChangeRow(instance_id=str(uuid.uuid4()), changed_at=utcnow()))
    with database.session() as session:
        assert prune(session, 600) == 3
    with database.session() as session:
        assert prune(session, 600) == 0
        assert session.scalar(select(func.count()).select_from(InstanceChangeRow)) == 1
        session.execute(update(InstanceChangeRow).values(changed_at=old))
    with database.session() as session:  # the newest row stays even when old: max(seq) holds
        assert prune(session, 600) == 0
        newest = session.scalar(select(func.max(InstanceChangeRow.seq)))
        session.execute(delete(InstanceChangeRow))
    instance = new_instance(database)
    with database.session() as session:  # a seq is never given out twice, even on SQLite
        assert session.scalar(select(InstanceChangeRow.seq).where(InstanceChangeRow.instance_id == instance)) > newest


# -- LISTEN / NOTIFY ---------------------------------------------------------------------------
def test_notify_wakes_a_waiting_reader(database: Database) -> None:
    feed = started_feed(database)
    try:
        assert feed.listening == postgres(database)
        if not feed.listening:
            started = time.monotonic()
            feed.wait(0.05)  # SQLite: waits the whole time
            assert time.monotonic() - started >= 0.04
            return
        writer = threading.Thread(target=new_instance, args=(database,))
        started = time.monotonic()
        writer.start()
        feed.wait(30)
        writer.join()
        assert time.monotonic() - started < 10
        assert len(feed.poll() or ()) == 1
    finally:
        feed.close()


# -- the route table kept current by the feed --------------------------------------------------
def comparable(snapshot: Snapshot) -> Snapshot:
    return replace(snapshot, loaded_at=0.0)


def test_a_route_table_kept_current_by_the_feed_equals_a_full_load(database: Database) -> None:
    """Random changes of every kind; after each round one cycle of the table reads only what
    changed, and its snapshot equals a full load of the store."""
    seeded = random.Random(7)
    table: RouteTable = route_table(database, 3600, full_reload_interval=3600)
    table.refresh()
    instances = [new_instance(database, public=seeded.random() < 0.5) for _ in range(6)]
    tokens: list[tuple[str, str]] = []
    replicas: list[str] = []
    try:
        for _ in range(12):
            for _ in range(seeded.randint(1, 4)):
                what = seeded.choice(["token", "revoke", "replica", "ready", "gone", "limits", "status", "new"])
                instance = seeded.choice(instances)
                if what == "token":
                    tokens.append((instance, new_token(database, instance)))
                elif what == "revoke" and tokens:
                    _, token = tokens.pop(seeded.randrange(len(tokens)))
                    with database.session() as session:
                        session.execute(delete(InstanceTokenRow).where(InstanceTokenRow.id == token))
                elif what == "replica":
                    replicas.append(new_replica(database, instance, status="ready", endpoint=f"http://127.0.0.1:{seeded.randint(1, 9)}"))
                elif what == "ready" and replicas:
                    set_replica(database, seeded.choice(replicas), status=seeded.choice(["ready", "draining", "failed"]))
                elif what == "gone" and replicas:
                    with database.session() as session:
                        session.execute(delete(ReplicaRow).where(ReplicaRow.id == replicas.pop()))
                elif what == "limits":
                    set_instance(database, instance, token_rpm=seeded.choice([None, 10, 60]), token_tpm=seeded.choice([None, 1000]))
                elif what == "status":
                    set_instance(database, instance, status=seeded.choice(["active", "deleting", "error"]))
                elif what == "new":
                    instances.append(new_instance(database))
            table.refresh()
            assert comparable(table.snapshot) == comparable(load_snapshot(database))
    finally:
        table.stop()
