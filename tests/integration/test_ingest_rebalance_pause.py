"""A partition the ingest paused (a wait while the database or the broker is away) and that
the group then took away and gave back is fetched again: librdkafka keeps a partition's pause
across its revocation and a new assignment, so the ingest's assignment callback resumes it
(stream/ingest.py ``IngestConsumer._on_assign``). Against the real broker."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from qilu.settings import IngestSettings, KafkaSettings
from stream.ingest import IngestConsumer, _Revocations
from stream.topics import readings_topics

pytestmark = pytest.mark.integration


def assignment_parts(cfg: IngestSettings) -> IngestConsumer:
    """The parts of the loop its assignment callback uses (no database: Kafka's committed
    offsets, or the oldest the broker holds, decide where a partition starts)."""
    loop = object.__new__(IngestConsumer)
    loop._cfg, loop._load_offsets, loop._losses = cfg, None, None
    loop._listener = _Revocations()
    loop._owned, loop._positions, loop._sought, loop._paused = set(), {}, {}, False
    return loop


def test_a_paused_partition_taken_away_and_given_back_is_fetched(kafka: KafkaSettings) -> None:
    topic = readings_topics(kafka)[0]
    producer = Producer({"bootstrap.servers": kafka.bootstrap})
    for i in range(10):
        producer.produce(topic, value=b"r%d" % i, partition=0)
    assert producer.flush(30) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "group.id": f"g{uuid.uuid4().hex[:10]}",
            "enable.auto.commit": False,
        }
    )
    loop = assignment_parts(IngestSettings())
    parts = [TopicPartition(topic, 0)]
    try:
        loop._on_assign(consumer, parts)
        loop._pause_all(consumer)  # a wait of the loop (_idle)
        assert consumer.consume(100, 2.0) == []
        loop._on_revoke(consumer, parts)  # the group takes it away during the wait
        loop._resume_all(consumer)  # the loop's next round: it owns nothing to resume
        loop._on_assign(consumer, parts)  # and gives it back
        got: list[bytes | None] = []
        for _ in range(10):
            got += [m.value() for m in consumer.consume(100, 1.0) if m.error() is None]
            if len(got) == 10:
                break
        assert got == [b"r%d" % i for i in range(10)]
    finally:
        consumer.close()
