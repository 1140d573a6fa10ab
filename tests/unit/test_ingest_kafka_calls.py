"""The ingest's bounded synchronous Kafka calls (stream/kafka_calls.py) and the hand-over of
assigned partitions from kafka-python's I/O thread to the poll loop (stream/ingest.py)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError
from kafka.structs import TopicPartition

from stream import kafka_calls
from stream.ingest import _Revocations


class MetadataThatHangs:
    """kafka-python's ``partitions_for_topic`` waiting on a metadata update that does not come
    (``wait_for(future, None)``) until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def partitions_for_topic(self, topic: str) -> set[int]:
        self.calls += 1
        self.release.wait()
        return {0, 1, 2}


def test_a_lookup_that_hangs_is_bounded_and_not_started_twice() -> None:
    consumer: Any = MetadataThatHangs()
    with pytest.raises(KafkaTimeoutError):
        kafka_calls.partitions_for_topic(consumer, "t.readings", timeout_ms=100)
    with pytest.raises(KafkaTimeoutError):
        kafka_calls.partitions_for_topic(consumer, "t.readings", timeout_ms=100)
    assert consumer.calls == 1  # the second call waits for the first lookup
    consumer.release.set()
    assert kafka_calls.partitions_for_topic(consumer, "t.readings", timeout_ms=5000) == {0, 1, 2}
    assert kafka_calls.partitions_for_topic(consumer, "t.readings", timeout_ms=5000) == {0, 1, 2}
    assert consumer.calls == 2  # a finished lookup is not reused


class MetadataThatFails:
    def partitions_for_topic(self, topic: str) -> set[int]:
        raise KafkaTimeoutError("metadata")


def test_a_lookup_error_reaches_the_caller() -> None:
    consumer: Any = MetadataThatFails()
    with pytest.raises(KafkaTimeoutError, match="metadata"):
        kafka_calls.partitions_for_topic(consumer, "t.readings", timeout_ms=5000)


class RecordingConsumer:
    def __init__(self) -> None:
        self.timeouts: list[object] = []

    def commit(self, timeout_ms: object = None) -> None:
        self.timeouts.append(timeout_ms)

    def committed(self, tp: TopicPartition, timeout_ms: object = None) -> int:
        self.timeouts.append(timeout_ms)
        return 7

    def beginning_offsets(self, tps: list[TopicPartition], timeout_ms: object = None) -> Any:
        self.timeouts.append(timeout_ms)
        return dict.fromkeys(tps, 0)


def test_every_blocking_call_gets_its_bound() -> None:
    consumer: Any = RecordingConsumer()
    tp = TopicPartition("t.readings", 0)
    kafka_calls.commit(consumer, 6000)
    assert kafka_calls.committed(consumer, [tp], 6000) == {tp: 7}
    assert kafka_calls.beginning_offsets(consumer, [tp], 6000) == {tp: 0}
    assert consumer.timeouts == [6000, 6000, 6000]  # kafka-python's None: no bound


def test_an_assignment_during_the_comparison_is_not_lost() -> None:
    listener = _Revocations()
    a, b = TopicPartition("t", 0), TopicPartition("t", 1)
    listener.on_partitions_assigned([a])
    assert listener.pending()
    taken = listener.take()
    listener.on_partitions_assigned([b])  # the I/O thread, while the loop compares
    assert taken == {a}
    assert listener.take() == {b}
    assert not listener.pending()
    listener.put_back({a})  # the comparison failed: again next round
    assert listener.take() == {a}
