"""What synchronous replication costs the ingest (docs/adr/0017-postgres-failover.md).

The cluster profile's PostgreSQL (etcd and two nodes under Patroni, a private copy on free
ports: ``tests.integration.faults.private_pg_cluster``) takes the ingest's write transaction
(``storage.writer.ReadingsSink``: COPY into ``readings``, the liveness and rollup
invalidations, the Kafka offsets of ADR 0016) batch after batch, one writer, with Patroni's
``synchronous_mode`` on (a commit returns once the replica has flushed it) and off (the
replica streams asynchronously), switched through Patroni's REST API (``PATCH /config``)
and alternated ``--rounds`` times so that the machine's load falls on both alike. Per mode:
the commit latency of a batch (p50/p95/p99 ms) and readings/s of the single writer.

    python bench/sync_replication.py [--batches 300] [--batch 500] [--rounds 2]

Writes bench/results/sync_replication.json (with the load average: the figures are from a
shared 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from psycopg_pool import ConnectionPool  # noqa: E402

from bench.common import run_header  # noqa: E402
from ops.services.pg_cluster import PatroniNode  # noqa: E402
from qilu.settings import load  # noqa: E402
from storage.db import connect  # noqa: E402
from storage.offsets import OffsetMarks  # noqa: E402
from storage.rows import Rows  # noqa: E402
from storage.writer import ReadingsSink  # noqa: E402
from tests.integration.faults import (  # noqa: E402
    PrivatePgCluster,
    private_pg_cluster,
    register_devices,
)

RESULT = REPO / "bench" / "results" / "sync_replication.json"


def say(msg: str) -> None:
    print(msg, flush=True)


def set_synchronous(cluster: PrivatePgCluster, on: bool, timeout_s: float = 60.0) -> None:
    """Patroni's synchronous_mode on or off, and wait until the primary applies it."""
    primary = cluster.primary()
    node = cluster.svc.server(primary or "")
    if not isinstance(node, PatroniNode):
        raise TypeError(f"{primary}: not a Patroni node")
    url = f"http://{node.host}:{cluster.svc.ctx.settings.cluster_patroni_port}/config"
    body = json.dumps({"synchronous_mode": on}).encode()
    req = urllib.request.Request(url, data=body, method="PATCH")
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - http, our own server
        if resp.status != 200:
            raise RuntimeError(f"PATCH {url}: {resp.status}")
    deadline = time.monotonic() + timeout_s
    while True:
        with connect(cluster.db, autocommit=True) as conn:
            row = conn.execute("SHOW synchronous_standby_names").fetchone()
        names = str(row[0]) if row else ""
        if bool(names) == on and (not on or cluster.synchronous()):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"synchronous_mode={on} not applied: {names!r}")
        time.sleep(0.5)


def write_batches(
    sink: ReadingsSink, marks: OffsetMarks, pks: list[int], metric: int, n: int, size: int, k0: int
) -> list[float]:
    """``n`` batches of ``size`` readings (new keys each time), one transaction each: the
    seconds each flush took."""
    took: list[float] = []
    base_us = int(time.time() * 1e6) - 3_600_000_000
    for b in range(n):
        rows = Rows()
        for j in range(size):
            i = (k0 + b) * size + j
            rows.device_pk.append(pks[i % len(pks)])
            rows.metric_id.append(metric)
            rows.ts_us.append(base_us + i * 1000)
            rows.value.append(float(i % 1000))
            rows.quality.append(0)
        sink.add(rows)
        marks.note("bench.readings.charging", 0, (k0 + b + 1) * size)
        started = time.perf_counter()
        sink.flush()
        took.append(time.perf_counter() - started)
    return took


def summary(took: list[float], size: int) -> dict[str, float]:
    ms = sorted(t * 1000 for t in took)
    q = statistics.quantiles(ms, n=100)
    return {
        "batches": len(ms),
        "commit_p50_ms": round(q[49], 2),
        "commit_p95_ms": round(q[94], 2),
        "commit_p99_ms": round(q[98], 2),
        "readings_per_s": round(len(ms) * size / sum(took)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, default=300, help="batches per mode and round")
    ap.add_argument("--batch", type=int, default=500, help="readings per batch (the ingest's)")
    ap.add_argument("--rounds", type=int, default=2, help="on/off alternations (default 2)")
    ap.add_argument("--out", type=Path, default=RESULT, help="result file")
    args = ap.parse_args()
    out: dict[str, Any] = {
        "benchmark": "sync_replication",
        **run_header("bench/sync_replication.py"),
    }
    took: dict[str, list[float]] = {"synchronous": [], "asynchronous": []}
    with private_pg_cluster(load()) as cluster:
        register_devices(cluster.db)
        with connect(cluster.db) as conn:
            pks = [int(r[0]) for r in conn.execute("SELECT device_pk FROM devices").fetchall()]
            row = conn.execute("SELECT metric_id FROM metrics WHERE key = 'power_kw'").fetchone()
            if row is None:
                raise RuntimeError("no power_kw metric: migrations not applied?")
            metric = int(row[0])
        pool = ConnectionPool(
            cluster.db.conninfo(), min_size=1, max_size=2, kwargs={"prepare_threshold": None}
        )
        pool.wait(timeout=60)
        marks = OffsetMarks()
        sink = ReadingsSink(pool, parts=(marks,))
        k = 0
        try:
            write_batches(sink, marks, pks, metric, 20, args.batch, k)  # warm-up
            k += 20
            for r in range(args.rounds):
                for mode, on in (("synchronous", True), ("asynchronous", False)):
                    set_synchronous(cluster, on)
                    say(f"round {r + 1}: {mode} ...")
                    took[mode] += write_batches(
                        sink, marks, pks, metric, args.batches, args.batch, k
                    )
                    k += args.batches
            set_synchronous(cluster, True)
        finally:
            pool.close()
    out["batch_readings"] = args.batch
    out["results"] = {mode: summary(t, args.batch) for mode, t in took.items()}
    s, a = out["results"]["synchronous"], out["results"]["asynchronous"]
    out["synchronous_cost"] = {
        "commit_p50_ms_added": round(s["commit_p50_ms"] - a["commit_p50_ms"], 2),
        "readings_per_s_ratio": round(s["readings_per_s"] / a["readings_per_s"], 3),
    }
    out["machine"]["load_at_end"] = os.getloadavg()
    say(json.dumps(out["results"]) + " " + json.dumps(out["synchronous_cost"]))
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    say(f"wrote {args.out}")


if __name__ == "__main__":
    main()
