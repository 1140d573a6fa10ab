"""Fault tests of the edge agent against the real broker and database.

The agent runs as its own process (``python -m edge_agent run --config ...``, what the systemd
unit starts) with ``test_edge_ledger.LedgerCollector``, a deterministic source that writes to
a ledger file which readings the agent acknowledged. Reading ``i`` is (device ``i mod n``,
``power_kw``, ``t0 + i ms``), so the database can be checked against the ledger exactly:

- SIGKILL at random moments ten times: every acknowledged reading is stored, once;
- the broker stopped for a while (our own Kafka, never the shared one; 60 s here,
  ``bench/edge_outage.py`` runs the several-minute version): disk within the bound, and
  afterwards every reading stored exactly once;
- the buffer full: the drop counter equals the readings missing downstream and the gap rows;
- the buffer file truncated: the agent starts, keeps what is readable, counts the rest.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from qilu import signing
from qilu.ports import free_port
from qilu.registry import generate
from qilu.settings import REPO_ROOT, KafkaSettings, Settings
from storage import agents
from storage.db import connect
from storage.registry_store import load_registry
from tests.helpers import scalar, wait_for
from tests.integration.faults import Tally, private_kafka
from tests.integration.faults import report as report_tally
from tests.integration.test_edge_ledger import last_acked

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

T0_AGE_S = 3600  # readings start one hour in the past (plausible for the validator)


@dataclass
class Run:
    dir: Path
    devices: list[str]
    db: Any
    kafka: KafkaSettings
    t0_us: int
    signing_key: str = ""  # the agent's key 1 (docs/adr/0010): the ingest refuses unsigned

    @property
    def ledger(self) -> Path:
        return self.dir / "ledger"

    @property
    def buffer(self) -> Path:
        return self.dir / "buffer.db"

    def config(
        self,
        *,
        rate: float,
        total: int,
        bootstrap: str | None = None,
        max_bytes: int = 64 << 20,
        metrics_port: int = 0,
    ) -> Path:
        devices = ", ".join(f'"{d}"' for d in self.devices)
        path = self.dir / f"agent-{uuid.uuid4().hex[:6]}.toml"
        path.write_text(
            f"""
[agent]
id = "itest-agent"
metrics_port = {metrics_port}
[kafka]
bootstrap = "{bootstrap or self.kafka.bootstrap}"
topic_prefix = "{self.kafka.topic_prefix}"
request_timeout_s = 5.0
delivery_timeout_s = 10.0
[buffer]
path = "{self.buffer}"
max_bytes = {max_bytes}
fsync = "batch"
[delivery]
batch_max_delay_s = 0.2
retry_initial_s = 0.2
retry_max_s = 2.0
[collectors.ledger]
type = "tests.integration.test_edge_ledger:LedgerCollector"
devices = [{devices}]
rate = {rate}
total = {total}
t0_us = {self.t0_us}
ledger = "{self.ledger}"
[auth]
key_no = 1
signing_key = "{self.signing_key}"
"""
        )
        return path

    def start(self, cfg: Path) -> subprocess.Popen[bytes]:
        with (self.dir / "agent.log").open("ab") as log:  # the child keeps its own copy
            return subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "edge_agent",
                    "--log-level",
                    "WARNING",
                    "run",
                    "--config",
                    str(cfg),
                ],
                cwd=REPO_ROOT,
                stdout=log,
                stderr=log,
            )

    def stored(self) -> int:
        return scalar(self.db, "SELECT count(*) FROM readings")

    def log_tail(self) -> str:
        return (self.dir / "agent.log").read_text()[-3000:]


def stop(p: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def metric(port: int, name: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def prepare(settings: Settings, tmp_path: Path, kafka: KafkaSettings | None = None) -> Run:
    reg = generate(1, 0.002)
    devices = [d.device_id for d in reg.devices if d.kind == "charging_pile"][:50]
    key = signing.generate_key()
    with connect(settings.db) as conn:
        load_registry(conn, reg)
        agents.provision_simulated(
            conn, {"itest-agent": [s.site_id for s in reg.sites]}, {"itest-agent": key.public},
            actor="test",
        )  # fmt: skip
        conn.commit()
    t0 = (time.time_ns() // 1000) - T0_AGE_S * 1_000_000
    return Run(tmp_path, devices, settings.db, kafka or settings.kafka, t0, key.private_b64)


def duplicates(run: Run) -> int:
    return scalar(
        run.db, "SELECT count(*) - count(DISTINCT (device_pk, metric_id, ts)) FROM readings"
    )


# ----------------------------------------------------------------------------- kill -9


def test_sigkill_ten_times_loses_nothing_and_doubles_nothing(
    settings: Settings, start_ingest: Callable[[], Any], tmp_path: Path
) -> None:
    run = prepare(settings, tmp_path)
    start_ingest()
    total = 40_000
    cfg = run.config(rate=2000, total=total)
    rng = random.Random(4)
    kills = []
    for k in range(10):
        before = last_acked(run.ledger)
        p = run.start(cfg)
        if k % 2:  # odd runs: at a random moment while readings flow (start-up is slow on
            # a loaded machine, so wait for this run's first hand-over)
            wait_for(lambda: last_acked(run.ledger) > before, 60, "the agent collecting")  # noqa: B023
            time.sleep(rng.uniform(0.0, 1.5))
        else:  # even runs: anywhere, start-up and buffer recovery included
            time.sleep(rng.uniform(0.2, 3.0))
        p.send_signal(signal.SIGKILL)
        p.wait()
        kills.append(last_acked(run.ledger))
    assert kills[-1] > kills[0], f"the agent made no progress between kills: {kills}"
    p = run.start(cfg)
    try:
        wait_for(lambda: last_acked(run.ledger) == total - 1, 120, "every reading handed over")
        wait_for(lambda: run.stored() >= total, 120, "every reading stored")
    finally:
        stop(p)
    assert run.stored() == total, run.log_tail()  # 0 lost (and none extra)
    assert duplicates(run) == 0
    t_lo, t_hi = run.t0_us, run.t0_us + (total - 1) * 1000
    in_range = scalar(
        run.db,
        f"SELECT count(*) FROM readings WHERE ts BETWEEN "  # noqa: S608 - the test's integers
        f"to_timestamp({t_lo} / 1e6) AND to_timestamp({t_hi} / 1e6)",
    )
    assert in_range == total


# ----------------------------------------------------------------------------- buffer full


def test_full_buffer_drop_counter_equals_missing_readings(
    settings: Settings, start_ingest: Callable[[], Any], tmp_path: Path
) -> None:
    run = prepare(settings, tmp_path)
    total = 260_000  # ~2.5 times what 8 MiB hold
    port = free_port()
    dead = f"127.0.0.1:{free_port()}"  # no broker there: everything stays in the buffer
    p = run.start(
        run.config(rate=20_000, total=total, bootstrap=dead, max_bytes=8 << 20, metrics_port=port)
    )
    try:
        wait_for(lambda: last_acked(run.ledger) == total - 1, 90, "every reading handed over")
        wait_for(lambda: metric(port, "qilu_agent_readings_dropped_total") > 0, 10, "drops")
        dropped = int(metric(port, "qilu_agent_readings_dropped_total"))
        peak = metric(port, "qilu_agent_buffer_disk_bytes")
    finally:
        stop(p)
    assert peak <= 8 << 20
    assert run.buffer.stat().st_size <= 8 << 20
    start_ingest()
    p = run.start(run.config(rate=20_000, total=total))  # the real broker now
    try:
        wait_for(lambda: run.stored() >= total - dropped, 120, "the buffer drained")
        wait_for(lambda: scalar(run.db, "SELECT count(*) FROM agent_gaps") > 0, 30, "gaps")
        time.sleep(2)  # anything extra would show up now
    finally:
        stop(p)
    missing = total - run.stored()
    gap_sum = scalar(run.db, "SELECT coalesce(sum(dropped_readings), 0) FROM agent_gaps")
    assert dropped > 0
    assert missing == dropped == gap_sum
    reasons = scalar(run.db, "SELECT count(*) FROM agent_gaps WHERE reason <> 'buffer_full'")
    assert reasons == 0
    # drop-oldest: what is missing is the oldest stretch, the newest readings all arrived
    newest = scalar(
        run.db,
        f"SELECT count(*) FROM readings WHERE ts >= "  # noqa: S608 - the test's integers
        f"to_timestamp({run.t0_us + (total - 1000) * 1000} / 1e6)",
    )
    assert newest == 1000
    assert duplicates(run) == 0


# ----------------------------------------------------------------------------- corruption


def test_truncated_buffer_is_quarantined_and_the_readable_rest_delivered(
    settings: Settings, start_ingest: Callable[[], Any], tmp_path: Path
) -> None:
    run = prepare(settings, tmp_path)
    total = 60_000
    dead = f"127.0.0.1:{free_port()}"
    p = run.start(run.config(rate=30_000, total=total, bootstrap=dead))
    try:
        wait_for(lambda: last_acked(run.ledger) == total - 1, 60, "every reading handed over")
    finally:
        stop(p)  # clean stop: the buffer is checkpointed into its main file
    os.truncate(run.buffer, run.buffer.stat().st_size // 2)
    start_ingest()
    port = free_port()
    p = run.start(run.config(rate=30_000, total=total, metrics_port=port))
    try:
        wait_for(lambda: scalar(run.db, "SELECT count(*) FROM agent_gaps") > 0, 60, "gap row")
        lost = scalar(run.db, "SELECT sum(dropped_readings) FROM agent_gaps")
        wait_for(lambda: run.stored() >= total - lost, 60, "the readable readings stored")
        time.sleep(1)
        assert metric(port, "qilu_agent_buffer_quarantined_total") == 1
    finally:
        stop(p)
    assert [q for q in tmp_path.iterdir() if ".quarantine-" in q.name]
    assert 0 < lost < total
    assert run.stored() == total - lost
    assert scalar(run.db, "SELECT count(*) FROM agent_gaps WHERE reason = 'corrupt_buffer'") == 1


# ----------------------------------------------------------------------------- broker outage


@pytest.fixture(scope="module")
def own_kafka(base_settings: Settings) -> Iterator[Any]:
    """(its Services, bootstrap) of a Kafka of our own, stopped and started by the test, never
    the shared one (tests/integration/faults.py)."""
    with private_kafka(base_settings) as broker:
        yield broker.svc, broker.bootstrap


@pytest.mark.timeout(int(float(os.environ.get("QILU_EDGE_OUTAGE_S", "60"))) + 360)
def test_broker_outage_disk_within_bound_and_everything_stored_once(
    settings: Settings, own_kafka: Any, tmp_path: Path
) -> None:
    from stream.topics import ensure_topics

    svc, bootstrap = own_kafka
    outage_s = float(os.environ.get("QILU_EDGE_OUTAGE_S", "60"))
    ks = settings.kafka.model_copy(update={"bootstrap": bootstrap})
    ensure_topics(ks)
    own = settings.model_copy(update={"kafka": ks})
    run = prepare(own, tmp_path, ks)
    rate = 1000
    # room for the whole outage (~60 bytes a reading on disk, twice that to spare): this
    # test is about keeping everything; test_full_buffer... covers running out of room
    max_bytes = max(16 << 20, int(rate * (outage_s + 20) * 120))
    total = int(rate * (10 + outage_s + 10))
    port = free_port()
    stop_ingest = threading.Event()
    restarts: list[str] = []

    def supervised_ingest() -> None:
        """``qilu ingest`` as its service manager runs it, in its own process (its Kafka
        clients reconnect to a stopped broker for a minute), restarted if it exits on an
        error (its offset commit gives up while the broker is down; the batch is reread)."""
        env = {
            **os.environ,
            "QILU_KAFKA__BOOTSTRAP": ks.bootstrap,
            "QILU_KAFKA__TOPIC_PREFIX": ks.topic_prefix,
            "QILU_DB__NAME": own.db.name,
            "QILU_INGEST__GROUP_ID": f"g{uuid.uuid4().hex[:10]}",
            "QILU_INGEST__METRICS_PORT": "0",
        }
        while not stop_ingest.is_set():
            with (tmp_path / "ingest.log").open("ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "ops.cli", "--log-level", "WARNING", "ingest"],
                    cwd=REPO_ROOT, env=env, stdout=log, stderr=log,
                )  # fmt: skip
            while proc.poll() is None and not stop_ingest.is_set():
                time.sleep(0.2)
            if proc.poll() is None:
                stop(proc)
            elif not stop_ingest.is_set():
                restarts.append(f"exit {proc.returncode}")
                time.sleep(1)

    ingest = threading.Thread(target=supervised_ingest, daemon=True)
    ingest.start()
    p = run.start(run.config(rate=rate, total=total, max_bytes=max_bytes, metrics_port=port))
    peak = 0
    try:
        wait_for(lambda: run.stored() > 2000, 60, "readings flowing")
        svc.down(["kafka"])
        stored_before = run.stored()
        until = time.monotonic() + outage_s
        while time.monotonic() < until:
            peak = max(peak, disk(run.buffer))
            time.sleep(1)
        waiting = metric(port, "qilu_agent_buffer_readings")
        svc.up(["kafka"])
        back = time.monotonic()
        wait_for(lambda: run.stored() >= total, 180, "every reading stored after the outage")
        caught_up_s = time.monotonic() - back
        time.sleep(1)
        sent = metric(port, "qilu_agent_readings_sent_total")
    finally:
        stop(p)
        stop_ingest.set()
        ingest.join(timeout=60)
    report = os.environ.get("QILU_EDGE_OUTAGE_REPORT")  # bench/edge_outage.py reads it
    if report:
        Path(report).write_text(
            json.dumps(
                {
                    "outage_s": outage_s,
                    "rate": rate,
                    "readings": total,
                    "stored": run.stored(),
                    "duplicates": duplicates(run),
                    "waiting_at_end_of_outage": waiting,
                    "peak_disk_bytes": peak,
                    "disk_bound_bytes": max_bytes,
                    "stored_after_broker_back_s": round(caught_up_s, 1),
                    "ingest_restarts": len(restarts),
                }
            )
        )
    report_tally(  # the fault suite's tally line (docs/faults.md)
        Tally(
            "broker_outage_edge_agent",
            total,
            run.stored(),
            max(0, total - run.stored()),
            duplicates(run),
            {"outage_s": outage_s, "peak_disk_bytes": peak, "disk_bound_bytes": max_bytes},
        )
    )
    assert waiting > rate * outage_s * 0.8, "the readings of the outage waited in the buffer"
    assert stored_before < total - rate * outage_s * 0.8
    assert peak <= max_bytes
    assert run.stored() == total
    assert duplicates(run) == 0
    assert sent >= total - stored_before


def disk(path: Path) -> int:
    return sum(
        q.stat().st_size
        for q in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"))
        if q.exists()
    )
