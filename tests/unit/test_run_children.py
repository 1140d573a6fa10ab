"""``qilu run``'s children do not outlive it (ops/demo.py): killed with SIGKILL, the run can
stop nothing itself, so the kernel's parent-death signal has to end the ingest, the agents,
the API and the operators it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# a stand-in for `qilu run`: the real _Children starting one long child, then waiting
PARENT = """
import sys, time
from ops.demo import _Children
children = _Children({"sleeper": [sys.executable, "-c", "import time; time.sleep(120)"]}, {})
print(children.procs["sleeper"].pid, flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended


def test_children_end_when_the_run_is_killed() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 20  # a bound on the wait, not a speed claim
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child), "the child outlived the killed run"
    finally:
        parent.stdout.close()
        if _alive(child):
            os.kill(child, signal.SIGKILL)
