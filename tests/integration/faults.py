"""Shared machinery of the fault suite (docs/faults.md): one place, used by every
``test_faults_*.py`` and by ``bench/faults.py``.

- :class:`Ledger`: every reading the test produced and the broker acknowledged; afterwards
  ``lost = ledger - database`` and ``duplicates = rows - distinct keys`` (:meth:`Ledger.tally`,
  printed and appended to ``$QILU_FAULTS_REPORT`` when set);
- :class:`LedgerProducer`: produces the ledger's readings as wire envelopes at a steady rate,
  resending what the broker did not acknowledge (as an edge agent does);
- :class:`IngestProcess`: ``qilu ingest`` in its own process, to SIGKILL;
- :func:`private_kafka`, :func:`private_postgres`: servers of the test's own, on free ports,
  in their own state folder (never the shared ones, which other tests use);
- :class:`TcpProxy`: an asyncio TCP proxy that cuts, stalls and slows connections.

Reading ``i`` of a ledger is (device ``i mod n``, ``power_kw``, ``t0 + i ms``, ``i mod 1000``):
the database can be checked against the ledger exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from edge_agent.agent import close_producer, new_producer

from ops.services import ProbeError, Services
from ops.services.kafka import Kafka
from ops.services.kafka_cluster import KafkaNode
from ops.services.pg_cluster import PatroniNode
from ops.services.proc import Launch
from qilu.contract import Envelope
from qilu.errors import ServiceError
from qilu.ports import free_port
from qilu.registry import Registry, generate
from qilu.settings import REPO_ROOT, DatabaseSettings, KafkaSettings, ServicesSettings, Settings
from storage.db import connect
from storage.registry_store import load_registry
from stream.topics import ensure_topics, group_lag, readings_topics
from tests.helpers import wait_for
from tests.integration.netns import HostNet

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaConsumer
    from kafka.admin import KafkaAdminClient
    from kafka.structs import TopicPartition

READING_US = 1000  # reading i is at t0 + i ms
METRIC = "power_kw"


def env_number(name: str, default: float) -> float:
    """A scenario parameter: the short CI value unless ``name`` is set (bench/faults.py)."""
    raw = os.environ.get(name, "")
    return float(raw) if raw else default


def collect_dropped_sockets() -> None:
    """kafka-python leaves the sockets of connections a dying broker (or a cut proxy) broke
    to the garbage collector; collect them now, quietly, instead of at the end of the session
    where ``filterwarnings = error`` turns each ResourceWarning into a failure."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.fixture(autouse=True)
def dropped_sockets_collected() -> Iterator[None]:
    """Autouse in the modules that import it: :func:`collect_dropped_sockets` after each test."""
    yield
    collect_dropped_sockets()


# ----------------------------------------------------------------------------- the ledger


@dataclass
class Tally:
    scenario: str
    ledger: int
    rows: int
    lost: int
    duplicates: int
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        more = "".join(f" {k}={v}" for k, v in self.extra.items())
        return (
            f"[faults] {self.scenario}: ledger={self.ledger} rows={self.rows} "
            f"lost={self.lost} duplicates={self.duplicates}{more}"
        )


def loaded_registry(db: DatabaseSettings, scale: float = 0.002) -> Registry:
    """A simulated registry of one province at ``scale``, loaded into the test database."""
    reg = generate(1, scale)
    with connect(db) as conn:
        load_registry(conn, reg)
    return reg


def register_devices(db: DatabaseSettings, n: int = 50) -> list[str]:
    """Load a small simulated registry; returns ``n`` charging piles (one sector topic)."""
    reg = loaded_registry(db)
    return [d.device_id for d in reg.devices if d.kind == "charging_pile"][:n]


def on_private_broker(base: Settings, db: DatabaseSettings, broker: tuple[str, str]) -> Settings:
    """``base`` on the test database and a private broker, ``broker`` being its (internal
    bootstrap, agents' SASL bootstrap), with a topic prefix of its own whose topics exist."""
    internal, agents_listener = broker
    ks = KafkaSettings(
        bootstrap=internal,
        agent_bootstrap=agents_listener,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}",
    )
    ensure_topics(ks)
    return base.model_copy(update={"db": db, "kafka": ks})


class Ledger:
    """Readings ``0 .. total-1``; a bitmap of those the broker acknowledged."""

    def __init__(self, devices: list[str], total: int, *, age_s: float = 7200.0) -> None:
        self.devices = devices
        self.total = total
        self.t0_us = time.time_ns() // 1000 - int(age_s * 1e6)
        self._acked = bytearray(total)
        self._lock = threading.Lock()
        # (partition, offset) of each acknowledged envelope -> its readings [lo, hi)
        self.offsets: dict[tuple[int, int], tuple[int, int]] = {}

    def envelope(self, lo: int, hi: int, agent: str, boot: str, seq: int) -> bytes:
        env = Envelope(agent, boot, seq, time.time_ns() // 1000)
        n = len(self.devices)
        env.devices = [self.devices[i % n] for i in range(lo, hi)]
        env.metrics = [METRIC] * (hi - lo)
        env.ts_us = [self.t0_us + i * READING_US for i in range(lo, hi)]
        env.values = [float(i % 1000) for i in range(lo, hi)]
        env.qualities = [0] * (hi - lo)
        return env.encode()

    def ack(self, lo: int, hi: int, partition: int = -1, offset: int = -1) -> None:
        with self._lock:
            self._acked[lo:hi] = b"\x01" * (hi - lo)
            if offset >= 0:
                self.offsets[partition, offset] = (lo, hi)

    @property
    def acked(self) -> int:
        with self._lock:
            return self._acked.count(1)

    def stored(self, db: DatabaseSettings) -> bytearray:
        """Bitmap of the ledger's readings present in the database."""
        got = bytearray(self.total)
        q = (
            "SELECT ((extract(epoch FROM ts) * 1000000)::int8 - %s) / %s FROM readings"
            " WHERE metric_id = (SELECT metric_id FROM metrics WHERE key = %s)"
        )
        with psycopg.connect(db.conninfo(), prepare_threshold=None) as conn:
            cur = conn.cursor()
            cur.execute(q, (self.t0_us, READING_US, METRIC))
            for (i,) in cur:
                if 0 <= i < self.total:
                    got[i] = 1
        return got

    def committed_not_stored(
        self, db: DatabaseSettings, topic: str, offsets: dict[TopicPartition, int]
    ) -> int:
        """Readings of envelopes below a committed offset that the database lacks, i.e.
        offsets committed past the database: must be 0."""
        stored = self.stored(db)
        with self._lock:
            envelopes = list(self.offsets.items())
        return sum(
            (hi - lo) - stored[lo:hi].count(1)
            for (p, o), (lo, hi) in envelopes
            if o < offsets.get(TopicPartition(topic, p), -1)
        )

    def tally(self, scenario: str, db: DatabaseSettings, **extra: Any) -> Tally:
        """lost = acknowledged but not stored; duplicates = rows - distinct keys. Printed, and
        appended to ``$QILU_FAULTS_REPORT`` (JSON lines) when set."""
        stored = self.stored(db)
        with self._lock:
            lost = sum(1 for a, s in zip(self._acked, stored, strict=True) if a and not s)
            ledger = self._acked.count(1)
        with psycopg.connect(db.conninfo(), prepare_threshold=None) as conn:
            row = conn.execute(
                "SELECT count(*), count(*) - count(DISTINCT (device_pk, metric_id, ts))"
                " FROM readings"
            ).fetchone()
        assert row is not None
        t = Tally(scenario, ledger, int(row[0]), lost, int(row[1]), extra)
        report(t)
        return t


def report(t: Tally) -> None:
    print(t.line())
    path = os.environ.get("QILU_FAULTS_REPORT")
    if path:
        with Path(path).open("a") as f:
            f.write(json.dumps(asdict(t)) + "\n")


class LedgerProducer(threading.Thread):
    """Produces the ledger as envelopes of ``per_envelope`` readings at ``rate`` readings/s,
    after a ``backlog`` sent at once, keyed by ``agents`` agent ids (spread over the
    partitions); what the broker does not acknowledge is sent again a second later, as an
    edge agent does."""

    def __init__(
        self,
        ledger: Ledger,
        kafka: KafkaSettings,
        *,
        rate: float,
        per_envelope: int = 500,
        agents: int = 12,
        topic: str | None = None,
        backlog: int = 0,
    ) -> None:
        super().__init__(name="ledger-producer", daemon=True)
        self.backlog = backlog  # readings due at once, before the steady rate
        self.ledger, self.kafka, self.rate, self.per = ledger, kafka, rate, per_envelope
        self.agents = [f"fault-agent-{k:02d}" for k in range(agents)]
        self.boot = uuid.uuid4().hex[:8]
        self.topic = topic or f"{kafka.topic_prefix}.readings.charging"
        self.stop_event = threading.Event()
        self.failures = 0
        self._retry: list[tuple[int, int]] = []
        self._inflight: set[tuple[int, int]] = set()  # sent, not settled yet
        self._lock = threading.Lock()
        self._seq = 0
        self._replace = False
        self.error: BaseException | None = None

    def done(self) -> bool:
        return self.ledger.acked == self.ledger.total

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the test through .error
            self.error = exc
            raise

    def _run(self) -> None:
        producer: Any = None
        began, nxt = time.monotonic(), 0
        try:
            while not self.stop_event.is_set() and not self.done():
                if self._replace and producer is not None:
                    # as the edge agent does: kafka-python's idempotent producer may stall
                    # on an expired batch's sequence state after the broker returns
                    self._replace = False
                    close_producer(producer, 0.0)  # its unsettled records may never settle:
                    producer = None
                    with self._lock:  # send them again through the next producer
                        self._retry += self._inflight
                        self._inflight.clear()
                if producer is None:
                    try:
                        producer = new_producer(
                            self.kafka.bootstrap,
                            "fault-ledger",
                            request_timeout_s=5.0,
                            delivery_timeout_s=10.0,
                        )
                    except Exception:  # noqa: BLE001 - broker not there yet: try again
                        time.sleep(1.0)
                        continue
                batch: list[tuple[int, int]] = []
                with self._lock:
                    batch, self._retry = self._retry, []
                elapsed = time.monotonic() - began
                due = min(self.ledger.total, self.backlog + int(elapsed * self.rate))
                while nxt < due and len(batch) < 50:
                    hi = min(nxt + self.per, self.ledger.total)
                    batch.append((nxt, hi))
                    nxt = hi
                for lo, hi in batch:
                    self._send(producer, lo, hi)
                time.sleep(0.02)
        finally:
            if producer is not None:
                close_producer(producer, 10.0)

    def _send(self, producer: Any, lo: int, hi: int) -> None:
        self._seq += 1
        agent = self.agents[(lo // self.per) % len(self.agents)]
        value = self.ledger.envelope(lo, hi, agent, self.boot, self._seq)

        def ok(meta: Any) -> None:
            self.ledger.ack(lo, hi, meta.partition, meta.offset)
            with self._lock:
                self._inflight.discard((lo, hi))

        def failed(_: object) -> None:
            self.failures += 1
            self._replace = True
            with self._lock:
                if (lo, hi) in self._inflight:  # else: already queued again
                    self._inflight.discard((lo, hi))
                    self._retry.append((lo, hi))

        with self._lock:
            self._inflight.add((lo, hi))
        try:
            fut = producer.send(self.topic, key=agent.encode(), value=value)
        except Exception:  # noqa: BLE001 - KafkaTimeoutError and friends: broker away
            failed(None)
            time.sleep(0.5)
            return
        fut.add_callback(ok)
        fut.add_errback(failed)


# ----------------------------------------------------------------------------- ingest


def fault_marks(timeout_s: float) -> list[pytest.MarkDecorator]:
    """The marks of every fault-suite module: integration tier, a time bound, and the
    socket warnings that are not ours."""
    return [
        pytest.mark.integration,
        pytest.mark.timeout(timeout_s),
        # kafka-python leaves the socket of a connection that a dying broker (or a cut proxy)
        # broke to the garbage collector; not ours to fix, and not a leak of the platform
        pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning"),
        pytest.mark.filterwarnings(
            "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
        ),
    ]


def unauthenticated(settings: Settings) -> Settings:
    """The fault suite proves delivery, not authentication: the ledger's envelopes are not
    signed, so its consumers run with ``ingest.authenticate`` off (docs/faults.md)."""
    return settings.model_copy(
        update={"ingest": settings.ingest.model_copy(update={"authenticate": False})}
    )


class IngestProcess:
    """``qilu ingest`` in its own process (as a service manager runs it), to kill."""

    def __init__(
        self,
        settings: Settings,
        log: Path,
        wrap: Callable[[list[str]], list[str]] | None = None,
        **env: str,
    ) -> None:
        self.settings, self.log = settings, log
        self.wrap = wrap  # e.g. HostNet.wrap: the process on another "machine"
        self.env = {
            **os.environ,
            "QILU_KAFKA__BOOTSTRAP": settings.kafka.bootstrap,
            "QILU_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
            "QILU_DB__HOST": settings.db.host,
            "QILU_DB__PORT": str(settings.db.port),
            "QILU_DB__NAME": settings.db.name,
            "QILU_DB__TARGET_SESSION_ATTRS": settings.db.target_session_attrs,
            "QILU_INGEST__GROUP_ID": settings.ingest.group_id,
            "QILU_INGEST__METRICS_PORT": "0",
            "QILU_STORAGE__MAINTAIN_IN_INGEST": "false",
            "QILU_INGEST__AUTHENTICATE": "false",  # see unauthenticated()
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, **env: str) -> IngestProcess:
        with self.log.open("ab") as log:
            argv = [sys.executable, "-m", "ops.cli", "--log-level", "WARNING", "ingest"]
            self.proc = subprocess.Popen(
                self.wrap(argv) if self.wrap else argv,
                cwd=REPO_ROOT, env={**self.env, **env}, stdout=log, stderr=log,
            )  # fmt: skip
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class Supervisor(threading.Thread):
    """Restarts an :class:`IngestProcess` whenever it exits, as a service manager does;
    ``exits`` lists the exit codes seen (a process that stays up has none)."""

    def __init__(self, ingest: IngestProcess) -> None:
        super().__init__(name="ingest-supervisor", daemon=True)
        self.ingest = ingest
        self.exits: list[int] = []
        self._halt = threading.Event()

    def run(self) -> None:
        self.ingest.start()
        while not self._halt.wait(0.2):
            proc = self.ingest.proc
            if proc is not None and proc.poll() is not None:
                self.exits.append(proc.returncode)
                time.sleep(1.0)
                if not self._halt.is_set():
                    self.ingest.start()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)
        self.ingest.stop()


# ----------------------------------------------------------------------------- Kafka helpers


def committed(kafka: KafkaSettings, group: str, topics: list[str]) -> dict[TopicPartition, int]:
    """The group's committed offset per partition (-1: none yet)."""
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap, client_id="fault-admin")
    consumer = KafkaConsumer(bootstrap_servers=kafka.bootstrap, client_id="fault-admin")
    try:
        parts = [
            TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()
        ]
        got = admin.list_group_offsets({group: parts}).get(group, {})
        return {tp: (got[tp].offset if tp in got else -1) for tp in parts}
    finally:
        consumer.close()
        admin.close()


def read_topic(kafka: KafkaSettings, topic: str, timeout_s: float = 20.0) -> list[Any]:
    """Every record of ``topic`` now (from the beginning to the end offsets)."""
    consumer = KafkaConsumer(
        bootstrap_servers=kafka.bootstrap,
        client_id="fault-reader",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(parts)
        ends = consumer.end_offsets(parts)
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(consumer.position(tp) < ends[tp] for tp in parts):
            for recs in consumer.poll(timeout_ms=500).values():
                out.extend(recs)
        return out
    finally:
        consumer.close()


def wait_writable(kafka: KafkaSettings, topic: str, timeout_s: float = 180.0) -> None:
    """Until every partition of ``topic`` acknowledges a write: a broker that just started
    (slowly, on a loaded machine) answers NotLeaderForPartition for a while. The probe is an
    empty envelope: valid, stores nothing."""
    probe = Envelope("probe", "probe", 0, time.time_ns() // 1000).encode()
    deadline = time.monotonic() + timeout_s
    while True:
        producer: Any = None
        try:
            producer = new_producer(kafka.bootstrap, "fault-probe", request_timeout_s=5.0)
            for p in sorted(producer.partitions_for(topic)):
                producer.send(topic, value=probe, partition=p).get(timeout=10)
        except Exception:  # kafka-python raises assorted types while a broker starts
            if time.monotonic() > deadline:
                raise
            time.sleep(2.0)
        else:
            return
        finally:
            if producer is not None:
                close_producer(producer, 0.0)


# ----------------------------------------------------------------------------- cluster checks


@pytest.fixture(scope="module", autouse=True)
def quiet_kafka_client() -> Iterator[None]:
    """kafka-python logs the broker's death with tracebacks whose frames hold the sockets it
    dropped; pytest keeps the records until after the test's teardown, so the sockets would
    reach the end of the session (a ResourceWarning there is an error). Its log is noise in
    a test that kills brokers: left out."""
    client = logging.getLogger("kafka")
    level = client.level
    client.setLevel(logging.CRITICAL)
    yield
    client.setLevel(level)
    kafka_threads_ended()


def describe(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """The topic's partitions as the cluster reports them (leader, replicas, in-sync)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="fault-describe")
    try:
        parts: list[dict[str, Any]] = admin.describe_topics([topic])[0]["partitions"]
        return sorted(parts, key=lambda p: p["partition_index"])
    finally:
        admin.close()


def acks_on(ledger: Ledger, partitions: set[int]) -> list[tuple[int, int]]:
    """Readings ranges the broker acknowledged on ``partitions`` so far."""
    return [rng for (p, _), rng in list(ledger.offsets.items()) if p in partitions]


def stored_any(settings: Settings, ledger: Ledger, ranges: list[tuple[int, int]]) -> bool:
    """Is any reading of ``ranges`` in the database?"""
    t0 = ledger.t0_us
    with psycopg.connect(settings.db.conninfo(), prepare_threshold=None) as conn:
        for lo, hi in ranges:
            row = conn.execute(
                "SELECT 1 FROM readings WHERE ts >= to_timestamp(%s / 1e6)"
                " AND ts < to_timestamp(%s / 1e6) LIMIT 1",
                (t0 + lo * 1000, t0 + hi * 1000),
            ).fetchone()
            if row is not None:
                return True
    return False


def in_sync_everywhere(bootstrap: str, topic: str, node_id: int) -> bool:
    """Is ``node_id`` among the in-sync replicas of every partition of ``topic``?"""
    try:
        parts = describe(bootstrap, topic)
    except Exception:  # noqa: BLE001 - kafka-python raises assorted types while nodes come back
        return False
    return bool(parts) and all(node_id in p["isr_nodes"] for p in parts)


# ----------------------------------------------------------------------------- private servers


def _state(name: str) -> Path:
    return REPO_ROOT / ".state" / f"faults-{name}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


class _AdvertisedKafka(Kafka):
    """Our Kafka, advertising another port (a proxy's) to its clients."""

    advertised_port = 0

    def configure(self, progress: Any) -> None:
        super().configure(progress)
        s = self.ctx.settings
        text = self.server_properties.read_text()
        old = f"advertised.listeners=PLAINTEXT://{s.host}:{s.kafka_port}"
        new = f"advertised.listeners=PLAINTEXT://{s.host}:{self.advertised_port}"
        assert old in text, "server.properties changed shape"
        self.server_properties.write_text(text.replace(old, new))


@dataclass
class PrivateKafka:
    svc: Services
    bootstrap: str
    port: int
    agent_bootstrap: str  # the SASL/SCRAM listener edge agents use

    def kill(self) -> None:
        self.svc.kill("kafka")

    def start(self) -> None:
        self.svc.start("kafka")

    def stop(self) -> None:
        self.svc.down(["kafka"])


@contextlib.contextmanager
def private_kafka(
    base: Settings, *, port: int = 0, advertised_port: int = 0, agent_tls_dir: Path | None = None
) -> Iterator[PrivateKafka]:
    """A broker of our own on free ports (killed and restarted by the test). With
    ``advertised_port`` it tells clients to connect there (a proxy in front of ``port``,
    running before this starts: the readiness probe goes through it)."""
    state = _state("kafka")
    shared_lib = base.services.state_dir / "kafka" / "lib"
    if shared_lib.is_dir():  # borrow the installed jars
        (state / "kafka").mkdir(parents=True, exist_ok=True)
        (state / "kafka" / "lib").symlink_to(shared_lib.resolve(), target_is_directory=True)
    ss = ServicesSettings(
        state_dir=state,
        kafka_port=port or free_port(),
        kafka_controller_port=free_port(),
        kafka_agent_port=free_port(),
        kafka_agent_tls_dir=agent_tls_dir,
        start_timeout_s=180.0,
    )
    svc = Services(ss, DatabaseSettings())
    if advertised_port:
        srv = _AdvertisedKafka(svc.ctx, svc._apt)
        srv.advertised_port = advertised_port
        svc._servers["kafka"] = srv
    try:
        svc.up(["kafka"])
        port = advertised_port or ss.kafka_port
        yield PrivateKafka(
            svc, f"127.0.0.1:{port}", ss.kafka_port, f"127.0.0.1:{ss.kafka_agent_port}"
        )
    finally:
        with contextlib.suppress(Exception):
            svc.down(["kafka"])
        shutil.rmtree(state, ignore_errors=True)


@dataclass
class PrivateKafkaCluster:
    """The cluster profile's three brokers (kafka-1..3), on free ports of their own; with
    ``net``, each in a network namespace of its own (:class:`tests.integration.netns.HostNet`)."""

    svc: Services
    hosts: tuple[str, ...]
    port: int
    net: HostNet | None = None

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{h}:{self.port}" for h in self.hosts)

    def bootstrap_without(self, node_id: int) -> str:
        """The bootstrap list of the other nodes (clients that should not try a dead one)."""
        return ",".join(f"{h}:{self.port}" for i, h in enumerate(self.hosts, 1) if i != node_id)

    def kill(self, node_id: int) -> None:
        self.svc.kill(f"kafka-{node_id}")

    def start(self, node_id: int) -> None:
        self.svc.start(f"kafka-{node_id}")

    def wipe(self, node_id: int) -> None:
        """Throw away a (stopped) node's log dir: it comes back empty, formatted anew."""
        shutil.rmtree(self.svc.server(f"kafka-{node_id}").data_dir)


def _namespaced_node(node_id: int, net: HostNet) -> type[KafkaNode]:
    """The cluster profile's node ``node_id``, started in host ``node_id``'s namespace."""

    class Node(KafkaNode):
        name = f"kafka-{node_id}"

        def ports(self) -> dict[str, int]:
            return {}  # the address exists only in its namespace, which is the test's own

        @property
        def port(self) -> int:
            return self.ctx.settings.cluster_kafka_port

        def command(self) -> Launch:
            launch = super().command()
            return Launch(argv=net.wrap(node_id, launch.argv), cwd=launch.cwd, env=launch.env)

    Node.node_id = node_id
    return Node


@contextlib.contextmanager
def private_kafka_cluster(
    base: Settings, *, net: HostNet | None = None
) -> Iterator[PrivateKafkaCluster]:
    """Three KRaft brokers (each a controller too) on 127.0.0.11-13 and free ports, as
    ``qilu services up --profile cluster`` runs them; stopped and removed afterwards. With
    ``net``, node ``i`` runs in host ``i``'s namespace (hosts 1-3), on its address."""
    state = _state("cluster")
    shared_lib = base.services.state_dir / "kafka" / "lib"
    if shared_lib.is_dir():  # borrow the installed jars
        (state / "kafka").mkdir(parents=True, exist_ok=True)
        (state / "kafka" / "lib").symlink_to(shared_lib.resolve(), target_is_directory=True)
    ss = ServicesSettings(
        state_dir=state,
        cluster_kafka_port=free_port(),
        cluster_kafka_controller_port=free_port(),
        cluster_kafka_agent_port=free_port(),
        kafka_heap_mb=384,
        start_timeout_s=180.0,
        **({"cluster_hosts": net.addresses[:3]} if net is not None else {}),
    )
    svc = Services(ss, DatabaseSettings(), profile="cluster")
    if net is not None:
        for i in (1, 2, 3):
            svc._servers[f"kafka-{i}"] = _namespaced_node(i, net)(svc.ctx, svc._apt)
    try:
        svc.up(["kafka-1", "kafka-2", "kafka-3"])
        yield PrivateKafkaCluster(svc, ss.cluster_hosts, ss.cluster_kafka_port, net)
    finally:
        # killed, not stopped: a controlled shutdown of the last node waits for a quorum
        # that is gone (a minute each); the data is thrown away anyway
        for srv in svc.status():
            if srv.pid is not None:
                with contextlib.suppress(Exception):
                    svc.kill(srv.name)
        shutil.rmtree(state, ignore_errors=True)


def kafka_threads_ended(timeout_s: float = 60.0) -> None:
    """Wait until kafka-python's network threads (of producers closed without waiting) are
    gone, then collect the sockets they dropped (:func:`collect_dropped_sockets`), so none
    is left to the end of the session, where no test's warning filter applies."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(
        t.name.startswith("kafka-io-") or t.name.endswith("-network-thread")
        for t in threading.enumerate()
    ):
        time.sleep(0.2)
    collect_dropped_sockets()


@dataclass
class PrivatePostgres:
    svc: Services
    db: DatabaseSettings

    def kill(self) -> None:
        self.svc.kill("postgres")

    def stop(self) -> None:
        self.svc.down(["postgres"])

    def start(self) -> None:
        self.svc.start("postgres")


@contextlib.contextmanager
def private_postgres(base: Settings) -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of our own (initdb on a free port), its database migrated."""
    from storage import migrate

    state = _state("pg")
    ss = ServicesSettings(state_dir=state, postgres_port=free_port(), start_timeout_s=120.0)
    db = base.db.model_copy(update={"port": ss.postgres_port, "name": "qilu_faults"})
    svc = Services(ss, db)
    try:
        svc.up(["postgres"])
        with connect(db) as conn:
            migrate.apply(conn)
        yield PrivatePostgres(svc, db)
    finally:
        with contextlib.suppress(Exception):
            svc.down(["postgres"])
        shutil.rmtree(state, ignore_errors=True)


@dataclass
class PrivatePgCluster:
    """The cluster profile's PostgreSQL: etcd-1..3, pg-1 and pg-2 under Patroni; ``db`` lists both
    nodes with ``target_session_attrs=read-write`` (the primary, whichever it is)."""

    svc: Services
    db: DatabaseSettings

    def primary(self, timeout_s: float = 60.0) -> str | None:
        """The name of the node that is primary ("pg-1" or "pg-2"), waiting at most
        ``timeout_s`` for one; None if there is none by then."""
        node = self.svc.server("pg-1")
        assert isinstance(node, PatroniNode)
        try:
            host = node.primary_host(timeout_s)
        except ServiceError:
            return None
        return next(n for n in ("pg-1", "pg-2") if self.svc.server(n).host == host)

    def kill(self, name: str) -> None:
        """SIGKILL the node's Patroni and its PostgreSQL: the machine is gone."""
        self.svc.kill(name)

    def synchronous(self) -> bool:
        """Is a replica the synchronous standby? Before that, Patroni's synchronous mode
        would not promote it (it may lack commits), so a failover test waits for it."""
        for name in ("pg-1", "pg-2"):
            other = self.svc.server(name)
            assert isinstance(other, PatroniNode)
            try:
                code, doc = other.api("/cluster")
            except ProbeError:
                continue
            members = doc.get("members", [])
            if code == 200 and any(m.get("role") == "sync_standby" for m in members):
                return True
        return False


@contextlib.contextmanager
def private_pg_cluster(base: Settings) -> Iterator[PrivatePgCluster]:
    """Three etcd members (127.0.0.31-33) and two Patroni nodes (127.0.0.21-22) on free ports
    (as ``qilu services up
    --profile cluster`` runs them), a database of our own migrated on the primary."""
    from storage import migrate

    state = _state("pgcluster")
    ss = ServicesSettings(
        state_dir=state,
        cluster_etcd_port=free_port(),
        cluster_etcd_peer_port=free_port(),
        cluster_pg_port=free_port(),
        cluster_patroni_port=free_port(),
        start_timeout_s=180.0,
    )
    db = base.db.model_copy(
        update={
            "host": ",".join(ss.cluster_pg_hosts),
            "port": ss.cluster_pg_port,
            "name": "qilu_faults",
            "target_session_attrs": "read-write",
        }
    )
    svc = Services(ss, db, profile="cluster")
    try:
        svc.up(["etcd-1", "etcd-2", "etcd-3", "pg-1", "pg-2"])
        with connect(db) as conn:
            migrate.apply(conn)
        yield PrivatePgCluster(svc, db)
    finally:
        for srv in svc.status():
            if srv.pid is not None:
                with contextlib.suppress(Exception):
                    svc.kill(srv.name)
        shutil.rmtree(state, ignore_errors=True)


# ----------------------------------------------------------------------------- TCP proxy


class TcpProxy:
    """``host``:``port`` (127.0.0.1 by default) -> 127.0.0.1:``target``, in a thread of its
    own, with faults on demand:

    - :meth:`cut`: close every open connection now (both sides see a reset); :meth:`cut_client`
      only those of one client address;
    - ``stalled = True``: accept and hold bytes without forwarding them (a dead peer);
    - ``delay_s``: sleep this long before forwarding each chunk (a slow link);
    - ``refusing = True``: close new connections at once.
    """

    def __init__(
        self, target_port: int, port: int = 0, chunk: int = 65_536, host: str = "127.0.0.1"
    ) -> None:
        self.target_port = target_port
        self.host = host  # where it listens (a bridge's address serves network namespaces)
        self.port = port or free_port()
        self.chunk = chunk
        self._flowing = asyncio.Event()  # cleared while stalled
        self._flowing.set()
        self.refusing = False
        self.delay_s = 0.0
        self.cuts = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._by_client: dict[str, set[asyncio.StreamWriter]] = {}  # client address -> both ends
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="tcp-proxy", daemon=True)

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def cut_client(self, address: str) -> None:
        """Close the connections of the client at ``address`` only (both sides see a reset)."""

        def close_its() -> None:
            for w in list(self._by_client.pop(address, set())):
                self._writers.discard(w)
                with contextlib.suppress(Exception):
                    w.transport.abort()

        self._loop.call_soon_threadsafe(close_its)

    def cut(self) -> None:
        def close_all() -> None:
            for w in list(self._writers):
                with contextlib.suppress(Exception):
                    w.transport.abort()
            self._writers.clear()

        self.cuts += 1
        self._loop.call_soon_threadsafe(close_all)

    @property
    def stalled(self) -> bool:
        return not self._flowing.is_set()

    @stalled.setter
    def stalled(self, on: bool) -> None:
        self._loop.call_soon_threadsafe(self._flowing.clear if on else self._flowing.set)

    def normal(self) -> None:
        self.stalled, self.refusing, self.delay_s = False, False, 0.0

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, self.host, self.port)
        )
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            for w in list(self._writers):
                w.transport.abort()
            self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_w}
        client = str((writer.get_extra_info("peername") or ("",))[0])
        self._by_client.setdefault(client, set()).update({writer, up_w})
        await asyncio.gather(
            self._pipe(reader, up_w), self._pipe(up_r, writer), return_exceptions=True
        )
        for w in (writer, up_w):
            self._writers.discard(w)
            self._by_client.get(client, set()).discard(w)
            w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            data = await reader.read(self.chunk)
            if not data:
                writer.transport.abort()
                return
            await self._flowing.wait()
            if self.delay_s:
                await asyncio.sleep(self.delay_s * random.uniform(0.5, 1.5))
            if writer.transport.is_closing():
                return
            writer.write(data)
            await writer.drain()


# ----------------------------------------------------------------------------- hostile corpus

CORPUS = REPO_ROOT / "tests" / "corpus"
# features a sending test can provide; entries that need others are skipped (and said so).
# The authenticated-agents work adds e.g. "agent_auth" (signed batches, site ownership).
SUPPORTED_NEEDS: frozenset[str] = frozenset()


@dataclass(frozen=True)
class CorpusEntry:
    """One line of tests/corpus/manifest.json (its format: tests/corpus/README.md)."""

    file: str | None
    what: str
    expect: str  # "stored" or "dead_letter"
    reason: str | None = None  # the dead letter's qilu.reason
    rejected: tuple[str, ...] = ()  # per-reading (or per-gap) reasons, in index order
    stored: int = 0  # readings of this entry that must be stored
    times: int = 1  # sent this many times (a retry of the same envelope)
    null_value: bool = False  # a record with no value (a tombstone)
    needs: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.file or "null_value"


def load_corpus() -> list[CorpusEntry]:
    manifest = json.loads((CORPUS / "manifest.json").read_text())
    out = []
    for e in manifest["entries"]:
        send = e.get("send", {})
        out.append(
            CorpusEntry(
                file=e["file"],
                what=e["what"],
                expect=e["expect"],
                reason=e.get("reason"),
                rejected=tuple(e.get("rejected", ())),
                stored=int(e.get("stored", 0)),
                times=int(send.get("times", 1)),
                null_value=bool(send.get("null_value", False)),
                needs=tuple(e.get("needs", ())),
            )
        )
    return out


def corpus_value(entry: CorpusEntry, devices: list[str], now_us: int) -> bytes | None:
    """The record value of an entry: .bin files as they are; .json files encoded as msgpack
    after resolving the placeholders ``$now``, ``$now-600s``, ``$now+360s``, ``$devN`` (the
    Nth corpus device), ``{"$msgpack_timestamp": seconds}`` and the top-level
    ``"$pad_bytes": n`` (n bytes under a key readers ignore)."""
    import msgpack

    if entry.null_value or entry.file is None:
        return None
    path = CORPUS / entry.file
    if path.suffix == ".bin":
        return path.read_bytes()

    def resolve(x: Any) -> Any:
        if isinstance(x, str) and x.startswith("$now"):
            rest = x[4:].removesuffix("s")
            return now_us + (int(float(rest) * 1e6) if rest else 0)
        if isinstance(x, str) and x.startswith("$dev"):
            return devices[int(x[4:])]
        if isinstance(x, list):
            return [resolve(v) for v in x]
        if isinstance(x, dict):
            if set(x) == {"$msgpack_timestamp"}:
                return msgpack.Timestamp(int(x["$msgpack_timestamp"]))
            return {k: resolve(v) for k, v in x.items()}
        return x

    obj = resolve(json.loads(path.read_text()))
    if isinstance(obj, dict) and "$pad_bytes" in obj:
        obj["pad"] = b"\x00" * int(obj.pop("$pad_bytes"))
    return bytes(msgpack.packb(obj, use_bin_type=True, datetime=False))


def stop_and_drain(
    producer: LedgerProducer, kafka: KafkaSettings, group: str, join_s: float = 60.0
) -> None:
    """Stop the ledger's producer (the ledger counts what the broker acknowledged), check that
    it failed on nothing, and wait until ``group`` consumed every readings topic to its end."""
    producer.stop_event.set()
    producer.join(timeout=join_s)
    assert producer.error is None, producer.error
    topics = readings_topics(kafka)
    wait_for(lambda: group_lag(kafka, group, topics) == 0, 120, "consumer lag back to 0")


def assert_exactly_once(t: Tally, ingest: IngestProcess) -> None:
    """Every reading the broker acknowledged is stored once and nothing else is."""
    assert t.lost == 0, ingest.log_text()[-3000:]
    assert t.duplicates == 0
    assert t.rows == t.ledger
