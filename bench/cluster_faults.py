"""The cluster profile under a machine loss, repeated: how soon writes resume, ledger-checked.

``--scenario broker`` runs ``tests/integration/test_faults_cluster.py`` (three private KRaft
brokers with the cluster profile's configuration; the leader of a partition SIGKILLed
mid-stream): seconds from the kill to the first acknowledged write on a partition the dead
broker led (``produce_resumed_s``) and to the first such reading in the database
(``stored_resumed_s``); target 10 s; writes bench/results/cluster_faults.json.
``--scenario postgres`` runs ``tests/integration/test_faults_pg_failover.py`` (Patroni's
primary SIGKILLed): ``promoted_after_s`` and ``writes_resumed_s``; target 30 s; writes
bench/results/pg_failover.json. Each ``--runs`` times, with lost and duplicates per run.

    python bench/cluster_faults.py [--scenario broker|postgres] [--runs 3]

Needs the servers (``qilu services up``); the killed servers are the tests' own. The JSON
records the load average around the runs.
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
SCENARIOS = {  # --scenario: (test file, result file)
    "broker": ("tests/integration/test_faults_cluster.py", "cluster_faults.json"),
    "postgres": ("tests/integration/test_faults_pg_failover.py", "pg_failover.json"),
}


def say(msg: str) -> None:
    print(msg, flush=True)


def run_once(k: int, test: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "faults.jsonl"
        env = {**os.environ, "QILU_FAULTS_REPORT": str(report)}
        say(f"run {k} ...")
        started = time.monotonic()
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-s", test]
        proc = subprocess.run(cmd, cwd=REPO, env=env, check=False)
        tally = json.loads(report.read_text().splitlines()[-1]) if report.exists() else None
    return {"passed": proc.returncode == 0, "wall_s": round(time.monotonic() - started, 1)} | (
        {"tally": tally} if tally else {}
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="how many times (default 3)")
    ap.add_argument(
        "--scenario",
        choices=tuple(SCENARIOS),
        default="broker",
        help="broker: the partition leader killed (writes bench/results/cluster_faults.json); "
        "postgres: the Patroni primary killed (bench/results/pg_failover.json)",
    )
    args = ap.parse_args()
    test, result = SCENARIOS[args.scenario]
    out: dict[str, Any] = {
        "benchmark": f"cluster_faults/{args.scenario}",
        "command": "python bench/cluster_faults.py " + " ".join(sys.argv[1:]),
        "started_at": datetime.now(UTC).isoformat(),
        "target": (
            "writes resume within 10 s of a broker loss"
            if args.scenario == "broker"
            else "writes resume within 30 s of a primary failure"
        )
        + "; 0 lost, 0 duplicates",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_at_start": os.getloadavg(),
        },
        "runs": [run_once(k, test) for k in range(1, args.runs + 1)],
    }
    out["machine"]["load_at_end"] = os.getloadavg()
    extras = [r["tally"]["extra"] for r in out["runs"] if "tally" in r]
    if extras:
        for key in (
            "produce_resumed_s",
            "stored_resumed_s",
            "promoted_after_s",
            "writes_resumed_s",
        ):
            if key in extras[0]:
                out[f"{key}_max"] = max(e[key] for e in extras)
        out["lost"] = sum(r["tally"]["lost"] for r in out["runs"] if "tally" in r)
        out["duplicates"] = sum(r["tally"]["duplicates"] for r in out["runs"] if "tally" in r)
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
