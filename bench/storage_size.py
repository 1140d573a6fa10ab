"""Bytes per stored reading, plain and compressed, for the capacity model (docs/capacity.md).

One hour of a charging-pile-like stream (``--devices`` devices x 4 metrics every 30 s: a power
value that wanders, a voltage, a current, a status code; quality 0) is written into a table
shaped like ``readings`` (primary key device, metric, time):

- in PostgreSQL (the servers' ``postgres``): heap + primary key, per row;
- in the TimescaleDB engine (the servers' ``timescale``): a hypertable segmented and ordered
  like ``readings`` (``compress_segmentby device_pk, metric_id``, ``orderby ts DESC``), its
  size before and after ``compress_chunk``.

Both in a schema of their own, dropped afterwards. The values' shape decides the compression
ratio: a real province's readings should be measured the same way once they exist.

    python bench/storage_size.py [--devices 500]

Writes bench/results/storage_size.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SCHEMA = "capacity_probe"
INTERVAL_S = 30
HOUR_SAMPLES = 3600 // INTERVAL_S
STATEMENT_ROWS = 500  # the TimescaleDB engine crashes on messages over ~64 KB


def rows(devices: int) -> list[tuple[int, int, datetime, float, int]]:
    rng = random.Random(7)
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    out = []
    for d in range(devices):
        power = rng.uniform(0, 120)
        charging = rng.random() < 0.4
        for k in range(HOUR_SAMPLES):
            ts = t0 + timedelta(seconds=k * INTERVAL_S + d % INTERVAL_S)
            if rng.random() < 0.02:
                charging = not charging
            power = max(0.0, power + rng.gauss(0, 2.0)) if charging else 0.0
            volt = round(380 + rng.gauss(0, 1.5), 1)
            amps = round(power * 1000 / (volt * math.sqrt(3)), 2)
            out += [
                (d, 1, ts, round(power, 2), 0),
                (d, 2, ts, volt, 0),
                (d, 3, ts, amps, 0),
                (d, 4, ts, 1.0 if charging else 0.0, 0),
            ]
    return out


def write(conn: Any, data: list[tuple[int, int, datetime, float, int]]) -> None:
    for i in range(0, len(data), STATEMENT_ROWS):
        chunk = data[i : i + STATEMENT_ROWS]
        conn.execute(
            f"INSERT INTO {SCHEMA}.readings SELECT * FROM unnest("  # noqa: S608 - a constant
            "%s::int[], %s::smallint[], %s::timestamptz[], %s::float8[], %s::smallint[])",
            [list(col) for col in zip(*chunk, strict=True)],
        )


CREATE = f"""
CREATE SCHEMA {SCHEMA};
CREATE TABLE {SCHEMA}.readings (
    device_pk integer NOT NULL, metric_id smallint NOT NULL, ts timestamptz NOT NULL,
    value double precision NOT NULL, quality smallint NOT NULL DEFAULT 0,
    PRIMARY KEY (device_pk, metric_id, ts))
"""


def plain(settings: Any, data: list[Any]) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(settings.db.conninfo(dbname="postgres"), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        conn.execute(CREATE)
        try:
            write(conn, data)
            conn.execute(f"VACUUM ANALYZE {SCHEMA}.readings")
            row = conn.execute(
                f"SELECT pg_relation_size('{SCHEMA}.readings'),"
                f" pg_indexes_size('{SCHEMA}.readings')"
            ).fetchone()
        finally:
            conn.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
    if row is None:
        raise RuntimeError("no size")
    heap, index = int(row[0]), int(row[1])
    return {
        "rows": len(data),
        "heap_bytes": heap,
        "index_bytes": index,
        "bytes_per_row": round((heap + index) / len(data), 1),
    }


def compressed(settings: Any, data: list[Any]) -> dict[str, Any]:
    import psycopg

    s = settings.services
    info = (
        f"host={s.host} port={s.timescale_port} user=postgres password=postgres "
        "dbname=postgres sslmode=disable"
    )
    with psycopg.connect(info, autocommit=True, prepare_threshold=None) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        conn.execute(CREATE)
        try:
            conn.execute(
                f"SELECT public.create_hypertable('{SCHEMA}.readings', 'ts',"
                " chunk_time_interval => interval '1 hour')"
            )
            conn.execute(
                f"ALTER TABLE {SCHEMA}.readings SET (timescaledb.compress,"
                " timescaledb.compress_segmentby = 'device_pk, metric_id',"
                " timescaledb.compress_orderby = 'ts DESC')"
            )
            write(conn, data)
            size = f"SELECT total_bytes FROM public.hypertable_detailed_size('{SCHEMA}.readings')"  # noqa: S608 - a constant
            before = conn.execute(size).fetchone()
            conn.execute(
                f"SELECT public.compress_chunk(c) FROM public.show_chunks('{SCHEMA}.readings') c"  # noqa: S608
            ).fetchall()
            after = conn.execute(size).fetchone()
        finally:
            conn.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
    if before is None or after is None:
        raise RuntimeError("no size")
    b, a = int(before[0]), int(after[0])
    return {
        "rows": len(data),
        "uncompressed_bytes": b,
        "compressed_bytes": a,
        "bytes_per_row_uncompressed": round(b / len(data), 1),
        "bytes_per_row_compressed": round(a / len(data), 2),
        "ratio": round(b / a, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=500, help="devices (default 500)")
    args = ap.parse_args()
    from qilu.settings import load

    settings = load()
    data = rows(args.devices)
    out = {
        "benchmark": "storage_size",
        "command": "python bench/storage_size.py " + " ".join(sys.argv[1:]),
        "started_at": datetime.now(UTC).isoformat(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "stream": f"{args.devices} devices x 4 metrics every {INTERVAL_S} s for one hour",
        "postgres": plain(settings, data),
        "timescale": compressed(settings, data),
    }
    path = REPO / "bench" / "results" / "storage_size.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
