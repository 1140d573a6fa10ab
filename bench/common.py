"""Set-up shared by the server-side benchmarks (run as ``python bench/<name>.py``, with the
repository on ``sys.path``): the machine a result was measured on and the servers a benchmark
starts with their logs and their niceness."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from qilu.ports import free_port


def run_header(script: str) -> dict[str, Any]:
    """The first fields of a result: the command as run, the machine and the start time."""
    return {
        "command": " ".join(["python", script, *sys.argv[1:]]),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_at_start": os.getloadavg(),
        },
        "started_at": datetime.now(UTC).isoformat(),
    }


def server_env(dbname: str, topic_prefix: str, tag: str, api_port: int) -> dict[str, str]:
    """This process's environment for the ingest and the API a benchmark starts: its own
    database, topic prefix and consumer group, a free metrics port and the API's port."""
    return {
        **os.environ,
        "QILU_DB__NAME": dbname,
        "QILU_KAFKA__TOPIC_PREFIX": topic_prefix,
        "QILU_INGEST__GROUP_ID": f"bench-{tag}",
        "QILU_INGEST__METRICS_PORT": str(free_port()),
        "QILU_API__PORT": str(api_port),
    }


def spawn_logged(
    argv: list[str], log: Path, env: dict[str, str], cwd: Path, nice: int = 0
) -> subprocess.Popen[bytes]:
    """Start ``argv`` with stdout and stderr appended to ``log``, no stdin, at the absolute
    niceness ``nice`` (this process may run at another one)."""
    out = log.open("ab")
    return subprocess.Popen(
        argv,
        env=env,
        stdout=out,
        stderr=out,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
        preexec_fn=lambda: os.setpriority(os.PRIO_PROCESS, 0, nice),  # noqa: PLW1509 - no threads yet
    )
