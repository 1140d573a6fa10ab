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

import time
from pathlib import Path

import pytest

from qilu.settings import Settings
from stream.topics import ensure_topics
from tests.helpers import wait_for
from tests.integration.faults import (
    IngestProcess,
    Ledger,
    LedgerProducer,
    acks_on,
    assert_exactly_once,
    describe,
    dropped_sockets_collected,  # noqa: F401 - autouse
    env_number,
    fault_marks,
    private_kafka_cluster,
    quiet_kafka_client,  # noqa: F401 - autouse
    register_devices,
    stop_and_drain,
    stored_any,
    unauthenticated,
    wait_writable,
)

pytestmark = fault_marks(int(env_number("QILU_FAULTS_TIMEOUT_S", 420)))


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The conftest settings, with unsigned envelopes accepted (faults.unauthenticated)."""
    return unauthenticated(settings)


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
