"""Storage mode detection on the real PostgreSQL server.

No registry ships a native TimescaleDB, so the case of issue 13 (the package installed but not
preloaded: ``CREATE EXTENSION`` makes the server close the connection) is played with the
closest stand-in: the server's answers about the extension are given, and the probe runs a
statement that makes the real server close the probe's connection. The migration must go on
in postgres mode on its own connection and say how to enable TimescaleDB.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import TupleRow

from qilu.errors import ConfigError
from qilu.settings import DatabaseSettings, Settings, StorageMode
from storage import migrate
from storage import mode as modes
from storage.db import connect

pytestmark = pytest.mark.integration
CLOSES_THE_CONNECTION = "SELECT pg_terminate_backend(pg_backend_pid())"
READY = modes.TimescaleFacts(installed=False, available=True, preloaded=True)


@pytest.fixture
def fresh_db(base_settings: Settings, services: object) -> Iterator[DatabaseSettings]:
    """A database nobody has migrated yet."""
    del services
    name = f"qilu_t_{uuid.uuid4().hex[:10]}"
    admin = base_settings.db
    with connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield admin.model_copy(update={"name": name})
    with connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _closing_probe(conn: psycopg.Connection[TupleRow]) -> str | None:
    return modes.probe_on_own_connection(conn, CLOSES_THE_CONNECTION)


def test_a_probe_whose_connection_the_server_closes_leaves_the_migration_connection_working(
    fresh_db: DatabaseSettings, caplog: pytest.LogCaptureFixture
) -> None:
    with connect(fresh_db) as conn:
        with caplog.at_level(logging.WARNING, logger="storage.mode"), conn.transaction():
            mode = modes.resolve(conn, StorageMode.AUTO, facts=READY, probe=_closing_probe)
            assert mode is StorageMode.POSTGRES
            assert conn.execute("SELECT 1").fetchone() == (1,)  # still open, same transaction
        # the probe's connection was closed by the server; the migration goes on on this one
        assert not conn.closed
        result = migrate.run(conn, StorageMode.AUTO)
        assert result.mode is StorageMode.POSTGRES
        assert result.applied
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "terminating connection" in warning
    assert "shared_preload_libraries = 'timescaledb'" in warning
    assert "using postgres mode" in warning


def test_forced_timescale_refuses_with_the_reason_and_the_fix(fresh_db: DatabaseSettings) -> None:
    with connect(fresh_db) as conn:
        with pytest.raises(ConfigError) as exc, conn.transaction():
            modes.resolve(conn, StorageMode.TIMESCALE, facts=READY, probe=_closing_probe)
        assert exc.value.key == "db.mode"
        assert "terminating connection" in exc.value.problem
        assert "shared_preload_libraries" in exc.value.problem
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_probe_that_works_leaves_nothing_behind(fresh_db: DatabaseSettings) -> None:
    with connect(fresh_db) as conn:
        assert modes.probe_on_own_connection(conn, "CREATE TABLE probe_left (x int)") is None
        assert conn.execute("SELECT to_regclass('probe_left')").fetchone() == (None,)


def test_the_facts_of_this_server(fresh_db: DatabaseSettings) -> None:
    """Read with one query on the real server: this one has no TimescaleDB package."""
    with connect(fresh_db) as conn:
        preload = conn.execute("SHOW shared_preload_libraries").fetchone()
        facts = modes.read_facts(conn)
    assert facts == modes.TimescaleFacts(
        installed=False, available=False, preloaded="timescaledb" in str(preload)
    )
