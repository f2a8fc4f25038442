"""The PostgreSQL test helpers really create, hand out and drop a database."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from tests.support.postgres import postgres_admin_url, temporary_database


def _database_exists(admin_url: str, name: str) -> bool:
    engine = create_engine(admin_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return bool(
                conn.execute(
                    text("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = :name)"),
                    {"name": name},
                ).scalar_one()
            )
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_temporary_database_is_usable_then_dropped() -> None:
    admin_url = postgres_admin_url()
    assert postgres_admin_url() == admin_url  # cached, stable

    with temporary_database(admin_url) as url:
        parsed = make_url(url)
        name = parsed.database
        assert parsed.drivername == "postgresql+psycopg"
        assert name is not None and name.startswith("inferd_test_") and len(name) == len("inferd_test_") + 12
        assert _database_exists(admin_url, name)

        # Keep a connection open across the exit to prove the FORCE drop works.
        engine = create_engine(url)
        conn = engine.connect()
        conn.execute(text("CREATE TABLE thing (id integer PRIMARY KEY, label text NOT NULL)"))
        conn.execute(text("INSERT INTO thing (id, label) VALUES (1, 'hello')"))
        conn.commit()
        assert conn.execute(text("SELECT label FROM thing WHERE id = 1")).scalar_one() == "hello"
        assert conn.execute(text("SELECT current_database()")).scalar_one() == name

    assert not _database_exists(admin_url, name)
    conn.invalidate()
    engine.dispose()


@pytest.mark.postgres
def test_temporary_database_is_dropped_when_the_body_raises() -> None:
    admin_url = postgres_admin_url()
    name = None
    with pytest.raises(RuntimeError, match="boom"):
        with temporary_database(admin_url) as url:
            name = make_url(url).database
            raise RuntimeError("boom")
    assert name is not None
    assert not _database_exists(admin_url, name)
