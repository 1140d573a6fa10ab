"""Numbered SQL migrations, applied in order, recorded in ``schema_migrations``; safe to rerun.

Reference data that lives in the repository (the 16 cities, device kinds, metric ids) is synced
after the migrations with upserts, so the database always matches the code's catalog.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg.rows import TupleRow

from qilu.catalog import load_catalog
from qilu.devices import DEVICE_KINDS

logger = logging.getLogger(__name__)
_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x71696C75  # "qilu": one migrator at a time


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def discover() -> list[Migration]:
    found: list[Migration] = []
    for entry in resources.files("storage.migrations").iterdir():
        m = _NAME.match(entry.name)
        if m:
            found.append(Migration(int(m[1]), m[2], entry.read_text("utf-8")))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    if len(versions) != len(set(versions)):
        raise RuntimeError(f"duplicate migration numbers in {versions}")
    return found


def apply(conn: psycopg.Connection[TupleRow]) -> list[int]:
    """Apply pending migrations; returns the versions applied now."""
    applied_now: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
        for mig in discover():
            if mig.version in done:
                continue
            logger.info("applying migration %03d_%s", mig.version, mig.name)
            conn.execute(mig.sql.encode())
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                (mig.version, mig.name),
            )
            applied_now.append(mig.version)
        sync_reference_data(conn)
    return applied_now


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
        existing: dict[str, int] = dict(cur.execute("SELECT key, metric_id FROM metrics").fetchall())
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
