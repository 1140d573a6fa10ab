"""The readings sink's database cost per row, statement by statement (issue 17, database side).

One command, on the local PostgreSQL (or, with --private-server, on a cluster of its own),
in a database of its own:

  1. a fresh database (postgres mode), migrated, with a province's registry (--scale);
  2. --seconds of the province stream (bench/ingest.py's ProvinceStream: every device at its
     kind's interval, in the envelopes bench/ingest.py forms), split between --consumers
     simulated consumers by agent (as Kafka's key does) and cut into batches of
     --batch-records envelopes, the consumers' batches interleaved;
  3. each variant writes the same batches with ``storage.writer.ReadingsSink`` over one
     connection, on emptied tables after a CHECKPOINT, as fast as it can (the catch-up of
     bench/ingest.py's sustained phase): the server process's CPU per row (from /proc), the
     WAL it generated per row (pg_current_wal_insert_lsn, and full-page images from
     pg_stat_wal: both cluster-wide, so other writers on the server add to them), the
     checkpoints meanwhile (each makes the next change of every liveness page write a
     full-page image: other users' CREATE/DROP DATABASE and CHECKPOINT count), the liveness
     rows written and how many of their updates were HOT, and the transactions;
  4. the variants alternate --rounds times (old and new back to back: CPU per row is the
     figure other work on the machine changes least); a run with a checkpoint in its window
     (on a shared server, mostly other users' CHECKPOINT or DROP DATABASE) pays full-page
     images the others do not, so it is kept aside and run again (--checkpoint-retries).

Variants: ``copy`` (the COPY alone: no liveness, no invalidations, no offsets), ``batch``
(liveness written with every batch, ``ingest.liveness_flush_s = 0``, its change-log row
written by the sink's own statement: migration 067), ``batch_trigger`` (the same logged by
the statement triggers of migration 062, as before 067), ``batch_no_triggers`` (no change
log at all: the log's whole share), ``coalesced:S`` (each device's liveness written at
most once per an eighth of its kind's liveness window, at most S seconds:
``ingest.liveness_flush_s``), ``coalesced_trigger:S`` (the same logged by the triggers),
``coalesced_global:S`` (every device once per S seconds, the sink's rule before the periods
per kind); ``batch_before`` and ``coalesced_before:S``: the sink as it was before migrations
067 and 068 and the periods per kind (logged by the triggers into pglz-compressed arrays,
one period for every device). The sink writes each batch in key order (device, metric);
a kind with ``_arrival`` appended (``copy_arrival``, ``coalesced_arrival:30``, ...) writes it
in the order the consumers hand it over, as before issue 17's session 6; the ``_before``
variants do too. Every variant sends the liveness arrays in binary form (storage/writer.py).

The sink's clock is the stream's own time divided by --speed, not the machine's: the
coalescing sees the periods it would see in a pipeline that drains --speed province-seconds
per second (10: bench/ingest.py's catch-up of 162 province-seconds in ~15 s; 1: real time,
with --batch-records of what a consumer polls at that rate, one or two envelopes), whatever
the load of the machine makes of this run's own speed.

    .venv/bin/python bench/sink_cost.py --private-server --seconds 90 --rounds 3
                                              # catch-up, before and after, ~7 min on 2 cores
    .venv/bin/python bench/sink_cost.py --private-server --seconds 90 --rounds 3 \
        --variants copy_arrival,copy,coalesced_arrival:30,coalesced:30 \
        --out bench/results/sink_cost.key_order.json    # the batch in key order or not
    .venv/bin/python bench/sink_cost.py --private-server --speed 1 --batch-records 2 \
        --seconds 20 --rounds 2 --variants batch,coalesced_before:5,coalesced:30 \
        --out bench/results/sink_cost.realtime.json                   # real time

Writes bench/results/sink_cost.json (--out). Drops its database at the end unless --keep.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from psycopg import sql  # noqa: E402
from psycopg_pool import ConnectionPool  # noqa: E402

from bench.common import run_header  # noqa: E402
from bench.ingest import ProvinceStream  # noqa: E402
from qilu.ports import free_port  # noqa: E402
from qilu.registry import generate  # noqa: E402
from qilu.settings import (  # noqa: E402
    DatabaseSettings,
    ServicesSettings,
    Settings,
    StorageMode,
    load,
)
from storage import migrate  # noqa: E402
from storage.db import connect  # noqa: E402
from storage.offsets import OffsetMarks  # noqa: E402
from storage.registry_store import load_device_index, load_registry  # noqa: E402
from storage.rows import RowArrays  # noqa: E402
from storage.writer import ReadingsSink  # noqa: E402

RESULTS = ROOT / "bench" / "results"
VARIANTS = ("copy", "batch_before", "batch", "coalesced_before:5", "coalesced:30")
KINDS = (
    "copy",
    "batch",
    "batch_trigger",
    "batch_no_triggers",
    "coalesced",
    "coalesced_trigger",
    "coalesced_global",
    "batch_before",
    "coalesced_before",
)
TRIGGERS = ("liveness_logged_insert", "liveness_logged_update")
ARRIVAL = "_arrival"


def say(msg: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def batches_of(
    stream: ProvinceStream, seconds: int, consumers: int, batch_records: int, index: Any
) -> list[tuple[int, int, RowArrays]]:
    """(consumer, batch number, rows): the stream's envelopes per consumer (agents dealt
    round-robin), cut into batches of ``batch_records`` envelopes."""
    t0 = (time.time_ns() // 1000) - (seconds + 5) * 1_000_000
    per: list[list[Any]] = [[] for _ in range(consumers)]
    agent_no = {a.agent_id: i for i, a in enumerate(stream.agents)}
    for s in range(seconds):
        for agent, env in stream.second(t0, s, t0 + s * 1_000_000):
            per[agent_no[agent.agent_id] % consumers].append(env)
    devices, metrics = index.devices, index.metrics
    out: list[tuple[int, int, RowArrays]] = []
    for c, envs in enumerate(per):
        for b in range(0, len(envs), batch_records):
            chunk = envs[b : b + batch_records]
            dev = [devices[d][0] for e in chunk for d in e.devices]
            out.append(
                (
                    c,
                    b // batch_records,
                    RowArrays(
                        np.array(dev, np.int32),
                        np.array([metrics[m] for e in chunk for m in e.metrics], np.int16),
                        np.array([t for e in chunk for t in e.ts_us], np.int64),
                        np.array([v for e in chunk for v in e.values], np.float64),
                        np.array([q for e in chunk for q in e.qualities], np.int16),
                    ),
                )
            )
    out.sort(key=lambda x: int(x[2].ts_us.max()))  # the consumers' batches interleaved
    return out


def stats(conn: Any) -> dict[str, float]:
    row = conn.execute(
        "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0'), wal_fpi, wal_records,"
        " (SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'device_liveness'),"
        " (SELECT n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'device_liveness'),"
        " (SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'device_liveness'),"
        " (SELECT count(*) FROM liveness_changes),"
        " (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter)"
        " FROM pg_stat_wal"
    ).fetchone()
    keys = ("wal_bytes", "wal_fpi", "wal_records", "upd", "hot_upd", "ins", "changes", "ckpt")
    return {k: float(v or 0) for k, v in zip(keys, row, strict=True)}


class StreamClock:
    """The sink's clock: the stream's time (s) divided by the pipeline's speed."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run_variant(
    variant: str, db: Any, batches: list[tuple[int, int, RowArrays]], speed: float
) -> dict[str, Any]:
    with connect(db, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE readings, device_liveness, liveness_changes, rollup_invalidations,"
            " ingest_offsets"
        )
        kind = variant.split(":", maxsplit=1)[0]
        # "_arrival": the batch in the order the consumers hand it over, not in key order
        arrival = kind.endswith(ARRIVAL)
        kind = kind.removesuffix(ARRIVAL)
        action = "DISABLE" if kind == "batch_no_triggers" else "ENABLE"
        for t in TRIGGERS:
            conn.execute(
                sql.SQL("ALTER TABLE device_liveness {} TRIGGER {}").format(
                    sql.SQL(action), sql.Identifier(t)
                )
            )
        # the log's arrays pglz-compressed as before migration 068 (the "_before" variants)
        storage = "EXTENDED" if kind.endswith("_before") else "EXTERNAL"
        conn.execute(
            sql.SQL(
                "ALTER TABLE liveness_changes ALTER COLUMN devices SET STORAGE {0},"
                " ALTER COLUMN seen_us SET STORAGE {0}"
            ).format(sql.SQL(storage))
        )
        conn.execute("CHECKPOINT")
        conn.execute("SELECT pg_stat_clear_snapshot()")
        time.sleep(1.0)  # the stats of the truncate reach the views
    pool = ConnectionPool(db.conninfo(), min_size=1, max_size=1, kwargs={"prepare_threshold": None})
    marks = OffsetMarks()
    clock = StreamClock()
    sink = ReadingsSink(
        pool,
        mode=StorageMode.POSTGRES,
        parts=(marks,),
        liveness_flush_s=float(variant.split(":")[1]) if ":" in variant else 0.0,
        # the "global" and "before" variants: one period for every device
        liveness_per_kind=kind not in ("coalesced_global", "coalesced_before"),
        # the "before" variants leave the change log to migration 062's triggers
        self_logged_liveness=kind in ("batch", "coalesced", "coalesced_global"),
        key_ordered=not arrival and not kind.endswith("_before"),
        clock=clock,
    )
    t_first = int(min(int(b.ts_us.min()) for _, _, b in batches))
    if kind == "copy":
        sink._write_liveness = lambda *a: None  # type: ignore[method-assign]
        sink._write_invalidations = lambda *a: None  # type: ignore[method-assign]
    try:
        with pool.connection() as conn:
            pid = int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])  # type: ignore[index]
        with connect(db, autocommit=True) as obs:
            before, cpu0, t0 = stats(obs), cpu_s(pid), time.monotonic()
            rows = txns = 0
            for c, b, batch in batches:
                clock.now = (int(batch.ts_us.max()) - t_first) / 1e6 / speed
                sink.add(batch)
                if kind != "copy":
                    marks.note("readings", c, b + 1)
                sink.flush()
                rows += len(batch)
                txns += 1
            if sink.pending_liveness:
                sink.flush_liveness(force=True)
                txns += 1
            took, cpu1 = time.monotonic() - t0, cpu_s(pid)
            pool.close()  # the server process ends and reports its statistics
            time.sleep(1.0)
            obs.execute("SELECT pg_stat_clear_snapshot()")
            after = stats(obs)
            live = obs.execute("SELECT count(*), max(last_seen) FROM device_liveness").fetchone()
    finally:
        pool.close()
    d = {k: after[k] - before[k] for k in before}
    upd = d["upd"]
    return {
        "variant": variant,
        "rows": rows,
        "transactions": txns,
        "seconds": round(took, 2),
        "rows_per_s": round(rows / took),
        "backend_cpu_s": round(cpu1 - cpu0, 2),
        "backend_us_per_row": round((cpu1 - cpu0) / rows * 1e6, 3),
        "wal_bytes_per_row": round(d["wal_bytes"] / rows, 1),
        "wal_fpi": int(d["wal_fpi"]),
        "checkpoints": int(d["ckpt"]),
        "wal_records_per_row": round(d["wal_records"] / rows, 3),
        "liveness_inserted": int(d["ins"]),
        "liveness_updated": int(upd),
        "liveness_hot_pct": round(100 * d["hot_upd"] / upd, 1) if upd else None,
        "liveness_writes_per_row": round((d["ins"] + upd) / rows, 4),
        "liveness_changes_rows": int(after["changes"]),
        "liveness_devices_at_end": int(live[0]) if live else 0,
    }


def run_rounds(
    args: argparse.Namespace,
    variants: list[str],
    db: Any,
    batches: list[tuple[int, int, RowArrays]],
) -> dict[str, Any]:
    """The variants alternated --rounds times; the runs, the ones set aside, the means."""
    runs: list[dict[str, Any]] = []
    disturbed: list[dict[str, Any]] = []
    for r in range(args.rounds):
        for v in variants:
            for attempt in range(args.checkpoint_retries + 1):
                load_avg = os.getloadavg()[0]
                out = run_variant(v, db, batches, args.speed)
                out["round"], out["load_before"] = r, round(load_avg, 2)
                say(json.dumps(out))
                if not out["checkpoints"] or attempt == args.checkpoint_retries:
                    runs.append(out)
                    break
                # another database's CHECKPOINT or DROP DATABASE fell in the window: its
                # full-page images cost this run CPU the other variants' runs did not pay
                say(f"  {v}: a checkpoint in the window; kept aside and run again")
                disturbed.append(out)
    summary = {
        v: {
            "backend_us_per_row_mean": round(
                float(np.mean([x["backend_us_per_row"] for x in runs if x["variant"] == v])),
                3,
            ),
            "runs_with_a_checkpoint": sum(
                1 for x in runs if x["variant"] == v and x["checkpoints"]
            ),
        }
        for v in variants
    }
    for v, m in summary.items():
        say(f"{v}: {m['backend_us_per_row_mean']} us/row (mean of {args.rounds} rounds)")
    return {"runs": runs, "disturbed_runs": disturbed, "summary": summary}


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    ap.add_argument("--scale", type=float, default=1.0, help="registry size (1.0 = province)")
    ap.add_argument("--seconds", type=int, default=120, help="province-seconds of the stream")
    ap.add_argument("--consumers", type=int, default=3, help="simulated consumers (default 3)")
    ap.add_argument(
        "--batch-records", type=int, default=250, help="envelopes per batch (default 250)"
    )
    ap.add_argument(
        "--speed",
        type=float,
        default=10.0,
        help="province-seconds the simulated pipeline drains per second: the sink's clock"
        " (default 10, bench/ingest.py's catch-up; 1: real time)",
    )
    ap.add_argument("--rounds", type=int, default=2, help="alternations of the variants")
    ap.add_argument(
        "--checkpoint-retries",
        type=int,
        default=2,
        help="run a variant again when a checkpoint fell in its window, up to this many times"
        " (default 2; the disturbed runs are kept in the results apart from the others)",
    )
    ap.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated, in this order each round (default {','.join(VARIANTS)})",
    )
    ap.add_argument("--keep", action="store_true", help="keep the database")
    ap.add_argument(
        "--private-server",
        action="store_true",
        help="run on a PostgreSQL cluster of its own (initdb on a free port, the settings of"
        " `qilu services`), started and removed by the bench: other users' checkpoints stay"
        " out of the windows (default: the local server of `qilu services`)",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=RESULTS / "sink_cost.json",
        help="results file (default bench/results/sink_cost.json)",
    )
    args = ap.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = {v for v in variants if v.split(":")[0].removesuffix(ARRIVAL) not in KINDS}
    if unknown:
        ap.error(f"unknown variants: {', '.join(sorted(unknown))}")
    base = load()
    with contextlib.ExitStack() as stack:
        admin = stack.enter_context(private_server(base)) if args.private_server else base.db
        return run(args, variants, admin)


@contextlib.contextmanager
def private_server(base: Settings) -> Iterator[DatabaseSettings]:
    """A PostgreSQL cluster of the bench's own: initdb on a free port with the settings of
    `qilu services` (ops/services), removed at the end. No other database's CHECKPOINT or
    DROP DATABASE falls in its windows."""
    from ops.services import Services

    state = Path(tempfile.mkdtemp(prefix="qilu-sink-cost-"))
    ss = ServicesSettings(state_dir=state, postgres_port=free_port(), start_timeout_s=120.0)
    db = base.db.model_copy(update={"port": ss.postgres_port})
    svc = Services(ss, db)
    try:
        say(f"starting a private PostgreSQL on port {ss.postgres_port}")
        svc.up(["postgres"])
        yield db
    finally:
        svc.down(["postgres"])
        shutil.rmtree(state, ignore_errors=True)


def run(args: argparse.Namespace, variants: list[str], admin: DatabaseSettings) -> int:
    """The whole measurement in a database of its own on the server ``admin`` names."""
    db = admin.model_copy(
        update={"name": f"qilu_bench_sink_{uuid.uuid4().hex[:8]}", "mode": StorageMode.POSTGRES}
    )
    result: dict[str, Any] = run_header("bench/sink_cost.py")
    result["args"] = {k: str(v) for k, v in vars(args).items()}
    result["server"] = "private" if args.private_server else "shared"
    with connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db.name)))
    try:
        with connect(db) as conn:
            migrate.apply(conn, StorageMode.POSTGRES)
        reg = generate(1, args.scale)
        with connect(db) as conn:
            load_registry(conn, reg)
            index = load_device_index(conn)
        stream = ProvinceStream(reg)
        say(f"{len(reg.devices):,} devices, {stream.rate:,.0f} readings/s; building batches")
        batches = batches_of(stream, args.seconds, args.consumers, args.batch_records, index)
        rows = sum(len(b) for _, _, b in batches)
        result["stream"] = {
            "devices": len(reg.devices),
            "readings_per_s": round(stream.rate),
            "province_seconds": args.seconds,
            "batches": len(batches),
            "rows": rows,
            "distinct_devices_per_batch": round(
                float(np.mean([len(np.unique(b.device_pk)) for _, _, b in batches]))
            ),
        }
        say(f"{rows:,} rows in {len(batches)} batches")
        result |= run_rounds(args, variants, db, batches)
    finally:
        if not args.keep:
            with connect(admin, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(db.name)
                    )
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
