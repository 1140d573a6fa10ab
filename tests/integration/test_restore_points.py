"""Named restore points (storage/restore_points.py) on the real PostgreSQL: created inside a
transaction, refused harmlessly for a role not allowed to, and created by the migrator
before it applies pending migrations to a database that has some already."""

from __future__ import annotations

import hashlib
import logging
import uuid
from datetime import date
from pathlib import Path

import pytest
from psycopg import sql

from ops.backup import RestoreTarget
from ops.backup_cli import changes_after
from qilu.catalog import load_catalog
from qilu.contract import Sector
from qilu.inventory import parse
from qilu.settings import DatabaseSettings
from storage import migrate, registry_admin
from storage.db import connect
from storage.registry_admin import ImportSource
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


def test_a_registry_import_names_its_restore_point_in_the_audit_log_and_the_log(
    db: DatabaseSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """The point an import creates is in its audit row and its log line, and `qilu restore
    --point` with it knows from the audit log which changes it undoes (that import on)."""
    sample = Path(__file__).parents[2] / "docs" / "samples" / "charging_inventory.csv"
    data = sample.read_bytes()
    inv = parse(data, Sector.CHARGING, load_catalog())
    source = ImportSource(sample.name, hashlib.sha256(data).hexdigest())
    with connect(db) as conn, caplog.at_level(logging.INFO, logger="storage.registry_admin"):
        registry_admin.import_inventory(
            conn, inv, actor="cli:test", effective=date(2026, 10, 1), source=source, dry_run=False
        )
        row = conn.execute(
            "SELECT after->>'restore_point' FROM audit_log WHERE action = 'registry.import'"
        ).fetchone()
        assert row is not None
        point = row[0]
        assert point.startswith("qilu-import-"), point
        since, changes = changes_after(conn, RestoreTarget(point=point))
    assert since is not None
    assert "registry.import" in [c[2] for c in changes]  # (at, actor, action, ...)
    assert any(f"restore point before it: {point}" in r.getMessage() for r in caplog.records)
