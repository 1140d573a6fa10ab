"""The T/CEC 102 endpoint's Kafka sink (librdkafka) on the real broker.

The endpoint produces with confluent-kafka while the puller and the edge agents produce with
kafka-python (docs/adr/0015-tcec102.md, "Throughput"): the records must be the same for the
ingest (signed envelope, key = agent id) and land in the partition kafka-python chooses for
the key, so one agent's records stay in one partition whichever producer wrote them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from kafka import KafkaConsumer
from kafka.partitioner.default import murmur2

from interconnect.tcec102 import server
from qilu import signing
from qilu.contract import Envelope, Quality, Reading, Sector, decode
from qilu.errors import RetryableError
from qilu.ports import free_port
from qilu.settings import KafkaSettings, Settings
from stream.deadletter import DeadLetter
from stream.topics import deadletter_topic, readings_topic

pytestmark = pytest.mark.integration
AGENTS = [f"tcec102-MA000000{i}" for i in range(8)]


@pytest.fixture
def sink(base_settings: Settings, kafka: KafkaSettings) -> Iterator[server.KafkaSink]:
    out = server.KafkaSink(base_settings.model_copy(update={"kafka": kafka}))
    yield out
    out.close()


def _records(kafka: KafkaSettings, topic: str, n: int) -> list[Any]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
    )
    out: list[Any] = []
    try:
        for rec in consumer:
            out.append(rec)
            if len(out) == n:
                break
    finally:
        consumer.close()
    return out


def test_acknowledged_records_are_signed_and_keyed_like_kafka_python_would(
    sink: server.KafkaSink, kafka: KafkaSettings
) -> None:
    key = signing.generate_key()
    signer = signing.Signer(1, key.private_b64)
    entry = signing.AgentEntry("", {1: signing.agent_key(key.public)}, frozenset())

    async def produce_all() -> None:
        acks = []
        for seq, agent in enumerate(AGENTS):
            batch = Envelope(agent, "boot", seq, 1_000)
            batch.add(Reading(f"tcec102.{agent}.E1", "fault", 1_000, 0.0, Quality.GOOD))
            acks.append(sink.produce(batch, signer))
        await asyncio.gather(*acks)  # every future resolves once Kafka acknowledged it

    asyncio.run(produce_all())
    topic = readings_topic(kafka, Sector.CHARGING)
    records = _records(kafka, topic, len(AGENTS))
    assert len(records) == len(AGENTS)
    for rec in records:
        env = decode(rec.value)
        assert rec.key == env.agent_id.encode()
        assert signing.verify(entry, rec.headers, rec.value) is None
        # kafka-python's DefaultPartitioner for a key (the Java client's too)
        chosen = (murmur2(rec.key) & 0x7FFFFFFF) % kafka.partitions
        assert rec.partition == chosen, env.agent_id
    assert sorted(decode(r.value).agent_id for r in records) == sorted(AGENTS)
    assert len({r.partition for r in records}) > 1


def test_dead_letters_reach_their_topic(sink: server.KafkaSink, kafka: KafkaSettings) -> None:
    sink.dead_letter(DeadLetter(b"MA0000001", b"garbage", "tcec102_malformed_request", "x", "s"))
    sink.close()  # flushes
    (rec,) = _records(kafka, deadletter_topic(kafka), 1)
    assert rec.value == b"garbage"
    assert dict(rec.headers)["qilu.reason"] == b"tcec102_malformed_request"


def test_without_a_broker_the_sink_is_not_ready(base_settings: Settings) -> None:
    """No broker on the port: a retryable error (after the 2 s metadata wait), so the
    endpoint answers -1 and builds the sink again at its next refresh."""
    kafka = base_settings.kafka.model_copy(update={"bootstrap": f"127.0.0.1:{free_port()}"})
    with pytest.raises(RetryableError, match="Kafka unreachable"):
        server.KafkaSink(base_settings.model_copy(update={"kafka": kafka}))
