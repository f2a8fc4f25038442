"""Fixtures: real inferd servers on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from inferd.store.db import Database
from inferd.store.migrate import upgrade
from tests.support.server import Server

BACKENDS = ["sqlite", "postgres"]


@contextmanager
def database_url(backend: str, directory: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{directory / 'inferd.db'}"
    else:
        from tests.support.postgres import postgres_admin_url, temporary_database

        with temporary_database(postgres_admin_url()) as url:
            yield url


@contextmanager
def migrated_database(url: str) -> Iterator[Database]:
    """The store at ``url``, migrated to the newest schema, disposed of afterwards."""
    upgrade(url)
    database = Database(url)
    try:
        yield database
    finally:
        database.dispose()


@contextmanager
def running_server(
    backend: str, directory: Path, *, controller: bool = False, gateway: bool = False, **env: str
) -> Iterator[Server]:
    directory.mkdir(parents=True, exist_ok=True)
    # Test servers are shared by many tests of one team: the default instance quota (20) would
    # trip tests about other things. Quota tests set their own limits.
    env = {"INFERD_TEAM_MAX_INSTANCES": "1000", **env}
    with database_url(backend, directory) as url:
        server = Server(data_dir=directory, database_url=url, env=env, controller=controller, gateway=gateway).start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One long-lived server per backend, shared by tests that do not restart it."""
    with running_server(backend, tmp_path_factory.mktemp(f"inferd-{backend}")) as srv:
        yield srv


@pytest.fixture
def fresh_server(backend: str, tmp_path: Path) -> Iterator[Server]:
    """A server of one's own, for tests that restart it or count everything in it."""
    with running_server(backend, tmp_path / "inferd") as srv:
        yield srv
