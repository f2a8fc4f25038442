"""Real PostgreSQL for tests: one admin URL per process, one throwaway database per use.

The suite runs the whole API against PostgreSQL as well as SQLite, because
SQLite hides differences (types, locking, transactional DDL) that production
deployments hit. ``scripts/ensure-postgres.sh`` makes a server available (or
echoes ``INFERD_TEST_POSTGRES_URL``); every test server then gets a database
of its own so tests never see each other's rows.
"""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.pool import NullPool

REPO = Path(__file__).resolve().parents[2]
ENSURE_SCRIPT = REPO / "scripts" / "ensure-postgres.sh"
ENV_VAR = "INFERD_TEST_POSTGRES_URL"
DRIVER = "postgresql+psycopg"
DATABASE_PREFIX = "inferd_test_"

_lock = threading.Lock()
_cached: str | None = None
_failure: RuntimeError | None = None


def postgres_admin_url() -> str:
    """URL of a role that may CREATE DATABASE on a running PostgreSQL server.

    ``INFERD_TEST_POSTGRES_URL`` wins; otherwise the ensure script runs once
    per process (it may start or even install a server, which is slow), and
    both its answer and its failure are cached so every test sees the same.
    """
    global _cached, _failure
    if url := os.environ.get(ENV_VAR):
        return url
    with _lock:
        if _cached is not None:
            return _cached
        if _failure is not None:
            raise _failure
        try:
            result = subprocess.run(
                ["bash", str(ENSURE_SCRIPT)],
                capture_output=True,
                text=True,
                timeout=900,  # an apt-get install on a fresh machine can be slow
                cwd=REPO,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            _failure = RuntimeError(f"{ENSURE_SCRIPT} could not run: {exc}")
            raise _failure from exc
        lines = result.stdout.strip().splitlines()
        if result.returncode != 0 or not lines:
            _failure = RuntimeError(
                f"{ENSURE_SCRIPT} failed (exit {result.returncode}):\n{result.stderr.strip()}"
            )
            raise _failure
        _cached = lines[-1].strip()
        return _cached


def _admin_engine(admin_url: str) -> Engine:
    """Autocommit engine: CREATE/DROP DATABASE cannot run inside a transaction."""
    url = make_url(admin_url).set(drivername=DRIVER)
    return create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@contextmanager
def temporary_database(admin_url: str) -> Iterator[str]:
    """Create ``inferd_test_<12 hex>``, yield its SQLAlchemy URL, drop it afterwards.

    Each test server gets an empty database of its own, so tests are isolated
    and leave nothing behind. The drop uses ``WITH (FORCE)`` because a server
    under test may still hold connections (or have been killed mid-query); it
    runs even when the body raised.
    """
    name = f"{DATABASE_PREFIX}{uuid.uuid4().hex[:12]}"
    engine = _admin_engine(admin_url)
    try:
        with engine.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {_quote_ident(name)}"))
        url: URL = make_url(admin_url).set(drivername=DRIVER, database=name)
        try:
            yield url.render_as_string(hide_password=False)
        finally:
            _drop_database(engine, name)
    finally:
        engine.dispose()


def _drop_database(engine: Engine, name: str) -> None:
    """Drop ``name`` even while something is still connected to it."""
    with engine.connect() as conn:
        version = int(conn.execute(text("SHOW server_version_num")).scalar_one())
        if version >= 130000:
            conn.execute(text(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)"))
        else:  # PostgreSQL < 13 has no FORCE: disconnect everyone first.
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"),
                {"name": name},
            )
            conn.execute(text(f"DROP DATABASE IF EXISTS {_quote_ident(name)}"))
