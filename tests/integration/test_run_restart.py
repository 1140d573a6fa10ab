"""``qilu run`` starts a crashed child again: its ingest killed with SIGKILL, the platform keeps
running and readings are stored again by the new ingest (real Kafka and PostgreSQL, a private
database, topic prefix, consumer group and ports)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from qilu.ports import free_port
from qilu.settings import REPO_ROOT, DatabaseSettings, KafkaSettings
from tests.helpers import scalar, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

READINGS = "SELECT count(*) FROM readings"


def _children(pid: int) -> dict[int, str]:
    """The child processes of ``pid`` and their command lines (Linux /proc)."""
    out: dict[int, str] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
            out[int(child)] = cmdline.decode(errors="replace")
    return out


def _ingest_pid(pid: int) -> int | None:
    found = [c for c, cmd in _children(pid).items() if cmd.rstrip().endswith("ops.cli ingest")]
    return found[0] if found else None


def _gone(pid: int) -> bool:
    """Dead (a zombie until its parent reaps it, or reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_killed_ingest_is_started_again_and_stores_readings(
    db: DatabaseSettings, kafka: KafkaSettings, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "QILU_DB__NAME": db.name,
        "QILU_KAFKA__TOPIC_PREFIX": kafka.topic_prefix,
        "QILU_INGEST__GROUP_ID": f"restart-{uuid.uuid4().hex[:8]}",
        "QILU_API__PORT": str(free_port()),
        "QILU_INGEST__METRICS_PORT": str(free_port()),
        "QILU_AGENT__METRICS_PORT": str(free_port()),
        "QILU_AGENT__TARGETS_FILE": str(tmp_path / "targets.json"),
        "QILU_AGENT__PROVINCE_DIR": str(tmp_path / "province"),
    }
    qilu = str(Path(sys.executable).with_name("qilu"))
    log = tmp_path / "qilu-run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [qilu, "run", "--history-days", "0", "--operators-per-city", "0", "--scale", "0.01"],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=out,
        )
    try:

        def running() -> bool:
            assert proc.poll() is None, f"qilu run exited:\n{log.read_text()[-4000:]}"
            return True

        wait_for(lambda: running() and scalar(db, READINGS) > 0, 240, "the first readings")
        first = _ingest_pid(proc.pid)
        assert first is not None
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: _gone(first), 30, "the killed ingest to die")
        before = scalar(db, READINGS)  # nothing is stored until an ingest runs again
        wait_for(
            lambda: running() and _ingest_pid(proc.pid) not in (None, first),
            60,
            "a new ingest",
        )
        # the dead member's partitions come back after its session times out (45 s)
        wait_for(
            lambda: running() and scalar(db, READINGS) > before,
            240,
            "readings stored by the new ingest",
        )
        text = log.read_text(errors="replace")
        assert "ingest exited with code -9; starting it again in 1 s" in text
        assert "ingest started again" in text
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        print(log.read_text(errors="replace")[-6000:])  # shown on failure
