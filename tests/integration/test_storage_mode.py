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
from pydantic import SecretStr

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


@pytest.fixture
def owner_db(base_settings: Settings, services: object) -> Iterator[DatabaseSettings]:
    """A fresh database owned by a role that is not a superuser and may not read
    shared_preload_libraries: the migrating role of managed PostgreSQL (CREATEROLE, owner of
    its database, nothing more)."""
    del services
    tag = uuid.uuid4().hex[:10]
    name, role, password = f"qilu_t_{tag}", f"qilu_owner_{tag}", uuid.uuid4().hex
    admin = base_settings.db
    with connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEROLE PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(role)
            )
        )
    yield admin.model_copy(update={"name": name, "user": role, "password": SecretStr(password)})
    with connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_a_database_owner_that_is_not_a_superuser_migrates_and_migrates_again(
    owner_db: DatabaseSettings,
) -> None:
    with connect(owner_db) as conn:
        who = conn.execute(
            "SELECT rolsuper, pg_has_role(current_user, 'pg_read_all_settings', 'USAGE')"
            " FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        assert who == (False, False)
        assert modes.read_facts(conn).preloaded is None  # not readable here, and no error
        first = migrate.run(conn, StorageMode.AUTO)
        assert first.mode is StorageMode.POSTGRES  # this server has no TimescaleDB package
        assert first.applied
        again = migrate.run(conn, StorageMode.AUTO)  # an already-migrated database
        assert (again.mode, again.applied) == (StorageMode.POSTGRES, [])
        assert modes.recorded(conn) is StorageMode.POSTGRES
