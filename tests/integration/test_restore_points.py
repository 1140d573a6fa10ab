"""Named restore points (storage/restore_points.py) on the real PostgreSQL: created inside a
transaction, refused harmlessly for a role not allowed to, and created by the migrator
before it applies pending migrations to a database that has some already."""

from __future__ import annotations

import logging
import uuid

import pytest
from psycopg import sql

from qilu.settings import DatabaseSettings
from storage import migrate
from storage.db import connect
from storage.restore_points import create_restore_point

pytestmark = pytest.mark.integration


def test_a_restore_point_inside_a_transaction_and_a_refusal_that_leaves_it_usable(
    db: DatabaseSettings,
) -> None:
    role = f"qilu_rp_{uuid.uuid4().hex[:8]}"
    with connect(db) as conn:
        lsn = create_restore_point(conn, "qilu-test-point")
        assert lsn is not None
        assert "/" in lsn  # a WAL position such as 0/3000090
        conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
        assert create_restore_point(conn, "qilu-not-allowed") is None
        row = conn.execute("SELECT 1").fetchone()  # the transaction goes on
        assert row == (1,)
        conn.rollback()


def test_migrator_creates_a_restore_point_before_pending_migrations(
    db: DatabaseSettings, caplog: pytest.LogCaptureFixture
) -> None:
    with connect(db) as conn:
        conn.execute("DELETE FROM schema_migrations WHERE version = 58")
        conn.execute("DROP TABLE ingest_offsets")
        conn.commit()
        with caplog.at_level(logging.INFO, logger="storage.migrate"):
            applied = migrate.apply(conn)
    assert applied == [58]
    assert any(
        r.getMessage().startswith("restore point qilu-migrate-058-") for r in caplog.records
    ), [r.getMessage() for r in caplog.records]
