"""A SIGKILLed ingest consumer restarted at once: how long until it stores again.

Runs the fault-suite scenario
``tests/integration/test_faults_consumer.py::test_consumer_sigkilled_and_restarted_at_once...``
(three kills under steady traffic, every reading checked against the ledger) twice: with
static group membership (``ingest.group_instance_id``, what production runs) and, as the
baseline, with dynamic membership, which waits out the dead member's 45 s session timeout.

    python bench/consumer_restart.py [--static-only]

Needs the servers (``qilu services up``). Writes bench/results/consumer_restart.json: per
membership, the seconds from each kill to the first row the restarted process stored, the
ledger's lost and duplicates, and the load average around the runs (a shared machine).
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
TEST = (
    "tests/integration/test_faults_consumer.py"
    "::test_consumer_sigkilled_and_restarted_at_once_is_back_before_the_session_ends"
)


def say(msg: str) -> None:
    print(msg, flush=True)


def run(membership: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "faults.jsonl"
        env = {
            **os.environ,
            "QILU_FAULTS_REPORT": str(report),
            "QILU_FAULTS_RESTART_MEMBERSHIP": membership,
        }
        say(f"{membership} membership ...")
        started = time.monotonic()
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-s", TEST]
        proc = subprocess.run(cmd, cwd=REPO, env=env, check=False)
        tallies = (
            [json.loads(line) for line in report.read_text().splitlines()]
            if report.exists()
            else []
        )
    return {
        "passed": proc.returncode == 0,
        "wall_s": round(time.monotonic() - started, 1),
        "tally": tallies[-1] if tallies else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--static-only", action="store_true", help="skip the dynamic-membership baseline"
    )
    args = ap.parse_args()
    out: dict[str, Any] = {
        "benchmark": "consumer_restart",
        "command": "python bench/consumer_restart.py " + " ".join(sys.argv[1:]),
        "started_at": datetime.now(UTC).isoformat(),
        "target": "a restarted consumer stores again within 10 s of the kill",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_at_start": os.getloadavg(),
        },
    }
    for membership in ("static",) if args.static_only else ("static", "dynamic"):
        out[membership] = run(membership)
        tally = out[membership]["tally"] or {}
        extra = tally.get("extra", {})
        say(
            f"{membership}: resumed after {extra.get('resumed_after_kill_s')} s,"
            f" lost={tally.get('lost')} duplicates={tally.get('duplicates')}"
        )
    out["machine"]["load_at_end"] = os.getloadavg()
    static = (out["static"]["tally"] or {}).get("extra", {})
    out["within_10_s"] = bool(static) and static["resumed_max_s"] <= 10.0
    path = REPO / "bench" / "results" / "consumer_restart.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    say(f"wrote {path.relative_to(REPO)}")
    sys.exit(0 if out["static"]["passed"] and out["within_10_s"] else 1)


if __name__ == "__main__":
    main()
