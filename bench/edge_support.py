"""Shared parts of the edge-agent benchmarks (imported by the agent process itself, so light).

``RateCollector`` produces charging-pile readings at a fixed rate, handing them over every
``tick_s``; the agent loads it as ``type = "edge_support:RateCollector"`` with ``bench/`` on
``PYTHONPATH``. Its cost (building the Reading objects) is part of what the benchmarks measure:
a real collector spends at least that much. What this module imports at the top is loaded
into the measured agent too: only what the agent loads anyway (the rest, like ``scrape``'s
urllib.request, which brings http.client and the email package, ~3 MB, inside the function
that runs in the benchmark's own process; tests/unit/test_edge_lean.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collectors.base import Collector, ReadingSink
from qilu.contract import Reading

if TYPE_CHECKING:  # argparse is not loaded by an agent (edge_agent/__main__.py)
    import argparse

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
# the environment edge-agent/qilu-agent.service gives the agent: one malloc arena (the agent's
# threads mostly wait; per-thread arenas cost RSS, ~1.5 MB measured), no column tables in code
# objects (~1 MB), no .pyc writes
UNIT_ENV = {"MALLOC_ARENA_MAX": "1", "PYTHONNODEBUGRANGES": "1", "PYTHONDONTWRITEBYTECODE": "1"}


class RateCollector(Collector):
    type_name = "rate"

    def __init__(self, name: str, raw: Mapping[str, Any]) -> None:
        super().__init__(name)
        self.rate = float(raw["rate"])
        self.devices = [f"CHG-370100-00001-{i:04d}" for i in range(int(raw.get("devices", 500)))]
        self.tick_s = float(raw.get("tick_s", 0.05))

    @classmethod
    def from_config(cls, name: str, raw: Mapping[str, Any]) -> RateCollector:
        return cls(name, raw)

    def validate(self) -> None:
        pass

    async def collect(self, sink: ReadingSink) -> None:
        devices, n_dev = self.devices, len(self.devices)
        began, i = time.monotonic(), 0
        while True:
            due = int((time.monotonic() - began) * self.rate)
            if due > i:
                now = time.time_ns() // 1000
                await sink(
                    [
                        Reading(devices[j % n_dev], "power_kw", now + j % n_dev, float(j % 120))
                        for j in range(i, due)
                    ]
                )
                i = due
            await asyncio.sleep(self.tick_s)


def agent_config(
    folder: Path,
    *,
    rate: float,
    bootstrap: str,
    prefix: str,
    metrics_port: int,
    fsync: str = "batch",
    backlog_rate: float = 0.0,
    max_bytes: int = 256 << 20,
    tick_s: float = 0.05,
    kafka_extra: str = "",
) -> Path:
    """``kafka_extra``: more lines of the ``[kafka]`` table (e.g. SASL_SSL and its keys)."""
    path = folder / "agent.toml"
    path.write_text(
        f"""
[agent]
id = "bench-agent"
metrics_port = {metrics_port}
[kafka]
bootstrap = "{bootstrap}"
topic_prefix = "{prefix}"
{kafka_extra}
[auth]
unsigned = true  # the agent against Kafka alone: no ingest reads these topics
[buffer]
path = "{folder / "buffer.db"}"
max_bytes = {max_bytes}
fsync = "{fsync}"
[delivery]
backlog_rate = {backlog_rate}
[collectors.rate]
type = "edge_support:RateCollector"
rate = {rate}
tick_s = {tick_s}
"""
    )
    return path


def start_agent(
    config: Path, log: Path, *, cpu: int | None = None, python: str | None = None
) -> subprocess.Popen[bytes]:
    """``python -m edge_agent run``; ``python``: another interpreter (e.g. a virtualenv with
    only the edge install), default this one."""
    argv = [
        python or sys.executable,
        "-m",
        "edge_agent",
        "--log-level",
        "WARNING",
        "run",
        "--config",
        str(config),
    ]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "bench"), str(REPO)]),
        **UNIT_ENV,
    }
    with log.open("ab") as out:
        return subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=out)


def scrape(port: int) -> dict[str, float]:
    """Prometheus text -> {metric name: value summed over labels}."""
    import urllib.request  # the benchmark's process only (see the module docstring)

    # as a Prometheus server asks (OpenMetrics first): what the agent answers in production
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics",
        headers={"Accept": "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"},
    )
    try:
        body = urllib.request.urlopen(req, timeout=5).read().decode()  # noqa: S310 - http, fixed
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in body.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def create_topics(bootstrap: str, prefix: str) -> None:
    from qilu.settings import KafkaSettings
    from stream.topics import ensure_topics

    ensure_topics(KafkaSettings(bootstrap=bootstrap, topic_prefix=prefix))


def delete_topics(bootstrap: str, prefix: str) -> None:
    from kafka.admin import KafkaAdminClient

    from qilu.settings import KafkaSettings
    from stream.topics import deadletter_topic, readings_topics

    ks = KafkaSettings(bootstrap=bootstrap, topic_prefix=prefix)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_topics([*readings_topics(ks), deadletter_topic(ks)])
    finally:
        admin.close()


# ---------------------------------------------------------------------- the benchmarks' frame


def add_common_args(ap: argparse.ArgumentParser) -> None:
    """``--cpu`` and ``--bootstrap``, the same in every edge benchmark."""
    ap.add_argument("--cpu", type=int, default=1, help="core to pin the agent to (taskset)")
    ap.add_argument(
        "--bootstrap",
        default=os.environ.get("QILU_KAFKA__BOOTSTRAP", "127.0.0.1:19092"),
        help="Kafka bootstrap (default: the local one, or QILU_KAFKA__BOOTSTRAP)",
    )


@contextmanager
def bench_topics(bootstrap: str) -> Iterator[str]:
    """A fresh topic prefix with its topics, deleted afterwards."""
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, prefix)
    try:
        yield prefix
    finally:
        delete_topics(bootstrap, prefix)


@contextmanager
def running_agent(
    config: Path,
    log: Path,
    *,
    cpu: int | None,
    metrics_port: int,
    ready_s: float = 30.0,
    python: str | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """The agent process, started and serving metrics; terminated (SIGTERM) on exit."""
    proc = start_agent(config, log, cpu=cpu, python=python)
    try:
        deadline = time.monotonic() + ready_s
        while not scrape(metrics_port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the agent did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def write_result(name: str, fields: Mapping[str, object]) -> Path:
    """bench/results/<name>.json with the command, machine and interpreter."""
    out = {
        "benchmark": name,
        "command": f"python bench/{name}.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared, noisy)",
        "python": platform.python_version(),
        **fields,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    return path
