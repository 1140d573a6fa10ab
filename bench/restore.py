"""Recovery time of a province-scale database: a full backup and a point-in-time restore.

On a PostgreSQL cluster of its own (free port, own state folder; never the shared one) the
benchmark loads ``--readings`` readings (100 million by default: 2,000 devices, one reading
a second each, in hourly partitions, with the platform's migrations), turns WAL archiving on
with pgBackRest (``ops/backup.py``, as ``qilu backup setup`` does), takes a full backup,
writes a little more (the WAL a restore replays), and then measures the recovery:

    restore_s   ``pgbackrest restore`` to a time after the backup, into an empty data dir
    recovery_s  PostgreSQL started on it until it has replayed the WAL and promoted
    rto_s       the two together: from "the database is gone" to "it answers writes"

The readings after the restore target that Kafka still holds are then stored again by the
ingest (docs/adr/0016); that time depends on how far back the target is, at the ingest's
rate (bench/results/ingest.json), and is not part of ``rto_s``.

    python bench/restore.py [--readings 100000000] [--keep]

Writes bench/results/restore.json. Takes long (the load dominates) and several times the
database's size in disk: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ops.backup import BackupType, Layout, PgBackRest, RestoreTarget  # noqa: E402
from ops.services import Services  # noqa: E402
from qilu.ports import free_port  # noqa: E402
from qilu.settings import BackupSettings, DatabaseSettings, ServicesSettings, load  # noqa: E402
from storage import migrate  # noqa: E402
from storage.db import connect  # noqa: E402

RESULT = REPO / "bench" / "results" / "restore.json"
DEVICES = 2_000
CHUNK = 5_000_000  # readings per INSERT statement


def say(msg: str) -> None:
    sys.stdout.write(f"[{datetime.now(UTC):%H:%M:%S}] {msg}\n")
    sys.stdout.flush()


def one(db: DatabaseSettings, query: str, params: tuple[object, ...] = ()) -> Any:
    """The first column of the first row."""
    with connect(db) as conn:
        row = conn.execute(query.encode(), params).fetchone()
        conn.commit()
    if row is None:
        raise RuntimeError(f"no row from {query}")
    return row[0]


def load_readings(db: DatabaseSettings, total: int) -> float:
    """``total`` readings: device i of DEVICES, one a second each, ending an hour ago."""
    seconds = -(-total // DEVICES)
    began = time.monotonic()
    t0 = one(
        db,
        "SELECT date_trunc('second', now() - interval '1 hour') - %s * interval '1 second'",
        (seconds,),
    )
    one(
        db,
        "SELECT qilu_ensure_partitions('readings', %s, %s + %s * interval '1 second')",
        (t0, t0, seconds),
    )
    with connect(db) as conn:
        for lo in range(0, total, CHUNK):
            hi = min(lo + CHUNK, total)
            conn.execute(
                "INSERT INTO readings (device_pk, metric_id, ts, value, quality)"
                " SELECT 1 + mod(i, %s), 1, %s + (i / %s) * interval '1 second',"
                " mod(i, 1000)::float8, 0 FROM generate_series(%s::int8, %s::int8 - 1) AS i",
                (DEVICES, t0, DEVICES, lo, hi),
            )
            conn.commit()
            rate = hi / (time.monotonic() - began)
            say(f"loaded {hi:,} readings ({rate:,.0f}/s)")
    with connect(db, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE readings")
    return time.monotonic() - began


def backup(svc: Services, bk: PgBackRest, out: dict[str, object]) -> None:
    """Archiving on (a restart), then a full backup."""
    bk.install(say)
    bk.configure(say)
    svc.down(["postgres"])  # archive_mode needs a restart
    svc.up(["postgres"])
    bk.stanza_create()
    bk.check()
    t = time.monotonic()
    bk.backup(BackupType.FULL)
    out["backup_full_s"] = round(time.monotonic() - t, 1)
    out["backup_repo_bytes"] = bk.repo_bytes(bk.info())
    say(f"full backup: {out['backup_full_s']} s, repository {out['backup_repo_bytes']:,} B")


def write_after_backup(db: DatabaseSettings) -> tuple[datetime, int]:
    """WAL for recovery to replay, a target time, one row after it; (target, rows wanted)."""
    one(
        db,
        "INSERT INTO readings (device_pk, metric_id, ts, value, quality)"
        " SELECT 1 + mod(i, 2000), 2, now() - interval '30 minutes' + i * interval '1 ms',"
        " 0, 0 FROM generate_series(0, 999999) AS i RETURNING 1",
    )
    target: datetime = one(db, "SELECT now()")
    want = int(one(db, "SELECT count(*) FROM readings"))
    one(db, "INSERT INTO readings VALUES (1, 3, now(), 0, 0) RETURNING 1")  # after the target
    return target, want


def restore(svc: Services, bk: PgBackRest, db: DatabaseSettings, out: dict[str, object]) -> None:
    target, want = write_after_backup(db)
    bk.check()  # the last segment archived
    svc.down(["postgres"])
    data = bk.layout.data_dir
    shutil.rmtree(data)  # the database is gone
    t = time.monotonic()
    bk.restore(RestoreTarget(time=target), data)
    out["restore_s"] = round(time.monotonic() - t, 1)
    t2 = time.monotonic()
    svc.up(["postgres"])
    while one(db, "SELECT pg_is_in_recovery()"):
        time.sleep(0.5)
    out["recovery_s"] = round(time.monotonic() - t2, 1)
    out["rto_s"] = round(time.monotonic() - t, 1)
    got = int(one(db, "SELECT count(*) FROM readings"))
    out["readings_after_restore"] = got
    out["restored_exactly_to_target"] = got == want


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--readings", type=int, default=100_000_000, help="readings to load (default 100M)"
    )
    ap.add_argument("--keep", action="store_true", help="keep the state folder afterwards")
    args = ap.parse_args()

    base = load()
    state = REPO / ".state" / f"bench-restore-{os.getpid()}-{uuid.uuid4().hex[:4]}"
    ss = ServicesSettings(state_dir=state, postgres_port=free_port(), start_timeout_s=600.0)
    db = base.db.model_copy(update={"port": ss.postgres_port, "name": "qilu_restore"})
    svc = Services(ss, db)
    bs = BackupSettings(home=state / "pgbackrest", process_max=2)
    out: dict[str, object] = {"readings": args.readings, "devices": DEVICES}
    try:
        svc.up(["postgres"])
        with connect(db) as conn:
            migrate.apply(conn)
        out["load_s"] = round(load_readings(db, args.readings), 1)
        out["database_bytes"] = int(one(db, "SELECT pg_database_size(current_database())"))
        say(f"database: {out['database_bytes']:,} bytes")
        bk = PgBackRest(Layout.of(bs, ss, db), bs)
        backup(svc, bk, out)
        restore(svc, bk, db, out)
        out["cores"] = os.cpu_count()
        out["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        say(json.dumps(out))
        RESULT.write_text(json.dumps(out, indent=2) + "\n")
    finally:
        svc.down(["postgres"])
        if not args.keep:
            shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
