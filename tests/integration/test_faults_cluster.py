"""The cluster profile under faults: the partition leader broker killed mid-stream.

Three KRaft brokers of our own (``faults.private_kafka_cluster``: the cluster profile's
configuration, free ports, 127.0.0.11-13), topics with three replicas and
``min.insync.replicas=2``, the ledger's producer with ``acks=all`` and idempotence, and
``qilu ingest`` reading from the cluster into the test's database. The broker leading the
ledger topic's partition 0 is SIGKILLed while readings flow and stays down: its partitions
must get a new leader among the two survivors, take writes again, and every acknowledged
reading must be stored exactly once (docs/faults.md).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from qilu.settings import Settings
from stream.topics import ensure_topics
from tests.helpers import wait_for
from tests.integration.faults import (
    IngestProcess,
    Ledger,
    LedgerProducer,
    assert_exactly_once,
    dropped_sockets_collected,  # noqa: F401 - autouse
    env_number,
    fault_marks,
    kafka_threads_ended,
    private_kafka_cluster,
    register_devices,
    stop_and_drain,
    unauthenticated,
    wait_writable,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.admin import KafkaAdminClient

pytestmark = fault_marks(int(env_number("QILU_FAULTS_TIMEOUT_S", 420)))


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The conftest settings, with unsigned envelopes accepted (faults.unauthenticated)."""
    return unauthenticated(settings)


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


def test_partition_leader_killed_mid_stream_nothing_lost_writes_resume(
    settings: Settings, tmp_path: Path
) -> None:
    rate = env_number("QILU_FAULTS_CLUSTER_RATE", 2_000)
    after_s = env_number("QILU_FAULTS_CLUSTER_AFTER_S", 15)  # traffic after the kill
    with private_kafka_cluster(settings) as cluster:
        kafka = settings.kafka.model_copy(update={"bootstrap": cluster.bootstrap})
        s = settings.model_copy(update={"kafka": kafka})
        ensure_topics(kafka)
        ledger = Ledger(register_devices(s.db), int(rate * (after_s + 120)))
        producer = LedgerProducer(ledger, kafka, rate=rate)
        wait_writable(kafka, producer.topic)
        before = describe(cluster.bootstrap, producer.topic)
        assert all(len(p["replica_nodes"]) == 3 for p in before), before
        ingest = IngestProcess(
            s, tmp_path / "ingest.log", QILU_INGEST__GROUP_INSTANCE_ID="cluster-ingest"
        )
        producer.start()
        ingest.start()
        try:
            wait_for(lambda: ledger.acked >= rate * 5, 120, "five seconds of readings acked")
            wait_for(lambda: stored_any(s, ledger, acks_on(ledger, {0})), 120, "ingest storing")
            victim = before[0]["leader_id"]
            led = {p["partition_index"] for p in before if p["leader_id"] == victim}
            acked_before = len(acks_on(ledger, led))
            cluster.kill(victim)
            killed_at = time.monotonic()
            wait_for(
                lambda: len(acks_on(ledger, led)) > acked_before, 60, "writes to its partitions"
            )
            produce_resumed_s = time.monotonic() - killed_at
            fresh = acks_on(ledger, led)[acked_before:]
            wait_for(lambda: stored_any(s, ledger, fresh), 90, "those writes stored")
            stored_resumed_s = time.monotonic() - killed_at
            # the test's own clients ask the survivors only
            alive = cluster.bootstrap_without(victim)
            after = describe(alive, producer.topic)
            time.sleep(max(0.0, after_s - (time.monotonic() - killed_at)))  # keep flowing
            survivors = kafka.model_copy(update={"bootstrap": alive})
            stop_and_drain(producer, survivors, s.ingest.group_id, join_s=60)
        finally:
            producer.stop_event.set()
            ingest.stop()
            producer.join(timeout=30)
        t = ledger.tally(
            "cluster_partition_leader_killed",
            s.db,
            killed_broker=victim,
            partitions_it_led=sorted(led),
            produce_resumed_s=round(produce_resumed_s, 2),
            stored_resumed_s=round(stored_resumed_s, 2),
            producer_failures=producer.failures,
        )
    assert_exactly_once(t, ingest)
    # the dead broker's partitions were taken over by a survivor and took writes while it
    # was still down: with one replica per partition they could not have
    for p in after:
        if p["partition_index"] in led:
            assert p["leader_id"] not in (victim, -1), after
            assert victim not in p["isr_nodes"], after
