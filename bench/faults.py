"""The fault suite at full length, and good-record latency under the hostile corpus.

Two parts (docs/faults.md):

1. **Latency**: good envelopes (100 readings, 20 a second) through the real broker and the
   real ingest consumer, first alone (the baseline), then mixed with the hostile corpus of
   tests/corpus/ sent over and over. The latency of an envelope is from just before it is
   produced to the moment its readings are visible in the database (polled every 20 ms).
   The target: p95 under the corpus at most twice the baseline's.
2. **Faults**: runs tests/integration/test_faults_*.py and the edge broker-outage test with
   the full lengths (``--full``: a million readings and 20 consumer kills, 5 broker kills,
   the broker down 10 minutes, PostgreSQL down 2 minutes, 5 minutes of proxy faults and of
   rebalance storm) or the short CI lengths, and collects each scenario's lost/duplicates.

    python bench/faults.py [--full] [--skip-latency] [--skip-faults] [--latency-s 30]

Needs the servers (``qilu services up``); the fault tests start their own broker and
database where they kill them. Writes bench/results/faults.json. Figures taken on a shared
machine are noisy: the JSON records the load average at start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FULL_ENV = {
    "QILU_FAULTS_CONSUMER_READINGS": "1000000",
    "QILU_FAULTS_CONSUMER_RATE": "10000",
    "QILU_FAULTS_STORM_S": "300",
    "QILU_FAULTS_DB_OUTAGE_S": "120",
    "QILU_FAULTS_PROXY_S": "300",
    "QILU_EDGE_OUTAGE_S": "600",
    "QILU_FAULTS_TIMEOUT_S": "3600",
}
TESTS = [
    "tests/integration/test_faults_consumer.py",
    "tests/integration/test_faults_broker.py",
    "tests/integration/test_faults_cluster.py",
    "tests/integration/test_faults_pg_failover.py",
    "tests/integration/test_faults_database.py",
    "tests/integration/test_faults_proxy.py",
    "tests/integration/test_faults_corpus.py",
    "tests/integration/test_edge_faults.py"
    "::test_broker_outage_disk_within_bound_and_everything_stored_once",
]
PER_ENVELOPE = 100
ENVELOPES_PER_S = 20


def say(msg: str) -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------------- latency


def measure_latency(seconds: float) -> dict[str, Any]:  # noqa: PLR0915 - one sequence
    """Baseline, then under the corpus, on a fresh database and topics of their own."""
    from psycopg import sql

    from qilu.settings import load
    from storage import migrate
    from storage.db import connect
    from stream.cli import build_consumer
    from stream.topics import ensure_topics
    from tests.integration.faults import register_devices, unauthenticated

    base = load()
    name = f"qilu_bench_faults_{uuid.uuid4().hex[:6]}"
    with connect(base.db, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    db = base.db.model_copy(update={"name": name})
    ks = base.kafka.model_copy(update={"topic_prefix": f"bf{uuid.uuid4().hex[:6]}"})
    ingest = base.ingest.model_copy(update={"group_id": f"g{uuid.uuid4().hex[:8]}"})
    settings = unauthenticated(base.model_copy(update={"db": db, "kafka": ks, "ingest": ingest}))
    stop = threading.Event()
    try:
        with connect(db) as conn:
            migrate.apply(conn)
        ensure_topics(ks)
        devices = register_devices(db, n=80)
        consumer, pool = build_consumer(settings, stop)
        thread = threading.Thread(target=consumer.run, daemon=True)
        thread.start()
        try:
            say("latency: warming up (group join, first batches) ...")
            _latency_run(settings, devices, 2.0, hostile=False, offset=2 * 10**6)
            say(f"latency: baseline, {seconds:.0f} s of good traffic ...")
            baseline = _latency_run(settings, devices, seconds, hostile=False, offset=0)
            say(f"latency: good traffic mixed with the hostile corpus, {seconds:.0f} s ...")
            hostile = _latency_run(settings, devices, seconds, hostile=True, offset=10**6)
            if not thread.is_alive():
                raise RuntimeError("the ingest consumer died during the latency runs")
        finally:
            stop.set()
            thread.join(timeout=30)
            pool.close()
        return {
            "envelope_readings": PER_ENVELOPE,
            "envelopes_per_s": ENVELOPES_PER_S,
            "seconds_each": seconds,
            "baseline": baseline,
            "with_corpus": hostile,
            "p95_ratio": round(hostile["p95_ms"] / baseline["p95_ms"], 2),
            "p50_ratio": round(hostile["p50_ms"] / baseline["p50_ms"], 2),
            "within_2x_baseline": hostile["p95_ms"] <= 2 * baseline["p95_ms"],
        }
    finally:
        with connect(base.db, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        from kafka.admin import KafkaAdminClient

        from stream.topics import deadletter_topic, readings_topics

        admin = KafkaAdminClient(bootstrap_servers=ks.bootstrap)
        try:
            admin.delete_topics([*readings_topics(ks), deadletter_topic(ks)])
        finally:
            admin.close()


def _latency_run(  # noqa: PLR0915 - one sequence
    settings: Any, devices: list[str], seconds: float, *, hostile: bool, offset: int
) -> dict[str, Any]:
    import psycopg
    from kafka import KafkaProducer

    from tests.integration.faults import Ledger, corpus_value, load_corpus

    good_devices, corpus_devices = devices[:50], devices[50:]
    n = int(seconds * ENVELOPES_PER_S)
    ledger = Ledger(good_devices, offset + n * PER_ENVELOPE)
    topic = f"{settings.kafka.topic_prefix}.readings.charging"
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap,
        acks="all",
        linger_ms=0,
        max_request_size=1_048_576,
    )
    corpus = [e for e in load_corpus() if not e.needs]
    sent_at: dict[int, float] = {}
    seen_at: dict[int, float] = {}
    done = threading.Event()

    def poll() -> None:
        q = (
            "SELECT DISTINCT ((extract(epoch FROM ts) * 1000000)::int8 - %s) / 1000 / %s"
            " FROM readings WHERE ts >= 'epoch'::timestamptz + %s * interval '1 microsecond'"
        )
        with psycopg.connect(settings.db.conninfo(), autocommit=True) as conn:
            while not done.is_set():
                pending = [k for k in list(sent_at) if k not in seen_at]  # list(): atomic
                if pending:
                    lo = ledger.t0_us + min(pending) * PER_ENVELOPE * 1000
                    now = time.monotonic()
                    for (k,) in conn.execute(q, (ledger.t0_us, PER_ENVELOPE, lo)).fetchall():
                        if int(k) in sent_at:  # (other runs' rows fall in the window too)
                            seen_at.setdefault(int(k), now)
                time.sleep(0.02)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    hostile_sent = 0
    try:
        began = time.monotonic()
        for k in range(offset // PER_ENVELOPE, offset // PER_ENVELOPE + n):
            lo = k * PER_ENVELOPE
            value = ledger.envelope(lo, lo + PER_ENVELOPE, f"lat-{k % 12}", "boot", k)
            sent_at[k] = time.monotonic()
            producer.send(topic, key=f"lat-{k % 12}".encode(), value=value)
            if hostile:  # the whole corpus every ~2 s, spread among the good envelopes
                e = corpus[k % len(corpus)]
                v = corpus_value(e, corpus_devices, time.time_ns() // 1000)
                producer.send(topic, key=b"corpus-agent", value=v)
                hostile_sent += 1
            producer.flush()
            due = began + (k - offset // PER_ENVELOPE + 1) / ENVELOPES_PER_S
            time.sleep(max(0.0, due - time.monotonic()))
        deadline = time.monotonic() + 60
        while len(seen_at) < len(sent_at) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        done.set()
        poller.join(timeout=10)
        producer.close(timeout=10)
    lat = sorted((seen_at[k] - sent_at[k]) * 1000 for k in sent_at if k in seen_at)
    if not lat:
        raise RuntimeError("no good envelope became visible: is ingest running?")
    missing = sorted(k for k in sent_at if k not in seen_at)
    return {
        "envelopes": len(sent_at),
        "visible": len(lat),
        "not_visible_within_60_s": missing[:20],
        "hostile_records": hostile_sent,
        "p50_ms": round(statistics.median(lat), 1),
        "p95_ms": round(lat[int(len(lat) * 0.95) - 1], 1),
        "max_ms": round(lat[-1], 1),
    }


# ----------------------------------------------------------------------------- faults


def run_faults(full: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        report, junit = Path(tmp) / "faults.jsonl", Path(tmp) / "junit.xml"
        env = {**os.environ, "QILU_FAULTS_REPORT": str(report), **(FULL_ENV if full else {})}
        say(f"fault suite ({'full length' if full else 'CI lengths'}): {len(TESTS)} files ...")
        started = time.monotonic()
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-s"]
        proc = subprocess.run([*cmd, f"--junitxml={junit}", *TESTS], cwd=REPO, env=env, check=False)
        tallies = (
            [json.loads(line) for line in report.read_text().splitlines()]
            if report.exists()
            else []
        )
        tests = []
        if junit.exists():
            # our own pytest run wrote this file
            for case in ET.parse(junit).getroot().iter("testcase"):  # noqa: S314
                failed = case.find("failure") is not None or case.find("error") is not None
                skipped = case.find("skipped") is not None
                tests.append(
                    {
                        "test": f"{case.get('classname')}::{case.get('name')}",
                        "outcome": "failed" if failed else ("skipped" if skipped else "passed"),
                        "seconds": round(float(case.get("time", 0)), 1),
                    }
                )
    return {
        "full_length": full,
        "passed": proc.returncode == 0,
        "wall_s": round(time.monotonic() - started, 1),
        "parameters": FULL_ENV if full else "CI defaults (see docs/faults.md)",
        "tests": tests,
        "scenarios": tallies,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Full length takes about an hour; the CI lengths about six minutes.",
    )
    ap.add_argument("--full", action="store_true", help="run every scenario at full length")
    ap.add_argument("--skip-latency", action="store_true", help="do not measure latency")
    ap.add_argument("--skip-faults", action="store_true", help="do not run the fault suite")
    ap.add_argument("--latency-s", type=float, default=30.0, help="seconds per latency phase")
    args = ap.parse_args()
    out: dict[str, Any] = {
        "benchmark": "faults",
        "command": "python bench/faults.py " + " ".join(sys.argv[1:]),
        "started_at": datetime.now(UTC).isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_at_start": os.getloadavg(),
        },
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if not args.skip_latency:
            out["latency"] = measure_latency(args.latency_s)
            lat = out["latency"]
            say(
                f"latency p50/p95: baseline {lat['baseline']['p50_ms']}/{lat['baseline']['p95_ms']}"
                f" ms, with corpus {lat['with_corpus']['p50_ms']}/{lat['with_corpus']['p95_ms']}"
                f" ms (p95 ratio {lat['p95_ratio']})"
            )
    if not args.skip_faults:
        out["faults"] = run_faults(args.full)
        for t in out["faults"]["scenarios"]:
            say(f"{t['scenario']}: lost={t['lost']} duplicates={t['duplicates']}")
    out["machine"]["load_at_end"] = os.getloadavg()
    path = REPO / "bench" / "results" / "faults.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    say(f"wrote {path.relative_to(REPO)}")
    ok = out.get("faults", {}).get("passed", True) and out.get("latency", {}).get(
        "within_2x_baseline", True
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
