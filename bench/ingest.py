"""Ingest benchmark: sustained readings/s into the deduplicating table, the raw-COPY ceiling,
produce-to-commit latency at a fixed rate, and query latency with 100 million readings stored.

One command, everything on 127.0.0.1, in databases and on topics of its own:

  1. a fresh bench database (postgres mode on the local PostgreSQL), migrated, with a whole
     province's registry (--scale 1.0: ~266,000 devices) and one provisioned agent per sector
     and city; Kafka is filled with a province-like stream: each agent sends what the
     province's simulated agents send (edge_agent/province.py), envelopes of up to 2,000
     readings at the latest every 2 s (--envelope-readings, --envelope-delay-s; a real one-site
     agent's defaults are 500 and 1 s), with every device's metrics at its kind's reporting
     interval, signed like a real agent's (qilu.registry.generate, qilu.contract.Envelope,
     qilu.signing);
  2. the real ingest consumers (`qilu ingest`, --consumers processes) drain it; sustained
     readings/s stored is read from their Prometheus counters over the steady part of the run
     (10 % to 90 % of the readings), with the CPU seconds the consumers and their database
     server processes used in that window (from /proc): the cost per reading, which other
     work on the machine changes far less than the rate; then the same number of readings
     again in a real one-site agent's envelopes (500 readings, 1 s; its own topics and
     consumer group, the first drain's rows emptied out), for the CPU per reading in that
     shape next to the headline's (--skip-one-site-drain leaves it out);
  3. latency: the bench database vacuumed, analysed and checkpointed after the fill (what
     autovacuum would otherwise do within its next naptime, in the window), envelopes
     produced at a fixed --rate readings/s (default 20,000) with current timestamps, a
     --latency-warmup-s warm-up (default 10 s) first and then the measured window
     (--latency-s), whose figures the targets are checked against (the whole run's are
     reported too), each agent at its own phase of the second through a producer that lingers
     as an agent's does (--latency-burst: all agents at the start of each second); a record
     counts as stored when the consumer group's committed offset passes it (offsets are
     committed only after the database transaction), p50/p99 of the time from send to that
     moment (targets 30 and 100 ms), and where it goes (send -> acknowledged; the records'
     age since the broker's append when polled, stored and committed; each batch's database
     transaction);
  4. the raw ceilings: the rows stored in 2, exported with psql, are loaded again with one
     `psql \\copy` into the same (emptied) table with the same partitions and indexes, and
     then with as many binary COPY writers at once as there are consumers (the rows split by
     device), the fair ceiling; the export reads the rows in the order they were stored (each
     batch in key order: storage/writer.py), so the ceilings load the same rows in the same
     order as the ingest did; each ceiling is loaded --ceiling-rounds times (default 3,
     alternated) and the median round counts, every round in the results; both ratios
     ingest / COPY are printed, and the CPU per
     reading of each side: the pipeline's consumers, their database processes and the
     broker's process (from /proc; the shared local broker, so an upper bound) against each
     COPY's database processes, with the cost ratio (target <= 1.5); before them, the
     incremental coverage on the bench database's registry (bench/coverage_incremental.py:
     liveness moving every second, p50/p99 of the API's background computation);
  5. queries with 100 million readings (--big-rows) stored, in the database qilu_bench_big,
     kept between runs and reused when complete (else built: 24 hours of a subset of the
     charging piles written server-side with generate_series, partition by partition, every
     device given a liveness row, rolled up by the real refresh, checked against a
     recomputation): p50/p99 of the coverage of all targets x cities as the API computes it
     (storage.coverage.compute) and as recorded (coverage.latest), and of a 24-hour 1-minute
     series of one device as the API queries it (storage.queries_api.device_readings), and
     the same series from the view readings_1m for comparison.

The run ends with a summary of every figure against issue 17's targets. Writes
bench/results/ingest.json and bench/results/ingest.png. Drops the ingest database and
topics at the end unless --keep (qilu_bench_big stays: drop it by hand to rebuild it). Needs
the local servers (`qilu services up kafka postgres`) and, to build qilu_bench_big, about
25 GB free on the disk of the PostgreSQL data (checked first).

    .venv/bin/python bench/ingest.py                        # everything, ~15-40 min on 2 cores
    .venv/bin/python bench/ingest.py --skip-big --readings 3000000   # the ingest figures only
    QILU_KAFKA__BOOTSTRAP=127.0.0.11:29092,127.0.0.12:29092,127.0.0.13:29092 \\
      .venv/bin/python bench/ingest.py --skip-big --out bench/results/ingest.rf3.json
                                    # on the cluster profile: replication factor 3, acks=all
    .venv/bin/python bench/ingest.py --skip-ingest          # the query figures only
    .venv/bin/python bench/ingest.py --profile              # + a cProfile of one consumer
    git worktree add ../before <rev> && .venv/bin/python bench/ingest.py --skip-big \\
      --consumers-from ../before    # the consumers of <rev>, this bench's load and ceilings
    .venv/bin/python bench/ingest.py --mode timescale --scale 0.02 --readings 200000

--mode timescale measures only the writer's cost on the TimescaleDB test engine (port 15433,
`qilu services up timescale`): a schema of its own, one writer on the row-limited path (array
statements of 500 rows), the engine's and the writer's CPU per reading; no Kafka, consumers or
ceiling (the engine takes one connection and no COPY, and cannot be pointed at a private
schema from a consumer process). Results in bench/results/ingest.timescale.json. The registry
goes in 100 rows per statement batch: a larger pipelined batch crosses the engine's message
limit and crashes the engine.

Figures from a 2-core machine that also runs the broker, the database and the load generator
are for the whole pipeline on one box; other work on the machine makes them lower (the JSON
records the machine's busy CPU per second and the load average).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import os
import pstats
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_agent.province import (  # noqa: E402
    PROVINCE_ENVELOPE_DELAY_S,
    PROVINCE_ENVELOPE_READINGS,
)
from psycopg import sql  # noqa: E402

from bench import coverage_incremental as coverage_bench  # noqa: E402
from bench.common import run_header  # noqa: E402
from qilu.catalog import load_catalog  # noqa: E402
from qilu.contract import Envelope, Sector  # noqa: E402
from qilu.devices import KINDS  # noqa: E402
from qilu.ports import free_port  # noqa: E402
from qilu.registry import Registry, generate  # noqa: E402
from qilu.settings import DatabaseSettings, Settings, StorageMode, load  # noqa: E402
from storage import coverage, maintain, migrate  # noqa: E402
from storage.db import connect  # noqa: E402
from storage.registry_store import load_registry  # noqa: E402
from stream.topics import deadletter_topic, ensure_topics, readings_topic, readings_topics  # noqa: E402

RESULTS = ROOT / "bench" / "results"
# how the simulated agents form envelopes: like the province's simulated agents, one per sector
# and city (edge-agent/edge_agent/province.py, docs/capacity.md "the agents"): up to 2,000
# readings, sent at the latest 2 s after the envelope's first readings. A real one-site
# agent's defaults (agent.batch_max_readings 500, batch_max_delay_s 1) are
# --envelope-readings 500 --envelope-delay-s 1, the benchmark's shape until 2026-12-06
ENVELOPE_READINGS = PROVINCE_ENVELOPE_READINGS
ENVELOPE_DELAY_S = round(PROVINCE_ENVELOPE_DELAY_S)
BIG_BYTES_PER_ROW = 230  # heap + primary key + rollups, measured on PostgreSQL 15, with margin


def say(msg: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {msg}", flush=True)


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


class CpuSampler:
    """Share of the machine's CPU time that was busy, per second (from /proc/stat), so that a
    slow second can be told apart from a second in which other work held the cores."""

    def __init__(self) -> None:
        self.busy: dict[int, float] = {}
        self.stop = threading.Event()
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _read() -> tuple[int, int]:
        with Path("/proc/stat").open() as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    def _run(self) -> None:
        prev = self._read()
        while not self.stop.wait(1.0):
            cur = self._read()
            total = cur[1] - prev[1]
            self.busy[int(time.monotonic() - self.started)] = (
                round(100 * (cur[0] - prev[0]) / total, 1) if total else 0.0
            )
            prev = cur

    def __enter__(self) -> CpuSampler:
        if Path("/proc/stat").exists():
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=5)


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all cores, from /proc/stat)."""
    with Path("/proc/stat").open() as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def backend_pids(settings: Settings) -> list[int]:
    """The server processes of the connections to the bench database (the consumers' pools).
    Client backends only: an autovacuum worker of the bench database is not the pipeline's
    work, and the ceilings count only their COPY's own server process (fair_start())."""
    with connect(settings.db, autocommit=True) as conn:
        return [
            int(r[0])
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND backend_type = 'client backend'"
            )
        ]


# -- the province stream ----------------------------------------------------------------------
@dataclass
class Agent:
    agent_id: str
    sector: Sector
    seq: int = 0
    env: Envelope | None = None
    sites: set[str] = field(default_factory=set)
    cycle: int = 0  # its second within the envelope delay: the agents send staggered


# agent id -> what signs its envelopes (qilu.signing.Signer), shared by every stream
SIGNERS: dict[str, Any] = {}


def headers_for(agent: Agent, value: bytes) -> list[tuple[str, bytes]] | None:
    """The signature headers a real agent sends (docs/adr/0010), if the agents are provisioned."""
    signer = SIGNERS.get(agent.agent_id)
    return signer.headers(value) if signer is not None else None


def provision_agents(settings: Settings, stream: ProvinceStream) -> int:
    """Provision every agent of ``stream`` (a key pair each, its sites) in the bench database,
    so the consumers verify signed envelopes as in production. Returns how many."""
    from qilu.signing import Signer, generate_key
    from storage import agents

    with connect(settings.db) as conn:
        for agent in stream.agents:
            kp = generate_key()
            agents.provision(conn, agent.agent_id, sorted(agent.sites), kp.public, actor="bench")
            SIGNERS[agent.agent_id] = Signer(1, kp.private_b64)
        conn.commit()
    return len(stream.agents)


@dataclass
class ProvinceStream:
    """Every device reports all its metrics once per its kind's interval, at a fixed phase;
    one agent per sector and city batches them into envelopes like the province's simulated
    agents do: an envelope goes when it holds ``envelope_readings``, or at the end of the
    ``envelope_delay_s``-th second after it was opened (each agent at its own second of that
    cycle, so not all agents send in the same second)."""

    reg: Registry
    seed: int = 1
    fraction: float = 1.0  # share of the devices that report (to hit a target rate)
    envelope_readings: int = ENVELOPE_READINGS
    envelope_delay_s: int = ENVELOPE_DELAY_S
    agents: list[Agent] = field(default_factory=list)
    # kind -> second within the cycle -> [(device id, agent index, phase in us within the s)]
    schedule: dict[str, dict[int, list[tuple[str, int, int]]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        sites = self.reg.site_map()
        index: dict[tuple[Sector, str], int] = {}
        for dev in self.reg.devices:
            if rng.random() >= self.fraction:
                continue
            site = sites[dev.site_id]
            key = (site.sector, site.city_code)
            if key not in index:
                index[key] = len(self.agents)
                self.agents.append(
                    Agent(
                        f"bench-{site.sector.value}-{site.city_code}",
                        site.sector,
                        cycle=len(self.agents) % max(1, self.envelope_delay_s),
                    )
                )
            self.agents[index[key]].sites.add(dev.site_id)
            interval = max(1, round(KINDS[dev.kind].interval_s))
            phase_us = rng.randrange(interval * 1_000_000)
            slot = self.schedule.setdefault(dev.kind, {}).setdefault(phase_us // 1_000_000, [])
            slot.append((dev.device_id, index[key], phase_us % 1_000_000))

    @property
    def rate(self) -> float:
        """Readings per second of the whole stream."""
        total = 0.0
        for kind, slots in self.schedule.items():
            spec = KINDS[kind]
            n = sum(len(v) for v in slots.values())
            total += n * len(spec.metrics) / max(1, round(spec.interval_s))
        return total

    def second(self, t0_us: int, s: int, sent_at_us: int) -> Iterator[tuple[Agent, Envelope]]:
        """The envelopes of second ``s`` after ``t0_us``: full ones as they fill, then those
        of the agents whose delay ends with this second (an agent sends at least once per
        ``envelope_delay_s``; :meth:`rest` yields what is still open at the end)."""
        rnd = random.random
        size = self.envelope_readings
        for kind, slots in self.schedule.items():
            spec = KINDS[kind]
            interval = max(1, round(spec.interval_s))
            due = slots.get(s % interval)
            if not due:
                continue
            base = t0_us + s * 1_000_000
            metrics = [(m.key, m.low, m.high - m.low) for m in spec.metrics]
            for device_id, a, frac in due:
                agent = self.agents[a]
                env = agent.env
                if env is None:
                    env = agent.env = Envelope(agent.agent_id, "bench", agent.seq, sent_at_us)
                    agent.seq += 1
                ts = base + frac
                for key, low, span in metrics:
                    env.devices.append(device_id)
                    env.metrics.append(key)
                    env.ts_us.append(ts)
                    env.values.append(low + rnd() * span)
                    env.qualities.append(0)
                if len(env.devices) >= size:
                    agent.env = None
                    yield agent, env
        delay = max(1, self.envelope_delay_s)
        for agent in self.agents:
            if (s + agent.cycle) % delay == delay - 1 and agent.env is not None:
                env, agent.env = agent.env, None
                if env.devices:
                    env.sent_at_us = sent_at_us
                    yield agent, env

    def rest(self) -> Iterator[tuple[Agent, Envelope]]:
        """The envelopes still open (at the end of a stream)."""
        for agent in self.agents:
            if agent.env is not None:
                env, agent.env = agent.env, None
                if env.devices:
                    yield agent, env


# what an edge agent's producer waits for more records before it sends (edge_agent/kafka_io.py)
AGENT_LINGER_MS = 5


def new_producer(settings: Settings, linger_ms: int = 20) -> Any:
    from kafka import KafkaProducer

    return KafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap,
        acks="all",
        linger_ms=linger_ms,
        batch_size=1 << 20,
        max_request_size=4 << 20,
    )


def fill_kafka(settings: Settings, stream: ProvinceStream, readings: int) -> dict[str, Any]:
    """Produce ``readings`` worth of the stream, timestamps ending a few seconds ago."""
    seconds = max(1, round(readings / stream.rate))
    t0 = (time.time_ns() // 1000) - (seconds + 5) * 1_000_000
    producer = new_producer(settings)
    sent_readings = envelopes = size = 0
    started = last = time.monotonic()
    try:
        for s in range(seconds + 1):
            due = stream.second(t0, s, t0 + (s + 1) * 1_000_000) if s < seconds else stream.rest()
            for agent, env in due:
                value = env.encode()
                producer.send(
                    readings_topic(settings.kafka, agent.sector),
                    key=agent.agent_id.encode(),
                    value=value,
                    headers=headers_for(agent, value),
                )
                sent_readings += len(env.devices)
                envelopes += 1
                size += len(value)
            if time.monotonic() - last > 5:
                last = time.monotonic()
                say(
                    f"  filling Kafka: {sent_readings:,} readings in {envelopes:,} envelopes "
                    f"({sent_readings / (last - started):,.0f} readings/s)"
                )
        producer.flush()
    finally:
        producer.close()
    took = time.monotonic() - started
    say(
        f"  Kafka holds {sent_readings:,} readings in {envelopes:,} envelopes "
        f"({size / 1e6:,.0f} MB, {seconds} s of province time) after {took:,.0f} s"
    )
    return {
        "readings": sent_readings,
        "envelopes": envelopes,
        "bytes": size,
        "province_seconds": seconds,
        "fill_seconds": round(took, 1),
    }


# -- the consumers ------------------------------------------------------------------------------
class Consumers:
    """`qilu ingest` processes on the bench database and topics, scraped for their counters."""

    def __init__(
        self, settings: Settings, n: int, batch_records: int, group: str, code: Path = ROOT
    ) -> None:
        self.settings, self.n, self.batch_records, self.group = settings, n, batch_records, group
        self.code = code  # the checkout whose `qilu ingest` runs (--consumers-from)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []

    def env(self, port: int) -> dict[str, str]:
        s = self.settings
        return {
            **os.environ,
            "QILU_DB__NAME": s.db.name,
            "QILU_KAFKA__TOPIC_PREFIX": s.kafka.topic_prefix,
            "QILU_INGEST__GROUP_ID": self.group,
            "QILU_INGEST__MAX_BATCH_RECORDS": str(self.batch_records),
            "QILU_INGEST__METRICS_PORT": str(port),
            "QILU_STORAGE__MAINTAIN_IN_INGEST": "false",
            "QILU_LOG_LEVEL": "WARNING",
            **(
                {"PYTHONPATH": f"{self.code}{os.pathsep}{self.code / 'edge-agent'}"}
                if self.code != ROOT
                else {}
            ),
        }

    def start(self) -> None:
        for _ in range(self.n):
            port = free_port()
            self.ports.append(port)
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "ops.cli", "ingest", "--metrics-port", str(port)],
                    cwd=self.code,
                    env=self.env(port),
                )
            )

    def scrape(self) -> list[str] | None:
        """Each consumer's Prometheus text (None until all answer)."""
        texts = []
        for port in self.ports:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    texts.append(r.read().decode())
            except OSError:
                return None
        return texts

    def stored(self) -> float:
        """Readings stored so far, summed over the consumers (NaN until all answer)."""
        texts = self.scrape()
        if texts is None:
            return float("nan")
        total = 0.0
        for text in texts:
            m = re.search(r'^qilu_ingest_readings_total\{outcome="stored"\} (\S+)$', text, re.M)
            total += float(m.group(1)) if m else 0.0
        return total

    def histogram(self, name: str) -> dict[str, dict[float, float]]:
        """A histogram of the consumers, summed over them: its label's value (the stage of
        qilu_ingest_record_age_seconds; "" without one) -> upper bound -> observations at
        most that (the cumulative buckets)."""
        out: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
        pattern = re.compile(rf'^{name}_bucket\{{le="([^"]+)"(?:,stage="(\w+)")?\}} (\S+)$', re.M)
        for text in self.scrape() or []:
            for le, stage, n in pattern.findall(text):
                out[stage][float(le)] += float(n)
        return out

    def record_age(self) -> dict[str, dict[float, float]]:
        """qilu_ingest_record_age_seconds: stage -> cumulative buckets."""
        return self.histogram("qilu_ingest_record_age_seconds")

    def check_alive(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(f"an ingest process exited with status {p.returncode}")

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs.clear()


def histogram_quantiles(
    before: dict[float, float], after: dict[float, float], qs: tuple[float, ...] = (50, 99)
) -> dict[str, float | str]:
    """Quantiles (ms) of what a cumulative histogram counted between two scrapes,
    interpolated linearly within the bucket (beyond the last finite bound: "> bound")."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    out: dict[str, float | str] = {"records": int(total)}
    for q in qs:
        if not total:
            out[f"p{q:g}"] = float("nan")
            continue
        rank = q / 100 * total
        i = next(i for i, c in enumerate(counts) if c >= rank)
        if math.isinf(bounds[i]):
            out[f"p{q:g}"] = f"> {bounds[i - 1] * 1000:g}"
            continue
        lo, below = (bounds[i - 1], counts[i - 1]) if i else (0.0, 0.0)
        share = (rank - below) / (counts[i] - below) if counts[i] > below else 1.0
        out[f"p{q:g}"] = round((lo + share * (bounds[i] - lo)) * 1000, 1)
    return out


def broker_pids(settings: Settings) -> list[int]:
    """The processes of the Kafka brokers the bench talks to: the single broker of `qilu
    services`, or the three of its cluster profile when QILU_KAFKA__BOOTSTRAP names them."""
    from ops.services import Services

    svc = settings.services
    if settings.kafka.bootstrap == f"{svc.host}:{svc.kafka_port}":
        pid = Services(svc, settings.db).pid("kafka")
        return [pid] if pid is not None else []
    cluster = Services(svc, settings.db, profile="cluster")
    pids = [cluster.pid(name) for name in ("kafka-1", "kafka-2", "kafka-3")]
    return [p for p in pids if p is not None]


def measure_sustained(
    consumers: Consumers, settings: Settings, expected: int, timeout_s: float
) -> dict[str, Any]:
    """Sample the stored counter every second until everything is stored. Over the steady
    window, also the CPU seconds used by the consumers, by their database server processes
    and by the broker's process (from /proc), against what the whole machine used: the
    pipeline's cost per reading, which other work on the machine does not change (much)."""
    samples: list[tuple[float, float]] = []
    cpu = CpuSampler().__enter__()
    marks: list[tuple[float, dict[int, float], dict[int, float], float, float]] = []
    server: list[dict[str, float]] = []  # checkpoints, WAL at each mark (server_activity)
    brokers = broker_pids(settings)

    def mark(stored: float) -> None:
        db = {pid: proc_cpu_s(pid) for pid in backend_pids(settings)}
        ours = {p.pid: proc_cpu_s(p.pid) for p in consumers.procs}
        broker_s = sum(map(proc_cpu_s, brokers)) if brokers else float("nan")
        marks.append((stored, ours, db, machine_busy_s(), broker_s))
        server.append(server_activity(settings))

    started = last_say = time.monotonic()
    while time.monotonic() - started < timeout_s:
        time.sleep(1.0)
        consumers.check_alive()
        got = consumers.stored()
        if math.isnan(got):  # not up yet
            continue
        now = time.monotonic()
        samples.append((now - started, got))
        if (not marks and got >= 0.1 * expected) or (len(marks) == 1 and got >= 0.9 * expected):
            mark(got)
        if now - last_say >= 5:
            last_say = now
            rate = (samples[-1][1] - samples[-6][1]) / 5 if len(samples) > 5 else 0
            say(f"  stored {got:,.0f} of {expected:,} ({rate:,.0f} readings/s over 5 s)")
        if got >= expected:
            break
    cpu.__exit__()
    # the steady part: from 10 % to 90 % of the readings (excludes start-up and the tail)
    lo = next((t, n) for t, n in samples if n >= 0.1 * expected)
    hi = next(((t, n) for t, n in samples if n >= 0.9 * expected), samples[-1])
    rate = (hi[1] - lo[1]) / (hi[0] - lo[0]) if hi[0] > lo[0] else 0.0
    out: dict[str, Any] = {
        "readings_per_s": round(rate),
        "stored": int(samples[-1][1]) if samples else 0,
        "window_s": round(hi[0] - lo[0], 1),
        "samples": [(round(t, 1), int(n)) for t, n in samples],
        "machine_cpu_busy_pct": cpu.busy,
    }
    if len(marks) == 2:
        (n0, c0, d0, m0, b0), (n1, c1, d1, m1, b1) = marks
        n = max(1.0, n1 - n0)
        consumers_s = sum(c1[p] - c0.get(p, 0.0) for p in c1)
        db_s = sum(d1[p] - d0.get(p, 0.0) for p in d1)
        broker_s = b1 - b0
        pipeline_s = consumers_s + db_s + broker_s
        out["cpu_window"] = {
            "readings": int(n),
            "consumers_cpu_s": round(consumers_s, 2),
            "database_cpu_s": round(db_s, 2),
            "broker_cpu_s": round(broker_s, 2),
            "machine_busy_cpu_s": round(m1 - m0, 2),
            "pipeline_share_of_busy_pct": round(100 * pipeline_s / (m1 - m0), 1),
            "consumers_us_per_reading": round(consumers_s / n * 1e6, 2),
            "database_us_per_reading": round(db_s / n * 1e6, 2),
            "broker_us_per_reading": round(broker_s / n * 1e6, 2),
            "pipeline_us_per_reading": round(pipeline_s / n * 1e6, 2),
            "brokers": len(brokers),
            "note": "the brokers' processes are shared: other users' topics on them are counted"
            " too (an upper bound for the pipeline's share)",
            "server": activity_between(server[0], server[1], int(n)),
        }
    return out


# a real one-site agent's envelope shape (agent.batch_max_readings, agent.batch_max_delay_s),
# drained next to the province agents' for the consumers' CPU per reading in each shape
ONE_SITE_ENVELOPE = (500, 1)


def drain_one_site_shape(
    settings: Settings,
    reg: Registry,
    readings: int,
    consumers: int,
    batch_records: int,
    code: Path = ROOT,
) -> dict[str, Any]:
    """The same drain with a real one-site agent's envelopes (:data:`ONE_SITE_ENVELOPE`), for
    the consumers' CPU per reading side by side with the headline's shape: the readings of
    the first drain are emptied out (the same fresh inserts), Kafka is filled on topics of
    their own (``settings``' prefix), drained by consumers of their own group; the first
    drain's consumers stay idle meanwhile."""
    with connect(settings.db) as conn:
        conn.execute("TRUNCATE readings, device_liveness, rollup_invalidations")
        conn.commit()
    ensure_topics(settings.kafka)
    stream = ProvinceStream(
        reg, envelope_readings=ONE_SITE_ENVELOPE[0], envelope_delay_s=ONE_SITE_ENVELOPE[1]
    )
    fill = fill_kafka(settings, stream, readings)
    say(f"  the same start (VACUUM (ANALYZE), CHECKPOINT): {fair_start(settings)} s")
    drain = Consumers(
        settings, consumers, batch_records, f"{settings.kafka.topic_prefix}-one", code
    )
    try:
        drain.start()
        out = measure_sustained(
            drain, settings, fill["readings"], timeout_s=max(600, 1e-3 * readings)
        )
    finally:
        drain.stop()
    out.pop("samples", None)
    return {
        "envelope_readings": ONE_SITE_ENVELOPE[0],
        "envelope_delay_s": ONE_SITE_ENVELOPE[1],
        "kafka_fill": fill,
        **out,
    }


def profile_one_consumer(settings: Settings, group: str, seconds: float) -> str:
    """Run one consumer in this process under cProfile; returns the top of the profile."""
    from stream.cli import build_consumer

    stop = threading.Event()
    s = settings.model_copy(
        update={"ingest": settings.ingest.model_copy(update={"group_id": group})}
    )
    consumer, pool = build_consumer(s, stop)
    timer = threading.Timer(seconds, stop.set)
    prof = cProfile.Profile()
    timer.start()
    try:
        prof.runcall(consumer.run)
    finally:
        timer.cancel()
        pool.close()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
    # file names relative to the checkout and the environment, not this machine's paths
    return out.getvalue().replace(f"{sys.prefix}/", "").replace(f"{ROOT}/", "")


# -- the raw ceiling ----------------------------------------------------------------------------
def psql(settings: Settings, command: str, *, script: bool = False, options: str = "") -> float:
    """Run one psql command (or, with ``script``, a psql script given as text on stdin);
    ``options``: server settings for its session (PGOPTIONS). Returns the wall time it took."""
    env = {**os.environ, "PGPASSWORD": settings.db.password.get_secret_value()}
    if options:
        env["PGOPTIONS"] = options
    args = [
        "psql",
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        settings.db.host,
        "-p",
        str(settings.db.port),
        "-U",
        settings.db.user,
        "-d",
        settings.db.name,
    ]
    started = time.monotonic()
    if script:
        subprocess.run([*args, "-f", "-"], env=env, check=True, input=command.encode())
    else:
        subprocess.run([*args, "-c", command], env=env, check=True)
    return time.monotonic() - started


# the exports read each partition in the order its rows were stored: a parallel scan would
# interleave blocks of the workers and hand the ceilings a less ordered stream than the ingest's
SERIAL_SCAN = "-c max_parallel_workers_per_gather=0"


def export_rows(settings: Settings, path: Path) -> None:
    """The stored rows, as psql writes them (text COPY), for the raw-ceiling load."""
    psql(
        settings,
        "\\copy (SELECT device_pk, metric_id, ts, value, quality FROM readings)"  # noqa: S608
        f" TO '{path}'",
        options=SERIAL_SCAN,
    )


def raw_copy(settings: Settings, path: Path) -> dict[str, Any]:
    """Empty readings (same table, same partitions and indexes) and load ``path`` with one
    psql \\copy; returns rows/s, and the CPU seconds of psql and of its server process."""
    with connect(settings.db) as conn:
        conn.execute("TRUNCATE readings")
        conn.commit()
    fair_start(settings)
    server = server_activity(settings)
    say(
        f"  loading the same rows with psql \\copy into the emptied table"
        f" ({path.stat().st_size / 1e6:,.0f} MB) ..."
    )
    stats = path.parent / "backend"
    # the server process's /proc/PID/stat just before and after the copy
    script = (
        "SELECT pg_backend_pid() AS pid \\gset\n"  # noqa: S608 - fixed text, our paths
        "\\setenv QILU_BENCH_PID :pid\n"
        f"\\! cat /proc/$QILU_BENCH_PID/stat > '{stats}.0'\n"
        f"\\copy readings (device_pk, metric_id, ts, value, quality) FROM '{path}'\n"
        f"\\! cat /proc/$QILU_BENCH_PID/stat > '{stats}.1'\n"
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    took = psql(settings, script, script=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    psql_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    ticks = []
    for suffix in (".0", ".1"):
        f = Path(f"{stats}{suffix}").read_text().rsplit(")", 1)[1].split()
        ticks.append(int(f[11]) + int(f[12]))
    backend_s = (ticks[1] - ticks[0]) / os.sysconf("SC_CLK_TCK")
    with connect(settings.db) as conn:
        row = conn.execute("SELECT count(*) FROM readings").fetchone()
    loaded = int(row[0]) if row else 0
    return {
        "rows": loaded,
        "seconds": round(took, 2),
        "readings_per_s": round(loaded / took),
        "psql_cpu_s": round(psql_s, 2),
        "database_cpu_s": round(backend_s, 2),
        "database_us_per_row": round(backend_s / max(1, loaded) * 1e6, 2),
        "server": activity_between(server, server_activity(settings), loaded),
    }


def export_binary_parts(settings: Settings, folder: Path, n: int) -> list[Path]:
    """The stored rows in ``n`` binary COPY files, split by device (device_pk mod n), for the
    parallel raw ceiling."""
    paths = []
    for i in range(n):
        path = folder / f"readings.{i}.bin"
        psql(
            settings,
            "\\copy (SELECT device_pk, metric_id, ts, value, quality FROM readings"  # noqa: S608
            f" WHERE device_pk % {n} = {i}) TO '{path}' (FORMAT binary)",
            options=SERIAL_SCAN,
        )
        paths.append(path)
    return paths


def parallel_copy(settings: Settings, paths: list[Path]) -> dict[str, Any]:
    """Empty readings and load ``paths`` at once, one `psql \\copy ... (FORMAT binary)` per
    file (as many writers as the ingest has consumers); returns rows/s over the wall time of
    the slowest, and the CPU seconds of the psql processes and of their server processes."""
    with connect(settings.db) as conn:
        conn.execute("TRUNCATE readings")
        conn.commit()
    fair_start(settings)
    server = server_activity(settings)
    say(f"  loading the same rows with {len(paths)} binary COPY writers at once ...")
    env = {**os.environ, "PGPASSWORD": settings.db.password.get_secret_value()}
    args = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", settings.db.host]
    args += ["-p", str(settings.db.port), "-U", settings.db.user, "-d", settings.db.name]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    procs = []
    for path in paths:
        stats = path.with_suffix(".backend")
        script = (
            "SELECT pg_backend_pid() AS pid \\gset\n"  # noqa: S608 - fixed text, our paths
            "\\setenv QILU_BENCH_PID :pid\n"
            f"\\! cat /proc/$QILU_BENCH_PID/stat > '{stats}.0'\n"
            "\\copy readings (device_pk, metric_id, ts, value, quality)"
            f" FROM '{path}' (FORMAT binary)\n"
            f"\\! cat /proc/$QILU_BENCH_PID/stat > '{stats}.1'\n"
        )
        p = subprocess.Popen([*args, "-f", "-"], env=env, stdin=subprocess.PIPE)
        assert p.stdin is not None  # noqa: S101 - stdin=PIPE
        p.stdin.write(script.encode())
        p.stdin.close()
        procs.append(p)
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError(f"a parallel COPY writer failed with status {p.returncode}")
    took = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    psql_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    backend_s = 0.0
    for path in paths:
        ticks = []
        for suffix in (".0", ".1"):
            text = Path(f"{path.with_suffix('.backend')}{suffix}").read_text()
            f = text.rsplit(")", 1)[1].split()
            ticks.append(int(f[11]) + int(f[12]))
        backend_s += (ticks[1] - ticks[0]) / os.sysconf("SC_CLK_TCK")
    with connect(settings.db) as conn:
        row = conn.execute("SELECT count(*) FROM readings").fetchone()
    loaded = int(row[0]) if row else 0
    return {
        "writers": len(paths),
        "rows": loaded,
        "seconds": round(took, 2),
        "readings_per_s": round(loaded / took),
        "psql_cpu_s": round(psql_s, 2),
        "database_cpu_s": round(backend_s, 2),
        "database_us_per_row": round(backend_s / max(1, loaded) * 1e6, 2),
        "server": activity_between(server, server_activity(settings), loaded),
    }


def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round whose database CPU per row is the median (the lower middle of an even count),
    with every round's figure next to it."""
    ordered = sorted(rounds, key=lambda r: float(r["database_us_per_row"]))
    pick = dict(ordered[(len(ordered) - 1) // 2])
    pick["rounds_database_us_per_row"] = [r["database_us_per_row"] for r in rounds]
    pick["rounds"] = len(rounds)
    return pick


def ceilings(
    result: dict[str, Any], settings: Settings, export: Path, parts: list[Path], rounds: int
) -> None:
    """Both raw ceilings, ``rounds`` times each, alternated (one psql \\copy, then the parallel
    binary writers). A single load's CPU per row moved by up to 8 % between two quiet runs with
    nothing else changed, so the cost ratio takes each ceiling's median round."""
    raw: list[dict[str, Any]] = []
    par: list[dict[str, Any]] = []
    for i in range(1, rounds + 1):
        say(f"[4/5] raw ceiling, round {i} of {rounds}: the same rows with psql \\copy")
        raw.append(raw_copy(settings, export))
        say(
            f"  psql \\copy: {raw[-1]['readings_per_s']:,} rows/s,"
            f" database {raw[-1]['database_us_per_row']} µs per row"
        )
        say(f"[4/5] fair ceiling, round {i} of {rounds}: {len(parts)} binary COPY writers at once")
        par.append(parallel_copy(settings, parts))
        say(
            f"  {par[-1]['writers']} binary COPY writers: {par[-1]['readings_per_s']:,} rows/s,"
            f" database {par[-1]['database_us_per_row']} µs per row"
        )
    result["raw_copy"], result["parallel_copy"] = median_round(raw), median_round(par)
    for key, name in (("raw_copy", "psql \\copy"), ("parallel_copy", "parallel binary COPY")):
        ratio = result["sustained"]["readings_per_s"] / result[key]["readings_per_s"]
        result[f"ratio_ingest_to_{key.removeprefix('raw_')}"] = round(ratio, 3)
        say(
            f"  {name}, median of {len(raw)} rounds: database"
            f" {result[key]['database_us_per_row']} µs per row (rounds:"
            f" {result[key]['rounds_database_us_per_row']}); ingest is {ratio:.0%} of its rows/s"
        )


def settle(settings: Settings, max_s: float = 180) -> float:
    """After a bulk load: CHECKPOINT and wait for the autovacuum workers of the bench database
    to finish, so a latency run measures steady operation, not the aftermath of the load."""
    started = time.monotonic()
    with connect(settings.db, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        while time.monotonic() - started < max_s:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE backend_type = 'autovacuum worker' AND datname = current_database()"
            ).fetchone()
            if not row or not row[0]:
                break
            time.sleep(1)
    return round(time.monotonic() - started, 1)


def fair_start(settings: Settings) -> float:
    """How every measured write phase starts (the sustained drain and both ceilings): the
    bench database vacuumed and analysed (what autovacuum would otherwise do within its next
    naptime, inside one window and not the other), then settle(): a CHECKPOINT (it resets the
    checkpoint timer, so no timed checkpoint falls in the next checkpoint_timeout, and every
    page a phase writes for the first time after it costs the same full-page image in each
    phase) and no autovacuum worker of the bench database left running."""
    started = time.monotonic()
    with connect(settings.db, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
    settle(settings)
    return round(time.monotonic() - started, 1)


def server_activity(settings: Settings) -> dict[str, float]:
    """The server's counters that a phase's database CPU per row depends on besides its rows:
    checkpoints (after one, the first change of each page writes a full-page image, which
    wal_compression compresses in the writing process: a checkpoint inside one phase and
    not the other moves its CPU per row), full-page images, WAL records and bytes.
    Cluster-wide: other databases' writers and their CHECKPOINT, DROP DATABASE add to them;
    the WAL statistics of a busy process reach pg_stat_wal up to a second late."""
    with connect(settings.db, autocommit=True) as conn:
        row = conn.execute(
            "SELECT (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter),"
            " pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0'), wal_fpi, wal_records"
            " FROM pg_stat_wal"
        ).fetchone()
    keys = ("checkpoints", "wal_bytes", "wal_fpi", "wal_records")
    return {k: float(v) for k, v in zip(keys, row or (0, 0, 0, 0), strict=True)}


def activity_between(
    before: dict[str, float], after: dict[str, float], rows: int
) -> dict[str, float]:
    """What the server did between two server_activity() readings, per row written."""
    d = {k: after[k] - before[k] for k in before}
    n = max(1, rows)
    return {
        "checkpoints": int(d["checkpoints"]),
        "wal_fpi": int(d["wal_fpi"]),
        "fpi_per_1000_rows": round(1000 * d["wal_fpi"] / n, 2),
        "wal_bytes_per_row": round(d["wal_bytes"] / n, 1),
        "wal_records_per_row": round(d["wal_records"] / n, 3),
    }


def cost_summary(result: dict[str, Any]) -> dict[str, Any]:
    """CPU per reading of the pipeline (consumers + database + broker) against the database's
    CPU per row of each raw COPY, and their ratios (issue 17's target: <= 1.5)."""
    out: dict[str, Any] = {"target_ratio": 1.5}
    window = result.get("sustained", {}).get("cpu_window")
    if window is None:
        return out
    pipeline = window["pipeline_us_per_reading"]
    out["pipeline_us_per_reading"] = pipeline
    for key in ("raw_copy", "parallel_copy"):
        if key in result:
            per_row = result[key]["database_us_per_row"]
            out[f"{key}_database_us_per_row"] = per_row
            out[f"ratio_pipeline_to_{key}"] = round(pipeline / per_row, 2) if per_row else None
    # the server's activity in each window: the same conditions, or the reason they differ
    server = {"sustained": window.get("server")}
    server |= {k: result[k].get("server") for k in ("raw_copy", "parallel_copy") if k in result}
    out["server"] = {k: v for k, v in server.items() if v}
    return out


def cost_lines(cost: dict[str, Any]) -> list[str]:
    if "pipeline_us_per_reading" not in cost:
        return ["CPU per reading: not measured (no steady window)"]
    lines = [
        "pipeline CPU per reading (consumers + database + broker): "
        + f"{cost['pipeline_us_per_reading']} µs"
    ]
    for key, name in (("raw_copy", "one psql \\copy"), ("parallel_copy", "parallel binary COPY")):
        if f"{key}_database_us_per_row" in cost:
            lines.append(
                f"{name}: {cost[f'{key}_database_us_per_row']} µs per row (database);"
                f" cost ratio {cost[f'ratio_pipeline_to_{key}']} (target <= {cost['target_ratio']})"
            )
    server = cost.get("server", {})
    for key, s in server.items():
        lines.append(
            f"server during {key}: {s['checkpoints']} checkpoints, {s['fpi_per_1000_rows']}"
            f" full-page images per 1,000 rows, {s['wal_bytes_per_row']} WAL bytes per row"
        )
    if len({s["checkpoints"] > 0 for s in server.values()}) > 1:
        lines.append(
            "not the same conditions: a checkpoint fell inside some windows and not others"
            " (its full-page images cost the writers CPU); compare the windows without one"
        )
    return lines


# -- latency at a fixed rate --------------------------------------------------------------------
WATCH_INTERVAL_S = 0.005  # how often the committed offsets are read (adds half of it on average)


class CommitWatcher:
    """Records when each produced record is covered by the group's committed offset (the
    consumer commits only after the database transaction committed)."""

    def __init__(self, settings: Settings, group: str) -> None:
        from kafka.admin import KafkaAdminClient

        self.admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap)
        self.group = group
        self.sent: dict[Any, list[tuple[int, float]]] = defaultdict(list)
        self.latencies_s: list[float] = []
        self.sent_at: list[float] = []  # send time of each entry of latencies_s
        self.acked_s: list[float] = []  # send -> the broker's acknowledgement
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def on_sent(self, t_send: float) -> Any:
        from kafka.structs import TopicPartition

        def cb(meta: Any) -> None:
            acked = time.monotonic() - t_send
            with self.lock:
                self.sent[TopicPartition(meta.topic, meta.partition)].append((meta.offset, t_send))
                self.acked_s.append(acked)

        return cb

    def pending(self, resolved: dict[Any, int]) -> bool:
        with self.lock:
            return any(resolved[tp] < len(v) for tp, v in self.sent.items())

    def _watch(self) -> None:
        resolved: dict[Any, int] = defaultdict(int)  # per partition: index into sent[tp]
        deadline = None
        while not self.stop.is_set() or self.pending(resolved):
            if self.stop.is_set():
                deadline = deadline or time.monotonic() + 60
                if time.monotonic() > deadline:
                    break
            offsets = self.admin.list_group_offsets(self.group).get(self.group, {})
            now = time.monotonic()
            with self.lock:
                for tp, meta in offsets.items():
                    recs = self.sent.get(tp)
                    if not recs:
                        continue
                    recs.sort()
                    i = resolved[tp]
                    while i < len(recs) and recs[i][0] < meta.offset:
                        self.latencies_s.append(now - recs[i][1])
                        self.sent_at.append(recs[i][1])
                        i += 1
                    resolved[tp] = i
            time.sleep(WATCH_INTERVAL_S)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=90)
        self.admin.close()


def send_plan(
    envelopes: list[tuple[Agent, Envelope]], phase: dict[str, float], *, burst: bool
) -> list[tuple[float, Agent, Envelope]]:
    """When in the second each envelope is sent: every agent from its own phase on, its
    envelopes spread over the second (agents send on their own clocks), or, with ``burst``,
    all at the start of the second."""
    per_agent: dict[str, int] = defaultdict(int)
    for agent, _ in envelopes:
        per_agent[agent.agent_id] += 1
    seen: dict[str, int] = defaultdict(int)
    plan = []
    for agent, env in envelopes:
        k = seen[agent.agent_id]
        seen[agent.agent_id] += 1
        at = 0.0 if burst else (phase[agent.agent_id] + k / per_agent[agent.agent_id]) % 1.0
        plan.append((at, agent, env))
    plan.sort(key=lambda p: p[0])
    return plan


class DatabaseProbe:
    """Once a second during the latency run, what the bench database's server does besides
    the consumers' transactions: autovacuum workers on it (and their tables), and the buffers
    a checkpoint wrote since the last probe (pg_stat_bgwriter), for the timeline."""

    def __init__(self, settings: Settings) -> None:
        self.conn = connect(settings.db, autocommit=True)
        self.last = self._buffers()

    def _buffers(self) -> int:
        row = self.conn.execute("SELECT buffers_checkpoint FROM pg_stat_bgwriter").fetchone()
        return int(row[0]) if row else 0

    def sample(self) -> dict[str, Any]:
        rows = self.conn.execute(
            "SELECT coalesce(c.relname, '?') FROM pg_stat_progress_vacuum v"
            " LEFT JOIN pg_class c ON c.oid = v.relid WHERE v.datname = current_database()"
            " UNION ALL SELECT coalesce(c.relname, '?') FROM pg_stat_progress_analyze a"
            " LEFT JOIN pg_class c ON c.oid = a.relid WHERE a.datname = current_database()"
        ).fetchall()
        now = self._buffers()
        written, self.last = now - self.last, now
        return {"autovacuum": sorted(str(r[0]) for r in rows), "checkpoint_buffers": written}

    def close(self) -> None:
        self.conn.close()


def latency_figures(
    lat_ms: list[float], sent_at: list[float], started: float, lo: float, hi: float
) -> dict[str, Any]:
    """p50/p99/max of the records sent between ``lo`` and ``hi`` seconds after the start."""
    window = [ms for t, ms in zip(sent_at, lat_ms, strict=True) if lo <= t - started < hi]
    return {
        "from_s": lo,
        "to_s": hi,
        "envelopes": len(window),
        "p50_ms": round(pct(window, 50), 1),
        "p99_ms": round(pct(window, 99), 1),
        "max_ms": round(max(window), 1) if window else None,
    }


def latency(  # noqa: PLR0915 - one linear measurement
    settings: Settings,
    reg: Registry,
    group: str,
    rate: float,
    seconds: float,
    consumers: Consumers,
    *,
    burst: bool = False,
    warmup_s: float = 0.0,
    envelope: tuple[int, int] = (ENVELOPE_READINGS, ENVELOPE_DELAY_S),
) -> dict[str, Any]:
    """Envelopes at ``rate`` readings/s with current timestamps, each agent sending at its
    own phase of the second (``burst``: all agents at the start of each second, a worst
    case), through a producer that lingers as an agent's does; p50/p99 from the send to the
    moment the group's committed offset passes the record. Where the time goes: send ->
    acknowledged (bench), and the record's age since the broker appended it when the
    consumers polled it, stored it and committed its offset (their histograms).

    The first ``warmup_s`` seconds are produced the same way but not measured (the steady
    window, which the targets are checked against, is the ``seconds`` after them); the
    figures over the whole run, warm-up included, are reported next to them. Per second of
    the run, the timeline also holds each stage's p99 (the consumers scraped every second)
    and what the database did besides (:class:`DatabaseProbe`)."""
    probe = ProvinceStream(reg, seed=7, envelope_readings=envelope[0], envelope_delay_s=envelope[1])
    stream = ProvinceStream(
        reg,
        seed=7,
        fraction=min(1.0, rate / probe.rate),
        envelope_readings=envelope[0],
        envelope_delay_s=envelope[1],
    )
    rng = random.Random(11)
    phase = {a.agent_id: rng.random() for a in stream.agents}
    shape = "burst" if burst else "paced"
    say(
        f"  producing {stream.rate:,.0f} readings/s for {seconds:.0f} s with current timestamps"
        f" ({shape}: {len(stream.agents)} agents, producer linger {AGENT_LINGER_MS} ms)"
    )
    producer = new_producer(settings, linger_ms=AGENT_LINGER_MS)
    watcher = CommitWatcher(settings, group)
    watcher.thread.start()
    db_probe = DatabaseProbe(settings)
    ages_before = ages_warm = consumers.record_age()
    flushes_warm = consumers.histogram("qilu_ingest_flush_seconds")[""]
    produced = s = 0
    total_s = warmup_s + seconds
    per_second_ages: list[dict[str, dict[float, float]]] = [ages_before]
    database: list[dict[str, Any]] = []
    cpu = CpuSampler().__enter__()
    started = time.monotonic()
    try:
        while time.monotonic() - started < total_s:
            time.sleep(max(0.0, started + s - time.monotonic()))
            if s:  # what the second before did
                per_second_ages.append(consumers.record_age())
                database.append(db_probe.sample())
            if s == math.ceil(warmup_s) and s:
                ages_warm = per_second_ages[-1]
                flushes_warm = consumers.histogram("qilu_ingest_flush_seconds")[""]
            now_us = time.time_ns() // 1000
            # one second of the province, timestamped within the last second
            second = list(stream.second(now_us - (s + 1) * 1_000_000, s, now_us))
            for at, agent, env in send_plan(second, phase, burst=burst):
                time.sleep(max(0.0, started + s + at - time.monotonic()))
                value = env.encode()
                fut = producer.send(
                    readings_topic(settings.kafka, agent.sector),
                    key=agent.agent_id.encode(),
                    value=value,
                    headers=headers_for(agent, value),
                )
                fut.add_callback(watcher.on_sent(time.monotonic()))
                if s >= warmup_s:
                    produced += len(env.devices)
            if burst:
                producer.flush()
            s += 1
        producer.flush()
    finally:
        producer.close()
        watcher.close()
        cpu.__exit__()
        db_probe.close()
    ages_after = consumers.record_age()
    per_second_ages.append(ages_after)
    flushes_after = consumers.histogram("qilu_ingest_flush_seconds")[""]
    lat_ms = [x * 1000 for x in watcher.latencies_s]
    acked_ms = [x * 1000 for x in watcher.acked_s]
    per_second: dict[int, list[float]] = defaultdict(list)
    for t, ms in zip(watcher.sent_at, lat_ms, strict=True):
        per_second[int(t - started)].append(ms)

    def stage_p99(sec: int, stage: str) -> Any:
        if sec + 1 >= len(per_second_ages):
            return None
        before, after = per_second_ages[sec].get(stage, {}), per_second_ages[sec + 1].get(stage)
        return histogram_quantiles(before, after, (99,))["p99"] if after else None

    steady = latency_figures(lat_ms, watcher.sent_at, started, warmup_s, total_s)
    whole = latency_figures(lat_ms, watcher.sent_at, started, 0.0, total_s)
    return {
        # per second of the run (warm-up included): [second, envelopes sent in it, their p50
        # ms, their max ms, machine CPU busy %, the consumers' p99 age since the append of
        # the records they polled / stored / committed in that second (ms), the autovacuum
        # workers on the bench database's tables at its end, the buffers a checkpoint wrote
        # in it]: where a tail comes from
        "timeline": [
            [
                sec,
                len(v),
                round(pct(v, 50), 1),
                round(max(v), 1),
                cpu.busy.get(sec),
                *(stage_p99(sec, stage) for stage in ("polled", "stored", "committed")),
                *(
                    (database[sec]["autovacuum"], database[sec]["checkpoint_buffers"])
                    if sec < len(database)
                    else (None, None)
                ),
            ]
            for sec, v in sorted(per_second.items())
        ],
        "target_readings_per_s": rate,
        "offered_readings_per_s": round(produced / seconds),
        "shape": shape,
        "agents": len(stream.agents),
        "envelope_readings": stream.envelope_readings,
        "envelope_delay_s": stream.envelope_delay_s,
        "measured_from": "the agent's send of the envelope (the producer's linger included);"
        " the readings' wait in the agent before it, up to envelope_delay_s (its batching), is"
        " not included",
        "producer_linger_ms": AGENT_LINGER_MS,
        "watch_interval_ms": WATCH_INTERVAL_S * 1000,
        "warmup_s": warmup_s,
        "measured_s": seconds,
        "envelopes": sum(len(v) for v in watcher.sent.values()),
        "envelopes_measured": steady["envelopes"],
        # the steady window (after the warm-up): what the targets are checked against
        "p50_ms": steady["p50_ms"],
        "p99_ms": steady["p99_ms"],
        "max_ms": steady["max_ms"],
        # the whole run, warm-up included
        "whole_run": whole,
        # where the time goes (the steady window): send -> acknowledged by the broker
        # (producer linger, append, replication with acks=all), then the record's age since
        # the broker appended it
        "send_to_ack_ms": {
            "p50": round(pct(acked_ms, 50), 1),
            "p99": round(pct(acked_ms, 99), 1),
            "note": "the whole run, warm-up included",
        },
        "age_since_append_ms": {
            stage: histogram_quantiles(ages_warm.get(stage, {}), ages_after[stage])
            for stage in ("polled", "stored", "committed")
            if stage in ages_after
        },
        "age_since_append_ms_whole_run": {
            stage: histogram_quantiles(ages_before.get(stage, {}), ages_after[stage])
            for stage in ("polled", "stored", "committed")
            if stage in ages_after
        },
        # the database transaction of each batch (qilu_ingest_flush_seconds), steady window
        "flush_ms": histogram_quantiles(flushes_warm, flushes_after),
        "samples": [  # [seconds after the start when sent, ms to committed]
            [round(t - started, 2), round(ms, 1)]
            for t, ms in zip(watcher.sent_at, lat_ms, strict=True)
        ],
    }


# -- 100 million readings -----------------------------------------------------------------------
BIG_DB = "qilu_bench_big"
BIG_METRICS = ("connector_status", "power_kw", "energy_kwh", "fault")
BIG_HOURS = 24
BIG_PER_DEVICE_HOUR = 120 * len(BIG_METRICS)  # charging piles: every metric every 30 s


def big_database(base: Settings, rows: int, scale: float) -> tuple[Settings, dict[str, Any]]:
    """The query database ``qilu_bench_big``: reused when a previous run completed it with at
    least ``rows`` readings (new migrations are applied to it first), else built again.
    Returns its settings and what it holds (``bench_big_info``)."""
    db = base.db.model_copy(update={"name": BIG_DB, "mode": StorageMode.POSTGRES})
    settings = base.model_copy(update={"db": db})
    with connect(base.db, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (BIG_DB,)).fetchone()
    if exists:
        with connect(db) as conn:
            migrate.apply(conn, StorageMode.POSTGRES)
            info = None
            if conn.execute("SELECT to_regclass('bench_big_info')").fetchone() != (None,):
                cur = conn.execute("SELECT * FROM bench_big_info")
                row = cur.fetchone()
                names = [c.name for c in cur.description or []]
                info = dict(zip(names, row, strict=True)) if row else None
            conn.commit()
        if info is not None and info["rows"] >= rows:
            say(f"  reusing {BIG_DB}: {info['rows']:,} readings built {info['built_at']:%Y-%m-%d}")
            return settings, {**info, "reused": True}
        say(f"  {BIG_DB} is incomplete or smaller than asked: building it again")
        with connect(base.db, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(BIG_DB)))
    usage = shutil.disk_usage(ROOT)
    need = rows * BIG_BYTES_PER_ROW
    if usage.free < need * 1.2:
        raise RuntimeError(
            f"{BIG_DB} needs ~{need / 1e9:,.0f} GB for {rows:,} readings;"
            f" {usage.free / 1e9:,.0f} GB free"
        )
    with connect(base.db, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(BIG_DB)))
    with connect(db) as conn:
        migrate.apply(conn, StorageMode.POSTGRES)
        load_registry(conn, generate(1, scale))
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    info = fill_big(settings, rows, end)
    start = datetime.fromisoformat(info["start"])
    info["refresh_seconds"] = round(refresh_big(settings, start, end))
    with connect(db, autocommit=True) as conn:
        conn.execute("ANALYZE")
        coverage.snapshot(conn, load_catalog(), end)
        conn.execute(
            "CREATE TABLE bench_big_info AS SELECT %(rows)s::bigint AS rows,"
            " %(devices)s::int AS devices, %(start)s::timestamptz AS start,"
            ' %(end)s::timestamptz AS "end", %(write_seconds)s::int AS write_seconds,'
            " %(refresh_seconds)s::int AS refresh_seconds, now() AS built_at",
            info,
        )
        cur = conn.execute("SELECT * FROM bench_big_info")
        names = [c.name for c in cur.description or []]
        row = cur.fetchone()
    return settings, {**dict(zip(names, row or (), strict=True)), "reused": False}


def fill_big(settings: Settings, rows: int, end: datetime) -> dict[str, Any]:
    """``rows`` readings of charging piles (4 metrics every 30 s) over the 24 hours before
    ``end``, written server-side with generate_series, hour by hour: each hour's partition is
    filled without indexes, then attached (which builds its primary key). Every device of the
    registry gets a liveness row (seen in the ten minutes before ``end``, 5 % never)."""
    devices = -(-rows // (BIG_HOURS * BIG_PER_DEVICE_HOUR))
    start = end - timedelta(hours=BIG_HOURS)
    started = time.monotonic()
    with connect(settings.db, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE bench_piles AS SELECT d.device_pk, (d.device_pk * 7919) % 30000"
                " AS phase_ms FROM devices d WHERE d.kind = 'charging_pile'"
                " ORDER BY d.device_pk LIMIT {}"
            ).format(sql.Literal(devices))
        )
        metrics = [
            r[0]
            for r in conn.execute(
                "SELECT metric_id FROM metrics WHERE key = ANY(%s) ORDER BY metric_id",
                (list(BIG_METRICS),),
            )
        ]
        for h in range(BIG_HOURS):
            t = time.monotonic()
            lo = start + timedelta(hours=h)
            hi = lo + timedelta(hours=1)
            name = f"readings_p{lo:%Y%m%dT%H}"
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
            conn.execute(
                sql.SQL("CREATE TABLE {} (LIKE readings INCLUDING DEFAULTS)").format(
                    sql.Identifier(name)
                )
            )
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (device_pk, metric_id, ts, value, quality)"
                    " SELECT p.device_pk, m.metric_id,"
                    " %(lo)s::timestamptz + (k * 30000 + p.phase_ms) * interval '1 millisecond',"
                    " CASE m.metric_id WHEN %(m3)s THEN k ELSE random() * 100 END, 0"
                    " FROM bench_piles p CROSS JOIN generate_series(0, 119) AS k"
                    " CROSS JOIN unnest(%(metrics)s::int2[]) AS m(metric_id)"
                ).format(sql.Identifier(name)),
                {"lo": lo, "metrics": metrics, "m3": metrics[2]},
            )
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK (ts >= {} AND ts < {})").format(
                    sql.Identifier(name),
                    sql.Identifier(f"{name}_range"),
                    sql.Literal(lo),
                    sql.Literal(hi),
                )
            )
            conn.execute(
                sql.SQL(
                    "ALTER TABLE readings ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})"
                ).format(sql.Identifier(name), sql.Literal(lo), sql.Literal(hi))
            )
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(name)))
            say(
                f"  hour {h + 1}/{BIG_HOURS} written and indexed"
                f" ({(h + 1) * devices * BIG_PER_DEVICE_HOUR:,} readings,"
                f" {time.monotonic() - t:,.0f} s)"
            )
        conn.execute(
            "INSERT INTO device_liveness (device_pk, last_seen)"
            " SELECT device_pk, %s::timestamptz - random() * interval '10 minutes'"
            " FROM devices WHERE random() < 0.95",
            (end,),
        )
    return {
        "rows": devices * BIG_HOURS * BIG_PER_DEVICE_HOUR,
        "devices": devices,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "write_seconds": round(time.monotonic() - started),
    }


def refresh_big(settings: Settings, start: datetime, end: datetime) -> float:
    """The real rollup refresh, one hour per cycle (as a running platform would have done)."""
    started = time.monotonic()
    t = start + timedelta(hours=1, minutes=2)
    with connect(settings.db) as conn:
        while t <= end + timedelta(minutes=2):
            c = time.monotonic()
            maintain.refresh_rollups_postgres(conn, settings.storage, t)
            say(
                f"  rollups refreshed up to {t - timedelta(minutes=2):%H:%M}"
                f" ({time.monotonic() - c:,.0f} s)"
            )
            t += timedelta(hours=1)
    return time.monotonic() - started


def check_big(settings: Settings, lo: datetime, hi: datetime) -> dict[str, int]:
    """Minute buckets of [lo, hi) that differ between a recomputation from the raw rows and
    the view readings_1m, and the range function qilu_readings_1m: counted in the server
    (storage.verify does the full check in Python, too slow for millions of buckets)."""
    raw = (
        "SELECT device_pk, metric_id, date_bin(INTERVAL '1 minute', ts,"
        " TIMESTAMPTZ '2000-01-01 00:00+00') AS bucket, count(*) AS n, min(value) AS min,"
        " max(value) AS max, avg(value) AS avg, (array_agg(value ORDER BY ts DESC))[1] AS last"
        " FROM readings WHERE ts >= %(lo)s AND ts < %(hi)s GROUP BY 1, 2, 3"
    )
    cols = "device_pk, metric_id, bucket, n, min, max, avg, last"
    out = {}
    with connect(settings.db) as conn:
        for name, rel in (
            ("readings_1m", f"SELECT {cols} FROM readings_1m"),  # noqa: S608 - fixed text
            ("qilu_readings_1m", f"SELECT {cols} FROM qilu_readings_1m(%(lo)s, %(hi)s)"),  # noqa: S608
        ):
            got = f"{rel} WHERE bucket >= %(lo)s AND bucket < %(hi)s"
            row = conn.execute(
                f"SELECT count(*) FROM (({raw} EXCEPT ALL {got})"  # noqa: S608 - fixed text
                f" UNION ALL ({got} EXCEPT ALL {raw})) d",
                {"lo": lo, "hi": hi},
            ).fetchone()
            out[name] = int(row[0]) if row else -1
    say(f"  rollups against the raw rows, {lo:%H:%M}-{hi:%H:%M}: buckets differing {out}")
    return out


def planning_ms(conn: Any, query: str, params: Any) -> float:
    """Planning time of ``query`` as EXPLAIN (ANALYZE) reports it."""
    plan = conn.execute(("EXPLAIN (ANALYZE, FORMAT JSON) " + query).encode(), params).fetchone()[0]
    conn.commit()
    return float(plan[0]["Planning Time"])


def time_queries(  # noqa: PLR0915 - one query after the other
    settings: Settings, big: dict[str, Any], runs: int
) -> dict[str, Any]:
    """p50/p99 over ``runs`` of:

    * coverage, all targets x (16 cities + province): as the API computes it
      (coverage.compute, the snapshot its background task recomputes every few seconds), and as
      it serves it when no snapshot is in memory yet (coverage.latest, the newest recorded one);
    * a 24-hour 1-minute series of one metric of a random device, exactly as the API queries it
      (storage.queries_api.device_readings: 1,440 points in two pages of at most 1,000);
    * the same series from the view readings_1m (what Grafana reads), for comparison."""
    from storage import queries_api

    catalog = load_catalog()
    start, end = big["start"], big["end"]
    out: dict[str, Any] = {}

    def timed(fn: Any, n: int) -> list[float]:
        times = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1000)
        return times

    def summary(times: list[float], **extra: Any) -> dict[str, Any]:
        return {
            "p50": round(pct(times, 50), 2),
            "p99": round(pct(times, 99), 2),
            "max": round(max(times), 2),
            "runs": len(times),
            **extra,
        }

    with connect(settings.db) as conn:
        # the partitions' row estimates (pg_class) count every stored reading without a scan
        row = conn.execute(
            "SELECT sum(c.reltuples)::bigint FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'readings'::regclass"
        ).fetchone()
        out["readings_stored"] = int(row[0]) if row and row[0] else 0
        row = conn.execute(
            "SELECT sum(c.reltuples)::bigint FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'readings_1m_store'::regclass"
        ).fetchone()
        out["rollup_1m_rows"] = int(row[0]) if row and row[0] else 0
        devices = [r[0] for r in conn.execute("SELECT device_pk FROM bench_piles")]
        metric = conn.execute("SELECT metric_id FROM metrics WHERE key = 'power_kw'").fetchone()
        conn.commit()
        if metric is None:
            raise RuntimeError("metric power_kw missing from the bench database")
        rng = random.Random(3)
        say("  timing coverage as the API computes it (coverage.compute)")
        live = timed(lambda: coverage.compute(conn, catalog, end), max(5, runs // 5))
        conn.commit()
        say("  timing coverage as recorded (coverage.latest)")
        served = timed(lambda: coverage.latest(conn, catalog), runs)
        points = [0]

        def api_series() -> None:
            pk = rng.choice(devices)
            got: list[queries_api.Point] = []
            after = None
            while True:
                page = queries_api.device_readings(
                    conn,
                    pk,
                    queries_api.Resolution.MINUTE,
                    start,
                    end,
                    metric_id=metric[0],
                    after=after,
                    limit=1001,
                )
                got += page[:1000]
                if len(page) <= 1000:
                    break
                after = (page[999].ts, metric[0])
            conn.commit()
            points[0] = len(got)

        say("  timing 24-hour 1-minute series as the API queries it (qilu_readings_1m)")
        api = timed(api_series, runs)
        view_rows = [0]

        def view_series() -> None:
            got = conn.execute(
                "SELECT bucket, n, min, max, avg, last FROM readings_1m"
                " WHERE device_pk = %s AND metric_id = %s AND bucket >= %s AND bucket < %s"
                " ORDER BY bucket",
                (rng.choice(devices), metric[0], start, end),
            ).fetchall()
            conn.commit()
            view_rows[0] = len(got)

        say("  timing the same series from the view readings_1m")
        view = timed(view_series, max(10, runs // 4))
        params = (devices[0], metric[0], start, end)
        plan_fn = planning_ms(
            conn,
            "SELECT * FROM qilu_readings_1m(%s, %s) r WHERE device_pk = %s AND metric_id = %s",
            (start, end, *params[:2]),
        )
        plan_view = planning_ms(
            conn,
            "SELECT * FROM readings_1m WHERE device_pk = %s AND metric_id = %s"
            " AND bucket >= %s AND bucket < %s",
            params,
        )
    out["coverage_live_ms"] = summary(
        live, query="coverage.compute: every target x city from device_liveness + registry"
    )
    out["coverage_served_ms"] = summary(served, query="coverage.latest: newest snapshot")
    out["series_24h_1m_ms"] = summary(
        api,
        points_per_answer=points[0],
        query="queries_api.device_readings (qilu_readings_1m), both pages",
        planning_ms=round(plan_fn, 2),
    )
    out["series_24h_1m_view_ms"] = summary(
        view,
        points_per_answer=view_rows[0],
        query="SELECT ... FROM readings_1m (the view)",
        planning_ms=round(plan_view, 2),
    )
    return out


# -- the chart ---------------------------------------------------------------------------------
def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    ax = axes[0]
    if "sustained" in result:
        sus = result["sustained"]
        pts = sus["samples"]
        rates = [
            (pts[i][0], (pts[i][1] - pts[i - 1][1]) / max(1e-9, pts[i][0] - pts[i - 1][0]))
            for i in range(1, len(pts))
        ]
        ax.plot([t for t, _ in rates], [r / 1000 for _, r in rates], label="ingest (stored/s)")
        ax.axhline(
            sus["readings_per_s"] / 1000,
            color="C0",
            ls="--",
            label=f"sustained {sus['readings_per_s']:,}/s",
        )
        if "raw_copy" in result:
            c = result["raw_copy"]["readings_per_s"]
            ax.axhline(c / 1000, color="C3", ls=":", label=f"psql \\copy {c:,}/s")
        ax.axhline(150, color="grey", ls="-.", lw=0.8, label="target 150k/s")
        ax.set(
            title="Ingest into the deduplicating table", xlabel="s", ylabel="thousand readings/s"
        )
        ax.legend(fontsize=8)
    ax = axes[1]
    lat = result.get("latency", {})
    if lat.get("samples"):
        ax.scatter([t for t, _ in lat["samples"]], [ms for _, ms in lat["samples"]], s=3)
        ax.axhline(100, color="grey", ls="-.", lw=0.8, label="target p99 100 ms")
        ax.axhline(lat["p99_ms"], color="C3", ls=":", label=f"p99 {lat['p99_ms']:.0f} ms")
        ax.axhline(lat["p50_ms"], color="C2", ls=":", label=f"p50 {lat['p50_ms']:.0f} ms")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    ax.set(
        title=f"Produce -> committed row at {lat.get('target_readings_per_s', 0):,.0f} readings/s",
        xlabel="s (when the envelope was sent)",
        ylabel="ms",
    )
    ax = axes[2]
    if "queries" in result:
        q = result["queries"]
        names = [
            "coverage\ncompute",
            "coverage\nsnapshot",
            "24 h series\nAPI query",
            "24 h series\nview",
        ]
        keys = (
            "coverage_live_ms",
            "coverage_served_ms",
            "series_24h_1m_ms",
            "series_24h_1m_view_ms",
        )
        p50 = [q[k]["p50"] for k in keys]
        p99 = [q[k]["p99"] for k in keys]
        x = range(len(names))
        ax.bar([i - 0.2 for i in x], p50, width=0.4, label="p50")
        ax.bar([i + 0.2 for i in x], p99, width=0.4, label="p99")
        ax.axhline(50, color="grey", ls="-.", lw=0.8, label="target 50 ms")
        ax.set_xticks(list(x), names)
        ax.set_yscale("log")
        ax.legend(fontsize=8)
        ax.set(
            title=f"Queries with {q['readings_stored'] / 1e6:,.0f} M readings stored", ylabel="ms"
        )
    fig.suptitle(
        f"qilu ingest benchmark, {result['machine']['cpus']} CPUs, {result['finished_at'][:16]}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# -- main ---------------------------------------------------------------------------------------
# -- timescale mode ----------------------------------------------------------------------------
TIMESCALE_LIMITS = (
    "TimescaleDB test engine (PGlite, PostgreSQL 17.5 as WASM, TimescaleDB 2.23, one process):"
    " one connection at a time, no COPY FROM STDIN, protocol messages under ~64 KB, so one"
    " writer on the row-limited path (array statements of 500 rows, storage/writer.py's unnest"
    " method) and no raw ceiling; a cost figure of that engine, not a production figure"
)


def synthetic_batches(pks: list[int], metric_ids: list[int], n: int, size: int) -> list[Any]:
    """``n`` distinct readings over the devices and metrics, a second apart per round, in
    batches of ``size`` (storage.rows.Rows, as the consumer hands them to the writer)."""
    from storage.rows import Rows

    t0_us = (int(time.time()) - 3600) * 1_000_000
    batches = []
    batch = Rows()
    for i in range(n):
        batch.device_pk.append(pks[i % len(pks)])
        batch.metric_id.append(metric_ids[(i // len(pks)) % len(metric_ids)])
        batch.ts_us.append(t0_us + (i // (len(pks) * len(metric_ids))) * 1_000_000)
        batch.value.append(float(i % 1000))
        batch.quality.append(0)
        if len(batch) == size:
            batches.append(batch)
            batch = Rows()
    if len(batch):
        batches.append(batch)
    return batches


def timescale_cost(  # noqa: PLR0915 - one linear measurement
    base: Settings, tag: str, scale: float, readings: int, engine: tuple[int, int] | None = None
) -> dict[str, Any]:
    """--mode timescale: the writer's cost per reading on the TimescaleDB test engine, in a
    schema of its own (migrated in timescale mode, a registry at ``scale`` inserted row by
    row): ``readings`` rows, one writer, batches of 5,000 as a consumer flushes them, through
    the row-limited path. CPU from /proc: the engine's process and this writer's process.
    ``engine``: (port, pid) of an engine started by hand; default the `qilu services` one.

    The ingest consumers are not run here: the engine cannot be pointed at a private schema
    from another process (it ignores the connection's options), and a consumer opens a
    second connection next to its pool's, which the engine does not take."""
    from pydantic import SecretStr

    from ops.services import Services
    from ops.services.timescale import PASSWORD, USER
    from storage import mode as modes
    from storage.registry_store import load_device_index
    from storage.writer import ReadingsSink, WriteMethod
    from tests.integration.test_storage_timescale import Engine, drop_schema, load_small_registry

    if engine is None:
        services = Services(base.services, base.db)
        services.up(["timescale"])
        port, engine_pid = base.services.timescale_port, services.pid("timescale")
    else:
        port, engine_pid = engine
    db = DatabaseSettings(
        host=base.services.host,
        port=port,
        name="postgres",
        user=USER,
        password=SecretStr(PASSWORD),
        mode=StorageMode.TIMESCALE,
        max_rows_per_statement=500,
    )
    eng = Engine(db, f"qilu_bench_{tag}")
    out: dict[str, Any] = {"mode": "timescale", "limits": TIMESCALE_LIMITS}
    with connect(db, autocommit=True) as conn:
        reason = modes.probe_features(conn)
        if reason is not None:
            raise RuntimeError(f"the TimescaleDB engine lacks community features: {reason}")
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(eng.schema)))
    try:
        with eng.connect() as conn:
            migrate.apply(conn, StorageMode.TIMESCALE)
        reg = generate(1, scale)
        say(f"  loading {len(reg.devices):,} devices row by row (the engine has no COPY)")
        # in slices: a larger pipelined executemany crosses the engine's ~64 KB message limit
        # and crashes it (seen: the whole engine stops answering)
        for i in range(0, len(reg.sites), 100):
            load_small_registry(eng, Registry(sites=reg.sites[i : i + 100]))
        for i in range(0, len(reg.devices), 100):
            load_small_registry(eng, Registry(devices=reg.devices[i : i + 100]))
        with eng.connect() as conn:
            idx = load_device_index(conn)
        pks = sorted(pk for pk, _kind in idx.devices.values())
        metric_ids = sorted(idx.metrics.values())
        batches = synthetic_batches(pks, metric_ids, readings, 5000)
        pool = eng.pool()
        try:
            sink = ReadingsSink(pool, mode=StorageMode.TIMESCALE, max_rows_per_statement=500)
            if sink.method is not WriteMethod.UNNEST:
                raise RuntimeError(f"expected the row-limited path, got {sink.method}")
            say(f"  writing {readings:,} readings in {len(batches)} batches, one writer")
            engine0 = proc_cpu_s(engine_pid) if engine_pid else float("nan")
            self0, wall0 = time.process_time(), time.monotonic()
            stored = 0
            for b in batches:
                sink.add(b)
                stored += sink.flush().inserted
            wall = time.monotonic() - wall0
            writer_s = time.process_time() - self0
            engine_s = (proc_cpu_s(engine_pid) if engine_pid else float("nan")) - engine0
        finally:
            pool.close()
        out.update(
            {
                "devices": len(pks),
                "readings": readings,
                "stored": stored,
                "seconds": round(wall, 2),
                "readings_per_s": round(stored / wall) if wall else None,
                "engine_cpu_s": round(engine_s, 2),
                "writer_cpu_s": round(writer_s, 2),
                "engine_us_per_reading": round(engine_s / max(1, stored) * 1e6, 2),
                "writer_us_per_reading": round(writer_s / max(1, stored) * 1e6, 2),
            }
        )
    finally:
        with eng.connect(autocommit=True) as conn:
            drop_schema(conn, eng.schema)
    return out


def main() -> int:  # noqa: PLR0912, PLR0915 - one linear script, phase after phase
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    ap.add_argument(
        "--scale", type=float, default=1.0, help="registry size, 1.0 = province (default)"
    )
    ap.add_argument(
        "--readings", type=int, default=6_000_000, help="readings in Kafka for the sustained run"
    )
    ap.add_argument("--consumers", type=int, default=3, help="ingest processes (default 3)")
    (
        ap.add_argument(
            "--consumers-from",
            type=Path,
            default=ROOT,
            metavar="CHECKOUT",
            help="run the ingest processes from another checkout of the project (e.g. a git"
            " worktree of an older commit) with this bench's load, database and ceilings: before"
            " and after figures side by side (default: this checkout)",
        ),
    )
    ap.add_argument(
        "--batch-records", type=int, default=250, help="envelopes per consumer poll (default 250)"
    )
    ap.add_argument("--rate", type=float, default=20_000, help="readings/s of the latency run")
    ap.add_argument(
        "--latency-s",
        type=float,
        default=60,
        help="length of the latency run's measured window (default 60)",
    )
    ap.add_argument(
        "--latency-warmup-s",
        type=float,
        default=10,
        help="seconds produced at the latency run's rate before its measured window (default"
        " 10; 0: none); the figures over the whole run are reported too",
    )
    ap.add_argument(
        "--latency-no-vacuum",
        action="store_true",
        help="before the latency run, only wait for running autovacuum workers, without the"
        " VACUUM (ANALYZE) and CHECKPOINT of the bench database (the earlier runs' way)",
    )
    ap.add_argument(
        "--envelope-readings",
        type=int,
        default=ENVELOPE_READINGS,
        help=f"readings per envelope of the simulated agents at most (default"
        f" {ENVELOPE_READINGS}, the province's agents'; a real one-site agent's default: 500)",
    )
    ap.add_argument(
        "--envelope-delay-s",
        type=int,
        default=ENVELOPE_DELAY_S,
        help=f"whole seconds a simulated agent's envelope stays open at most (default"
        f" {ENVELOPE_DELAY_S}, the province's agents'; a real one-site agent's default: 1)",
    )
    ap.add_argument(
        "--latency-burst",
        action="store_true",
        help="latency run with every agent sending at the start of each second (a worst case;"
        " default: each agent at its own phase of the second, as agents on their own clocks)",
    )
    ap.add_argument("--big-rows", type=int, default=100_000_000, help="readings for the query run")
    ap.add_argument("--query-runs", type=int, default=50, help="timed runs per query")
    ap.add_argument("--skip-copy", action="store_true", help="skip the raw COPY ceilings")
    ap.add_argument(
        "--ceiling-rounds",
        type=int,
        default=3,
        help="how many times each raw COPY ceiling is loaded, alternated (default 3); the cost"
        " ratio uses each ceiling's median round, every round is in the results",
    )
    ap.add_argument(
        "--skip-one-site-drain",
        action="store_true",
        help="skip the second drain with a real one-site agent's envelopes (500 readings,"
        " 1 s), whose consumer CPU per reading is reported next to the headline's shape",
    )
    ap.add_argument(
        "--coverage-seconds",
        type=int,
        default=60,
        help="simulated seconds of the incremental coverage phase on the bench database's"
        " registry (default 60; 0 skips it)",
    )
    ap.add_argument("--skip-latency", action="store_true", help="skip the latency run")
    ap.add_argument("--skip-big", action="store_true", help="skip the 100-million-row query run")
    ap.add_argument(
        "--skip-ingest",
        action="store_true",
        help="skip phases 1-4 (Kafka, sustained ingest, raw COPY, latency): the query run only",
    )
    ap.add_argument("--profile", action="store_true", help="also profile one in-process consumer")
    ap.add_argument("--keep", action="store_true", help="keep the bench database and topics")
    ap.add_argument(
        "--mode",
        choices=("postgres", "timescale"),
        default="postgres",
        help="storage mode (default postgres: everything above on the local PostgreSQL);"
        " timescale: only the writer's cost per reading on the TimescaleDB test engine, one"
        " writer on the row-limited path, no ceiling (--scale, --readings; see the JSON's"
        " limits)",
    )
    ap.add_argument(
        "--engine-port",
        type=int,
        default=0,
        help="--mode timescale: the port of a TimescaleDB test engine started by hand"
        " (default: the one of `qilu services`)",
    )
    ap.add_argument(
        "--engine-pid",
        type=int,
        default=0,
        help="--mode timescale with --engine-port: that engine's process, for its CPU time",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=RESULTS / "ingest.json",
        help="where to write the results (default bench/results/ingest.json; the chart goes"
        " next to it as .png): a short trial run should not replace the recorded results",
    )
    args = ap.parse_args()
    if args.ceiling_rounds < 1:
        ap.error(f"--ceiling-rounds must be at least 1, not {args.ceiling_rounds}")
    args.consumers_from = args.consumers_from.resolve()
    if not (args.consumers_from / "ops" / "cli.py").is_file():
        ap.error(
            f"--consumers-from {args.consumers_from}: not a checkout of this project"
            " (no ops/cli.py there to run `qilu ingest` from)"
        )

    base = load()
    tag = uuid.uuid4().hex[:8]
    if args.mode == "timescale":
        return main_timescale(args, base, tag)
    db = base.db.model_copy(
        update={"name": f"qilu_bench_ingest_{tag}", "mode": StorageMode.POSTGRES}
    )
    kafka = base.kafka.model_copy(update={"topic_prefix": f"bench{tag}"})
    settings = base.model_copy(update={"db": db, "kafka": kafka})
    # the second drain's topics (drain_one_site_shape)
    one_site_kafka = base.kafka.model_copy(update={"topic_prefix": f"bench{tag}one"})
    one_site = base.model_copy(update={"db": db, "kafka": one_site_kafka})
    result: dict[str, Any] = run_header("bench/ingest.py")
    result["consumers_commit"] = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=args.consumers_from,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    usage = shutil.disk_usage(ROOT)
    say(f"disk: {usage.free / 1e9:,.0f} GB free of {usage.total / 1e9:,.0f} GB")
    export = Path(tempfile.mkdtemp(prefix="qilu-bench-")) / "readings.tsv"
    group = f"bench-{tag}"
    consumers = Consumers(settings, args.consumers, args.batch_records, group, args.consumers_from)
    try:
        if not args.skip_ingest:
            say(f"creating {db.name} and loading a registry at scale {args.scale}")
            with connect(base.db, autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db.name)))
            with connect(db) as conn:
                migrate.apply(conn, StorageMode.POSTGRES)
            reg = generate(1, args.scale)
            with connect(db) as conn:
                load_registry(conn, reg)
            ensure_topics(kafka)
            envelope = (args.envelope_readings, args.envelope_delay_s)
            stream = ProvinceStream(
                reg, envelope_readings=envelope[0], envelope_delay_s=envelope[1]
            )
            result["registry"] = {
                "sites": len(reg.sites),
                "devices": len(reg.devices),
                "province_readings_per_s": round(stream.rate),
                "agents": len(stream.agents),
                "envelope_readings": envelope[0],
                "envelope_delay_s": envelope[1],
            }
            say(f"  {len(reg.devices):,} devices report {stream.rate:,.0f} readings/s in total")
            if base.ingest.authenticate:
                n = provision_agents(settings, stream)
                say(f"  {n} agents provisioned: envelopes are signed and verified")
            result["signed_envelopes"] = base.ingest.authenticate

            say(f"[1/5] filling Kafka with {args.readings:,} readings")
            result["kafka_fill"] = fill_kafka(settings, stream, args.readings)
            expected = result["kafka_fill"]["readings"]

            if args.profile:
                say("profiling one consumer in this process for 40 s (a separate consumer group)")
                result["profile"] = profile_one_consumer(settings, f"{group}-profile", 40)
                print(result["profile"])
                with connect(db) as conn:  # the offsets too: the drain starts from the first
                    conn.execute(
                        "TRUNCATE readings, device_liveness, rollup_invalidations, ingest_offsets"
                    )
                    conn.commit()

            say(
                f"[2/5] the same start as the ceilings (VACUUM (ANALYZE), CHECKPOINT):"
                f" {fair_start(settings)} s"
            )
            say(f"[2/5] draining it with {args.consumers} `qilu ingest` processes")
            consumers.start()
            result["sustained"] = measure_sustained(
                consumers, settings, expected, timeout_s=max(600, expected / 5000)
            )
            result["sustained"]["consumers"] = args.consumers
            result["sustained"]["batch_records"] = args.batch_records
            say(f"  sustained: {result['sustained']['readings_per_s']:,} readings/s stored")
            with connect(db) as conn:
                row = conn.execute("SELECT count(*) FROM readings").fetchone()
            result["sustained"]["rows_in_table"] = int(row[0]) if row else 0

            if not args.skip_copy:
                say(f"  exporting the {result['sustained']['rows_in_table']:,} stored rows (psql)")
                export_rows(settings, export)
                parts = export_binary_parts(settings, export.parent, args.consumers)

            if not args.skip_one_site_drain and envelope != ONE_SITE_ENVELOPE:
                say(
                    f"[2/5] the same drain with a real one-site agent's envelopes"
                    f" ({ONE_SITE_ENVELOPE[0]} readings, {ONE_SITE_ENVELOPE[1]} s)"
                )
                result["sustained_one_site_envelopes"] = one = drain_one_site_shape(
                    one_site,
                    reg,
                    args.readings,
                    args.consumers,
                    args.batch_records,
                    args.consumers_from,
                )
                window = one.get("cpu_window", {})
                say(
                    f"  {one['readings_per_s']:,} readings/s stored; CPU per reading: consumers"
                    f" {window.get('consumers_us_per_reading')} µs, database"
                    f" {window.get('database_us_per_reading')} µs"
                    f" ({one['kafka_fill']['envelopes']:,} envelopes)"
                )

            if not args.skip_latency:
                if args.latency_no_vacuum:
                    say("[3/5] settling the database after the load (checkpoint, autovacuum)")
                    say(f"  settled in {settle(settings)} s")
                else:
                    say(
                        "[3/5] the same start as the other phases (VACUUM (ANALYZE), CHECKPOINT):"
                        f" {fair_start(settings)} s"
                    )
                say(
                    f"[3/5] latency at {args.rate:,.0f} readings/s for {args.latency_s:.0f} s"
                    f" after a {args.latency_warmup_s:.0f} s warm-up"
                )
                result["latency"] = lat = latency(
                    settings,
                    reg,
                    group,
                    args.rate,
                    args.latency_s,
                    consumers,
                    burst=args.latency_burst,
                    warmup_s=args.latency_warmup_s,
                    envelope=envelope,
                )
                result["latency"]["database_before"] = (
                    "settled" if args.latency_no_vacuum else "vacuumed, analysed, checkpointed"
                )
                whole = lat["whole_run"]
                say(
                    f"  produce -> committed, measured window: p50 {lat['p50_ms']} ms,"
                    f" p99 {lat['p99_ms']} ms (the targets' figures); the whole run with the"
                    f" warm-up: p50 {whole['p50_ms']} ms, p99 {whole['p99_ms']} ms; from the"
                    " agent's send (before it, readings waited up to"
                    f" {lat['envelope_delay_s']} s in the agent: its batching, not included)"
                )
                ages = lat["age_since_append_ms"]
                say(
                    f"  where: send -> acknowledged p50 {lat['send_to_ack_ms']['p50']} ms;"
                    " since the broker appended it, a record was "
                    + ", ".join(f"{stage} at p50 {a['p50']} ms" for stage, a in ages.items())
                    + f"; a batch's database transaction p50 {lat['flush_ms']['p50']} ms"
                    f" ({lat['flush_ms']['records']} batches)"
                )
            consumers.stop()

            if args.coverage_seconds > 0:
                say(
                    f"[3/5] incremental coverage: liveness moving every second for"
                    f" {args.coverage_seconds} simulated seconds (bench/coverage_incremental.py)"
                )
                cov = coverage_bench.measure(db, args.coverage_seconds, batch=2000)
                result["coverage_incremental"] = cov
                say(
                    f"  incremental coverage: p50 {cov['incremental_ms']['p50']} ms,"
                    f" p99 {cov['incremental_ms']['p99']} ms (target <= 100 ms);"
                    f" full recomputation {cov['full_coverage_compute_s']} s;"
                    f" equal to it: {cov['equal_to_full_at_end']}"
                )

            if not args.skip_copy:
                ceilings(result, settings, export, parts, args.ceiling_rounds)
                result["cost"] = cost_summary(result)
                for line in cost_lines(result["cost"]):
                    say(f"  {line}")

        if not args.skip_big:
            say(f"[5/5] query latency with {args.big_rows:,} readings stored ({BIG_DB})")
            big_settings, big = big_database(base, args.big_rows, args.scale)
            differ = check_big(big_settings, big["end"] - timedelta(minutes=10), big["end"])
            big["last_10_min_1m_buckets_differing_from_raw"] = differ
            if any(differ.values()):
                raise RuntimeError(f"rollups differ from the raw rows: {differ}")
            result["big"] = {k: str(v) if isinstance(v, datetime) else v for k, v in big.items()}
            # time the queries in steady operation, as for the latency run: the consumers are
            # done, and the databases written just now (this run's, and the big one when it
            # was built now) are vacuumed and analysed first
            consumers.stop()
            waited = settle(big_settings, max_s=600)
            if not args.skip_ingest:
                waited += settle(settings, max_s=600)
            say(f"  settled in {waited:.1f} s")
            result["queries"] = time_queries(big_settings, big, args.query_runs)
            q = result["queries"]
            for key in (
                "coverage_live_ms",
                "coverage_served_ms",
                "series_24h_1m_ms",
                "series_24h_1m_view_ms",
            ):
                say(f"  {key}: p50 {q[key]['p50']} ms, p99 {q[key]['p99']} ms")
    finally:
        consumers.stop()
        shutil.rmtree(export.parent, ignore_errors=True)
        if not args.keep and not args.skip_ingest:
            say("dropping the bench database and topics")
            with connect(base.db, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(db.name)
                    )
                )
            from kafka.admin import KafkaAdminClient

            admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
            try:
                admin.delete_topics([*readings_topics(kafka), deadletter_topic(kafka)])
                if "sustained_one_site_envelopes" in result:
                    admin.delete_topics(
                        [*readings_topics(one_site_kafka), deadletter_topic(one_site_kafka)]
                    )
            finally:
                admin.close()
    result["finished_at"] = datetime.now(UTC).isoformat()
    result["machine"]["load_at_end"] = os.getloadavg()
    result["targets"] = {
        "sustained_readings_per_s": 150_000,
        "ratio_ingest_to_copy": 0.70,
        "cost_ratio_pipeline_to_copy": 1.5,
        "latency_p50_ms": 30,
        "latency_p99_ms": 100,
        "coverage_incremental_p99_ms": 100,
        "query_p99_ms": 50,
    }
    for line in summary_lines(result):
        say(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    chart(result, args.out.with_suffix(".png"))
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    say(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The run's figures against issue 17's targets, in one block at the end."""
    t = result["targets"]
    lines = ["summary (issue 17):"]
    sus = result.get("sustained")
    if sus:
        lines.append(
            f"  ingest: {sus['readings_per_s']:,} readings/s ({sus['consumers']} consumers)"
        )
    for key, name in (("raw_copy", "one psql \\copy"), ("parallel_copy", "parallel binary COPY")):
        if key in result:
            ratio = result.get(f"ratio_ingest_to_{key.removeprefix('raw_')}")
            lines.append(
                f"  ceiling, {name}: {result[key]['readings_per_s']:,} rows/s;"
                f" ingest / ceiling {ratio}"
            )
    window = (sus or {}).get("cpu_window")
    if window:
        lines.append(
            f"  CPU per reading, pipeline: {window['pipeline_us_per_reading']} µs"
            f" (consumers {window['consumers_us_per_reading']}, database"
            f" {window['database_us_per_reading']}, broker {window['broker_us_per_reading']})"
        )
    reg = result.get("registry", {})
    if "envelope_readings" in reg:
        lines.append(
            f"  envelopes: up to {reg['envelope_readings']:,} readings, sent at the latest"
            f" {reg['envelope_delay_s']} s after they opened, from {reg['agents']} agents"
        )
    one = (result.get("sustained_one_site_envelopes") or {}).get("cpu_window")
    if one:
        lines.append(
            f"  CPU per reading with a real one-site agent's envelopes (500 readings, 1 s):"
            f" pipeline {one['pipeline_us_per_reading']} µs (consumers"
            f" {one['consumers_us_per_reading']}, database {one['database_us_per_reading']},"
            f" broker {one['broker_us_per_reading']})"
        )
    lines += ["  " + x for x in cost_lines(result.get("cost", {}))] if "cost" in result else []
    lat = result.get("latency")
    if lat:
        lines.append(
            f"  latency at {lat['target_readings_per_s']:,.0f} readings/s ({lat['shape']}):"
            f" p50 {lat['p50_ms']} ms (target <= {t['latency_p50_ms']}),"
            f" p99 {lat['p99_ms']} ms (target <= {t['latency_p99_ms']})"
            + (
                f" over {lat['measured_s']:.0f} s after a {lat['warmup_s']:.0f} s warm-up;"
                f" with the warm-up: p50 {lat['whole_run']['p50_ms']} ms,"
                f" p99 {lat['whole_run']['p99_ms']} ms"
                if "whole_run" in lat
                else ""
            )
        )
        if "envelope_delay_s" in lat:
            lines.append(
                "    from the agent's send to the committed offset; before the send, readings"
                f" waited up to {lat['envelope_delay_s']} s in the agent (its batching into"
                " envelopes), which the figures do not include"
            )
    cov = result.get("coverage_incremental")
    if cov:
        lines.append(
            f"  incremental coverage: p99 {cov['incremental_ms']['p99']} ms"
            f" (target <= {t['coverage_incremental_p99_ms']})"
        )
    m = result["machine"]
    lines.append(f"  machine: {m['cpus']} CPUs, load {m['load_at_start']} -> {m['load_at_end']}")
    return lines


def main_timescale(args: argparse.Namespace, base: Settings, tag: str) -> int:
    result: dict[str, Any] = run_header("bench/ingest.py")
    say("timescale mode: the writer's cost on the TimescaleDB test engine")
    say(f"  {TIMESCALE_LIMITS}")
    engine = (args.engine_port, args.engine_pid) if args.engine_port else None
    result["timescale"] = t = timescale_cost(base, tag, args.scale, args.readings, engine)
    say(
        f"  {t['stored']:,} readings stored in {t['seconds']} s ({t['readings_per_s']:,}/s);"
        f" engine {t['engine_us_per_reading']} µs, writer {t['writer_us_per_reading']} µs"
        " CPU per reading; no ceiling (no COPY on this engine)"
    )
    result["finished_at"] = datetime.now(UTC).isoformat()
    result["machine"]["load_at_end"] = os.getloadavg()
    out = args.out.with_name(args.out.stem + ".timescale.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    say(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
