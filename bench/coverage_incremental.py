"""Incremental coverage benchmark: the API's background coverage recomputation at province
scale with liveness changing every second (storage/coverage_incremental.py,
docs/adr/0018-incremental-coverage.md).

In a database of its own (postgres mode, migrated, a registry from qilu.registry.generate at
--scale, 1.0 = the province): every device gets a liveness row (5 % never seen), then for
--seconds simulated seconds each device that reports in that second (once per its kind's
reporting interval) moves its liveness forward, written as the ingest writes it (the same
upsert, a transaction per --batch devices, several transactions per second), 1 % of the
devices of each second fall silent instead (so devices also go offline) and come back later;
after each second the coverage is computed incrementally, as the API's refresher does, and
timed. Printed and written to bench/results/coverage_incremental.json: p50/p99/max of the
incremental computation, the devices changed and flipped per second, the full recomputation
(model build and storage.coverage.compute) for comparison, the load average, and whether
the incremental figures equalled coverage.compute at the end.

    .venv/bin/python bench/coverage_incremental.py                      # province, 120 s
    .venv/bin/python bench/coverage_incremental.py --scale 0.05 --seconds 20   # a quick check

The simulated seconds are not waited for: each is written and computed as fast as the machine
allows; the figure is the time of one computation, which is what the 1 s refresh budget
holds. Other work on the machine makes it higher (the load average is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from psycopg import sql  # noqa: E402

from bench.common import run_header  # noqa: E402
from qilu.catalog import load_catalog  # noqa: E402
from qilu.devices import KINDS  # noqa: E402
from qilu.registry import generate  # noqa: E402
from qilu.settings import DatabaseSettings, StorageMode, load  # noqa: E402
from storage import coverage, migrate  # noqa: E402
from storage.coverage_incremental import IncrementalCoverage  # noqa: E402
from storage.db import connect  # noqa: E402
from storage.registry_store import load_registry  # noqa: E402

RESULTS = ROOT / "bench" / "results"
# storage/writer.py's liveness upsert, with timestamps as values
_UPSERT = (
    "INSERT INTO device_liveness (device_pk, last_seen)"
    " SELECT d, t FROM unnest(%s::int4[], %s::timestamptz[]) AS u(d, t) ORDER BY d"
    " ON CONFLICT (device_pk) DO UPDATE SET last_seen = EXCLUDED.last_seen"
    " WHERE device_liveness.last_seen < EXCLUDED.last_seen"
)


def say(msg: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {msg}", flush=True)


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def measure(  # noqa: PLR0915 - one linear measurement
    db: DatabaseSettings, seconds: int, batch: int, seed: int = 1
) -> dict[str, Any]:
    """The incremental coverage in ``db`` (registry loaded) over ``seconds`` simulated
    seconds of liveness changes; see the module docstring."""
    rng = random.Random(seed)
    catalog = load_catalog()
    with connect(db) as conn:
        devices = conn.execute("SELECT device_pk, kind FROM devices ORDER BY device_pk").fetchall()
    interval = {pk: max(1, round(KINDS[kind].interval_s)) for pk, kind in devices}
    phase = {pk: rng.randrange(interval[pk]) for pk, _ in devices}
    now = datetime.now(UTC).replace(microsecond=0)
    seen = [pk for pk, _ in devices if rng.random() >= 0.05]
    with connect(db) as conn, conn.transaction():
        times = [now - timedelta(seconds=rng.uniform(0, interval[pk])) for pk in seen]
        conn.execute(_UPSERT, (seen, times))
    inc = IncrementalCoverage(catalog)
    with connect(db) as conn:
        t0 = time.perf_counter()
        inc.compute(conn, now)
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        coverage.compute(conn, catalog, now)
        full_s = time.perf_counter() - t0
    say(f"  model built in {build_s:.2f} s; coverage.compute {full_s:.2f} s")
    silent: dict[int, int] = {}  # device -> simulated second it reports again
    times_ms: list[float] = []
    apply_ms: list[float] = []
    changed: list[int] = []
    flips: list[int] = []
    writes = 0
    with connect(db) as writer, connect(db) as reader:
        for s in range(1, seconds + 1):
            now += timedelta(seconds=1)
            due = [pk for pk, _ in devices if (s + phase[pk]) % interval[pk] == 0]
            reporting = []
            for pk in due:
                if silent.get(pk, 0) > s:
                    continue
                if rng.random() < 0.01:
                    silent[pk] = s + rng.randrange(60, 600)
                    continue
                reporting.append(pk)
            for i in range(0, len(reporting), batch):
                part = reporting[i : i + batch]
                with writer.transaction():
                    writer.execute(_UPSERT, (part, [now] * len(part)))
                writes += len(part)
            t0 = time.perf_counter()
            inc.compute(reader, now)
            times_ms.append((time.perf_counter() - t0) * 1000)
            assert inc.last is not None  # noqa: S101 - set by compute
            if inc.last.full:
                say(f"  second {s}: recomputed in full ({inc.last.reason})")
            apply_ms.append(inc.last.apply_seconds * 1000)
            changed.append(inc.last.changed_devices)
            flips.append(inc.last.flips)
        got = inc.compute(reader, now)
        full = coverage.compute(reader, catalog, now)
    equal = [(f.target.id, f.province, f.cities) for f in got] == [
        (f.target.id, f.province, f.cities) for f in full
    ]
    return {
        "devices": len(devices),
        "seconds": seconds,
        "liveness_writes_per_s": round(writes / seconds),
        "incremental_ms": {
            "p50": round(pct(times_ms, 50), 2),
            "p99": round(pct(times_ms, 99), 2),
            "max": round(max(times_ms), 2),
        },
        "of_which_in_the_model_ms": {
            "p50": round(pct(apply_ms, 50), 2),
            "p99": round(pct(apply_ms, 99), 2),
        },
        "changed_devices_per_s": round(sum(changed) / seconds),
        "flips_per_s": round(sum(flips) / seconds, 1),
        "full_model_build_s": round(build_s, 3),
        "full_coverage_compute_s": round(full_s, 3),
        "equal_to_full_at_end": equal,
        "target_p99_ms": 100,
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    ap.add_argument(
        "--scale", type=float, default=1.0, help="registry size, 1.0 = province (default)"
    )
    ap.add_argument("--seconds", type=int, default=120, help="simulated seconds (default 120)")
    ap.add_argument(
        "--batch", type=int, default=2000, help="devices per liveness transaction (default 2000)"
    )
    ap.add_argument("--keep", action="store_true", help="keep the bench database")
    ap.add_argument(
        "--out",
        type=Path,
        default=RESULTS / "coverage_incremental.json",
        help="where to write the results (default bench/results/coverage_incremental.json)",
    )
    args = ap.parse_args()
    base = load()
    db = base.db.model_copy(
        update={"name": f"qilu_bench_cov_{uuid.uuid4().hex[:8]}", "mode": StorageMode.POSTGRES}
    )
    result: dict[str, Any] = {**run_header("bench/coverage_incremental.py"), "scale": args.scale}
    say(f"creating {db.name} and loading a registry at scale {args.scale}")
    with connect(base.db, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db.name)))
    try:
        with connect(db) as conn:
            migrate.apply(conn, StorageMode.POSTGRES)
            load_registry(conn, generate(1, args.scale))
            conn.execute("ANALYZE")
            conn.commit()
        result.update(measure(db, args.seconds, args.batch))
    finally:
        if not args.keep:
            with connect(base.db, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(db.name)
                    )
                )
    result["finished_at"] = datetime.now(UTC).isoformat()
    result["machine"]["load_at_end"] = os.getloadavg()
    ms = result["incremental_ms"]
    say(
        f"incremental coverage: p50 {ms['p50']} ms, p99 {ms['p99']} ms, max {ms['max']} ms"
        f" (in the model: p50 {result['of_which_in_the_model_ms']['p50']} ms,"
        f" p99 {result['of_which_in_the_model_ms']['p99']} ms;"
        f" {result['changed_devices_per_s']:,} devices changed/s,"
        f" {result['flips_per_s']} online/offline flips/s, {result['devices']:,} devices);"
        f" full: model {result['full_model_build_s']} s,"
        f" coverage.compute {result['full_coverage_compute_s']} s;"
        f" equal to coverage.compute: {result['equal_to_full_at_end']};"
        f" load average {result['machine']['load_at_start']} -> {result['machine']['load_at_end']}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    say(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
