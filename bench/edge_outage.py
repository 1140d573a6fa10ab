"""The broker away for several minutes while the edge agent runs (the full-length fault test).

Runs ``tests/integration/test_edge_faults.py::test_broker_outage...`` with a long outage:
its own Kafka instance on free ports (never the shared one) is stopped for ``--outage-s``
while the agent (a real process, durable buffer, 1,000 readings/s) keeps collecting; then
the broker comes back and every reading must be stored exactly once, the buffer's disk use
having stayed within its bound. CI runs the same test with a 60 s outage.

    python bench/edge_outage.py [--outage-s 300]

Needs the servers (``qilu services up``). Writes bench/results/edge_outage.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEST = (
    "tests/integration/test_edge_faults.py"
    "::test_broker_outage_disk_within_bound_and_everything_stored_once"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--outage-s", type=float, default=300.0, help="seconds the broker is down (default 300)"
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        env = {
            **os.environ,
            "QILU_EDGE_OUTAGE_S": str(args.outage_s),
            "QILU_EDGE_OUTAGE_REPORT": str(report),
        }
        print(
            f"broker outage of {args.outage_s:.0f} s (takes ~{args.outage_s + 90:.0f} s) ...",
            flush=True,
        )
        started = time.monotonic()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                TEST,  # its timeout grows with QILU_EDGE_OUTAGE_S
            ],
            cwd=REPO,
            env=env,
            check=False,
        )
        result = json.loads(report.read_text()) if report.exists() else {}
    out = {
        "benchmark": "edge_outage",
        "command": "python bench/edge_outage.py " + " ".join(sys.argv[1:]),
        "passed": proc.returncode == 0,
        "wall_s": round(time.monotonic() - started, 1),
        **result,
    }
    print(json.dumps(out, indent=2))
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    (REPO / "bench" / "results" / "edge_outage.json").write_text(json.dumps(out, indent=2) + "\n")
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
