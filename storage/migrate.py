"""Numbered SQL migrations, applied in order, recorded in ``schema_migrations``; safe to rerun.

A migration is ``NNN_name.sql`` (the same SQL in both storage modes) or the pair
``NNN_name.timescale.sql`` + ``NNN_name.postgres.sql`` (one file per mode, same number and
name). The mode is resolved once per database (:mod:`storage.mode`) and each version runs the
file of that mode. All pending migrations run in one transaction under an advisory lock, so
concurrent migrators wait for each other and a failure leaves the database as it was.

Reference data that lives in the repository (the 16 cities, device kinds, metric ids) is synced
after the migrations with upserts, so the database always matches the code's catalog. In
postgres mode the partitions of the coming hours are created too.

Before applying migrations to a database that has some already, a named restore point
``qilu-migrate-<first version>-<UTC time>`` is created where the server allows it
(storage/restore_points.py): ``qilu restore --point`` goes back to it if a migration went
wrong.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources

import psycopg
from psycopg.rows import TupleRow

from qilu.catalog import load_catalog
from qilu.devices import DEVICE_KINDS
from qilu.settings import StorageMode
from storage import mode as modes
from storage.restore_points import create_restore_point, restore_point_name

logger = logging.getLogger(__name__)
_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)(?:\.(timescale|postgres))?\.sql$")
_LOCK_KEY = 0x71696C75  # "qilu": one migrator at a time
_CONCRETE = (StorageMode.TIMESCALE, StorageMode.POSTGRES)
PARTITIONS_AHEAD = timedelta(hours=48)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: dict[StorageMode, str]  # the SQL each mode runs

    def for_mode(self, mode: StorageMode) -> str:
        return self.sql[mode]


@dataclass(frozen=True, slots=True)
class MigrationRun:
    mode: StorageMode
    applied: list[int] = field(default_factory=list)


def discover(entries: Iterable[tuple[str, str]] | None = None) -> list[Migration]:
    """Every migration (of the package, or of ``entries``: (file name, SQL) pairs), checked:
    unique numbers, one name per number, per-mode files in complete pairs."""
    if entries is None:
        entries = [
            (e.name, e.read_text("utf-8"))
            for e in resources.files("storage.migrations").iterdir()
            if e.name.endswith(".sql")
        ]
    files: dict[int, dict[str | None, tuple[str, str]]] = defaultdict(dict)
    for file_name, text in entries:
        m = _NAME.match(file_name)
        if not m:
            raise RuntimeError(
                f"migration file {file_name!r} is not NNN_name.sql or NNN_name.<mode>.sql"
            )
        version, name, variant = int(m[1]), m[2], m[3]
        if variant in files[version]:
            raise RuntimeError(f"duplicate migration {file_name}")
        files[version][variant] = (name, text)
    found: list[Migration] = []
    for version, variants in sorted(files.items()):
        names = {name for name, _ in variants.values()}
        if len(names) != 1:
            raise RuntimeError(f"migration {version:03d} has different names: {sorted(names)}")
        name = names.pop()
        if None in variants:
            if len(variants) != 1:
                raise RuntimeError(
                    f"migration {version:03d}_{name}: a common file and per-mode files"
                )
            found.append(Migration(version, name, dict.fromkeys(_CONCRETE, variants[None][1])))
            continue
        missing = [m.value for m in _CONCRETE if m.value not in variants]
        if missing:
            raise RuntimeError(
                f"migration {version:03d}_{name}: no {' or '.join(missing)} variant"
                f" ({version:03d}_{name}.{missing[0]}.sql)"
            )
        found.append(Migration(version, name, {m: variants[m.value][1] for m in _CONCRETE}))
    return found


def run(
    conn: psycopg.Connection[TupleRow], configured: StorageMode = StorageMode.AUTO
) -> MigrationRun:
    """Resolve the storage mode and apply the pending migrations of that mode."""
    result = MigrationRun(StorageMode.POSTGRES)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        mode = modes.resolve(conn, configured)
        result = MigrationRun(mode)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute("ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS mode text")
        modes.record(conn, mode)
        done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
        pending = [mig for mig in discover() if mig.version not in done]
        if pending and done:  # a database with data: a point to go back to (docs/operations.md)
            point = restore_point_name(f"migrate-{pending[0].version:03d}", datetime.now(UTC))
            if create_restore_point(conn, point) is not None:
                logger.info("restore point %s before the migrations", point)
        for mig in pending:
            logger.info("applying migration %03d_%s (%s mode)", mig.version, mig.name, mode)
            conn.execute(mig.for_mode(mode).encode())
            conn.execute(
                "INSERT INTO schema_migrations (version, name, mode) VALUES (%s, %s, %s)",
                (mig.version, mig.name, mode.value),
            )
            result.applied.append(mig.version)
        sync_reference_data(conn)
        if mode is StorageMode.POSTGRES:
            now = datetime.now(UTC)
            conn.execute(
                "SELECT qilu_ensure_partitions('readings', %s, %s)", (now, now + PARTITIONS_AHEAD)
            )
    return result


def apply(
    conn: psycopg.Connection[TupleRow], configured: StorageMode = StorageMode.AUTO
) -> list[int]:
    """Apply pending migrations; returns the versions applied now."""
    return run(conn, configured).applied


def sync_reference_data(conn: psycopg.Connection[TupleRow]) -> None:
    cat = load_catalog()
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO cities (code, name_en, name_zh, lat, lon) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (code) DO UPDATE SET name_en = EXCLUDED.name_en,"
            " name_zh = EXCLUDED.name_zh, lat = EXCLUDED.lat, lon = EXCLUDED.lon",
            [(c.code, c.name_en, c.name_zh, c.lat, c.lon) for c in cat.cities],
        )
        cur.executemany(
            "INSERT INTO device_kinds (kind, sector, name_en, name_zh, interval_s,"
            " expected_interval) VALUES (%s, %s, %s, %s, %s, make_interval(secs => %s))"
            " ON CONFLICT (kind) DO UPDATE SET sector = EXCLUDED.sector,"
            " name_en = EXCLUDED.name_en, name_zh = EXCLUDED.name_zh,"
            " interval_s = EXCLUDED.interval_s, expected_interval = EXCLUDED.expected_interval",
            [
                (k.key, k.sector.value, k.name_en, k.name_zh, k.interval_s, k.expected_interval_s)
                for k in DEVICE_KINDS
            ],
        )
        existing: dict[str, int] = dict(
            cur.execute("SELECT key, metric_id FROM metrics").fetchall()
        )
        next_id = max(existing.values(), default=0) + 1
        for kind in DEVICE_KINDS:
            for m in kind.metrics:
                if m.key in existing:
                    continue
                cur.execute(
                    "INSERT INTO metrics (metric_id, key, unit) VALUES (%s, %s, %s)",
                    (next_id, m.key, m.unit),
                )
                existing[m.key] = next_id
                next_id += 1
