"""The cluster profile under a machine loss, repeated: how soon writes resume, ledger-checked.

``--scenario brokers`` (the default) runs ``tests/integration/test_faults_cluster.py`` and
``tests/integration/test_faults_cluster_recovery.py``: three private KRaft brokers with the
cluster profile's configuration and, per run, four scenarios (docs/faults.md): the leader of
a partition SIGKILLed mid-stream and left down (``cluster_partition_leader_killed``), killed
and brought back with an empty log dir (``cluster_broker_back_empty``: re-replication),
cut off the network in a namespace for 20 s (``cluster_broker_partitioned``), and three
ingest hosts in one consumer group, one of which goes off the network
(``cluster_ingest_hosts``). Seconds from the loss to the first acknowledged write on a
partition the broker led (``produce_resumed_s``) and to the first such reading stored
(``stored_resumed_s``), to the broker in sync everywhere again (``in_sync_again_s``), to
the partitions of a lost ingest host reassigned (``moved_after_s``); target 10 s for
writes; writes bench/results/cluster_faults.json (the maxima over every broker loss on top,
each scenario's runs under ``scenarios``). ``--scenario broker`` runs only the first.
``--scenario postgres`` runs ``tests/integration/test_faults_pg_failover.py`` (Patroni's
primary SIGKILLed): ``promoted_after_s`` and ``writes_resumed_s``; target 30 s; writes
bench/results/pg_failover.json. Each ``--runs`` times, with lost and duplicates per run.

    python bench/cluster_faults.py [--scenario brokers|broker|postgres] [--runs 3]

Needs the servers (``qilu services up``) and root (network namespaces); the killed servers
are the tests' own. The JSON records the load average around the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SCENARIOS: dict[str, tuple[list[str], str]] = {  # --scenario: (test files, result file)
    "brokers": (
        [
            "tests/integration/test_faults_cluster.py",
            "tests/integration/test_faults_cluster_recovery.py",
        ],
        "cluster_faults.json",
    ),
    "broker": (["tests/integration/test_faults_cluster.py"], "cluster_faults.json"),
    "postgres": (["tests/integration/test_faults_pg_failover.py"], "pg_failover.json"),
}
# what is maximised over the runs (and over the scenarios, on top of the result)
TIMES = (
    "produce_resumed_s",
    "stored_resumed_s",
    "in_sync_again_s",
    "moved_after_s",
    "promoted_after_s",
    "writes_resumed_s",
)


def say(msg: str) -> None:
    print(msg, flush=True)


def run_once(k: int, tests: list[str]) -> dict[str, Any]:
    """One pytest run of ``tests``: passed, wall time and each scenario's tally."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "faults.jsonl"
        env = {**os.environ, "QILU_FAULTS_REPORT": str(report)}
        say(f"run {k} ...")
        started = time.monotonic()
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-s", *tests]
        proc = subprocess.run(cmd, cwd=REPO, env=env, check=False)
        lines = report.read_text().splitlines() if report.exists() else []
    return {
        "passed": proc.returncode == 0,
        "wall_s": round(time.monotonic() - started, 1),
        "tallies": [json.loads(line) for line in lines],
    }


def summarise(tallies: list[dict[str, Any]]) -> dict[str, Any]:
    """Maxima of the times, sums of lost and duplicates."""
    out: dict[str, Any] = {}
    for key in TIMES:
        values = [t["extra"][key] for t in tallies if key in t["extra"]]
        if values:
            out[f"{key}_max"] = max(values)
    out["lost"] = sum(t["lost"] for t in tallies)
    out["duplicates"] = sum(t["duplicates"] for t in tallies)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="how many times (default 3)")
    ap.add_argument(
        "--scenario",
        choices=tuple(SCENARIOS),
        default="brokers",
        help="brokers: a broker killed, back empty, cut off, and an ingest host lost; broker: "
        "only the first (both write bench/results/cluster_faults.json); postgres: the Patroni "
        "primary killed (bench/results/pg_failover.json)",
    )
    args = ap.parse_args()
    tests, result = SCENARIOS[args.scenario]
    out: dict[str, Any] = {
        "benchmark": f"cluster_faults/{args.scenario}",
        "command": "python bench/cluster_faults.py " + " ".join(sys.argv[1:]),
        "started_at": datetime.now(UTC).isoformat(),
        "target": (
            "writes resume within 30 s of a primary failure"
            if args.scenario == "postgres"
            else "writes resume within 10 s of a broker loss"
        )
        + "; 0 lost, 0 duplicates",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_at_start": os.getloadavg(),
        },
        "runs": [run_once(k, tests) for k in range(1, args.runs + 1)],
    }
    out["machine"]["load_at_end"] = os.getloadavg()
    tallies = [t for r in out["runs"] for t in r["tallies"]]
    if tallies:
        # the broker losses on top (a lost ingest host has its own figure below)
        losses = [t for t in tallies if t["scenario"] != "cluster_ingest_hosts"]
        out |= summarise(losses or tallies)
        out["scenarios"] = {
            name: summarise([t for t in tallies if t["scenario"] == name])
            | {"runs": [t["extra"] for t in tallies if t["scenario"] == name]}
            for name in dict.fromkeys(t["scenario"] for t in tallies)
        }
        out["lost"] = sum(t["lost"] for t in tallies)
        out["duplicates"] = sum(t["duplicates"] for t in tallies)
        say(
            json.dumps(
                {k: v for k, v in out.items() if k.endswith("_max") or k in ("lost", "duplicates")}
            )
        )
    path = REPO / "bench" / "results" / result
    path.write_text(json.dumps(out, indent=2) + "\n")
    say(f"wrote {path.relative_to(REPO)}")
    sys.exit(0 if out["runs"] and all(r["passed"] for r in out["runs"]) else 1)


if __name__ == "__main__":
    main()
