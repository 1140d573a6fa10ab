"""The ingest process's garbage collector settings (stream/ingest.py tune_gc): applied by
`qilu ingest` after start-up, before the poll loop runs. Each check runs in a fresh
interpreter so this test process keeps CPython's defaults."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from stream.ingest import GC_GEN0_THRESHOLD

ROOT = Path(__file__).resolve().parents[2]


def fresh_python(code: str) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=ROOT,
    )
    got: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return got


STATE = (
    "import gc, json\n"
    "def state():\n"
    "    return json.dumps({'gen0': gc.get_threshold()[0], 'gen1': gc.get_threshold()[1],"
    " 'frozen': gc.get_freeze_count()})\n"
)


def test_tune_gc_freezes_start_up_and_raises_the_young_threshold() -> None:
    got = fresh_python(STATE + "from stream.ingest import tune_gc\ntune_gc()\nprint(state())\n")
    assert got["gen0"] == GC_GEN0_THRESHOLD
    assert got["gen1"] == 10  # the older generations' thresholds are left alone
    assert got["frozen"] > 1000  # the interpreter's and the libraries' objects


def test_qilu_ingest_tunes_the_collector_before_the_poll_loop() -> None:
    """`qilu ingest`'s handler with the servers' parts stubbed: the consumer's run() sees
    the tuned collector."""
    code = STATE + (
        "import argparse, threading\n"
        "from qilu.settings import load\n"
        "from stream import cli\n"
        "class Consumer:\n"
        "    def run(self):\n"
        "        print(state())\n"
        "class Pool:\n"
        "    def close(self):\n"
        "        pass\n"
        "cli.storage_mode = lambda settings: None\n"
        "cli.build_consumer = lambda settings, stop, mode: (Consumer(), Pool())\n"
        "s = load()\n"
        "s = s.model_copy(update={'storage': s.storage.model_copy("
        "update={'maintain_in_ingest': False})})\n"
        "cli._ingest(argparse.Namespace(instance_id=None, metrics_port=0), s)\n"
    )
    got = fresh_python(code)
    assert got["gen0"] == GC_GEN0_THRESHOLD
    assert got["frozen"] > 1000
