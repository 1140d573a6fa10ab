"""The ingest's bounded synchronous Kafka calls (stream/kafka_calls.py) and the note of
assigned partitions the poll loop compares with the database's offsets (stream/ingest.py)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from stream import kafka_calls
from stream.ingest import _group, _Revocations


class CommitThatHangs:
    """librdkafka's synchronous commit waiting on a coordinator that does not answer (it
    takes no timeout) until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls: list[list[tuple[str, int, int]]] = []

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> list[TopicPartition]:
        assert not asynchronous
        self.calls.append([(tp.topic, tp.partition, tp.offset) for tp in offsets])
        self.release.wait()
        return offsets


def timed_out(exc: pytest.ExceptionInfo[KafkaException]) -> bool:
    err = exc.value.args[0]
    return isinstance(err, KafkaError) and err.code() == KafkaError._TIMED_OUT


def test_a_commit_that_hangs_is_bounded_and_none_starts_beside_it() -> None:
    consumer: Any = CommitThatHangs()
    with pytest.raises(KafkaException) as first:
        kafka_calls.commit(consumer, {("t.readings", 0): 7}, timeout_ms=100)
    assert timed_out(first)
    with pytest.raises(KafkaException) as second:
        kafka_calls.commit(consumer, {("t.readings", 0): 9}, timeout_ms=100)
    assert timed_out(second)
    assert consumer.calls == [[("t.readings", 0, 7)]]  # the second waited for the first
    consumer.release.set()
    kafka_calls.commit(consumer, {("t.readings", 0): 9}, timeout_ms=5000)
    assert consumer.calls == [[("t.readings", 0, 7)], [("t.readings", 0, 9)]]


class CommitRefused:
    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> list[TopicPartition]:
        raise KafkaException(KafkaError(KafkaError.REBALANCE_IN_PROGRESS))


def test_a_refused_commit_reaches_the_caller() -> None:
    consumer: Any = CommitRefused()
    with pytest.raises(KafkaException) as exc:
        kafka_calls.commit(consumer, {("t.readings", 0): 7}, timeout_ms=5000)
    assert exc.value.args[0].code() == KafkaError.REBALANCE_IN_PROGRESS


class RecordingConsumer:
    def __init__(self) -> None:
        self.timeouts: list[object] = []
        self.asked: list[list[int]] = []

    def committed(self, tps: list[TopicPartition], timeout: object = None) -> Any:
        self.timeouts.append(timeout)
        return [TopicPartition(tp.topic, tp.partition, 7 if tp.partition else -1001) for tp in tps]

    def offsets_for_times(self, tps: list[TopicPartition], timeout: object = None) -> Any:
        self.timeouts.append(timeout)
        self.asked.append([tp.offset for tp in tps])  # -2: the oldest, -1: the end
        return [TopicPartition(tp.topic, tp.partition, 3 if tp.offset == -2 else 11) for tp in tps]

    def list_topics(self, topic: str, timeout: object = None) -> Any:
        self.timeouts.append(timeout)
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT))


def test_every_blocking_call_gets_its_bound() -> None:
    consumer: Any = RecordingConsumer()
    tp0, tp1 = ("t.readings", 0), ("t.readings", 1)
    assert kafka_calls.committed(consumer, [tp0, tp1], 6000) == {tp0: None, tp1: 7}
    assert kafka_calls.beginning_offsets(consumer, [tp0, tp1], 6000) == {tp0: 3, tp1: 3}
    assert kafka_calls.end_offsets(consumer, [tp0, tp1], 6000) == {tp0: 11, tp1: 11}
    assert consumer.asked == [[-2, -2], [-1, -1]]  # one request for all partitions
    with pytest.raises(KafkaException):
        kafka_calls.partitions_for_topic(consumer, "t.readings", 6000)
    assert consumer.timeouts == [6.0, 6.0, 6.0, 6.0]  # librdkafka's -1: no bound


def test_an_assignment_during_the_comparison_is_not_lost() -> None:
    listener = _Revocations()
    a, b = ("t", 0), ("t", 1)
    listener.put_back({a})  # an assignment whose comparison failed
    assert listener.pending()
    taken = listener.take()
    listener.put_back({b})  # a rebalance while the loop compares
    assert taken == {a}
    assert listener.take() == {b}
    assert not listener.pending()
    listener.put_back({a})  # the comparison failed: again next round
    assert listener.take() == {a}


def test_a_fatal_error_in_a_poll_ends_the_loop_other_errors_are_left_out() -> None:
    """librdkafka hands a fatal error (a static member fenced) to ``consume`` as a message
    whose code is ``_FATAL`` but whose fatal flag is off: the loop must not poll on."""
    good = Message(topic="t", partition=0, offset=5, key=b"k", value=b"v", timestamp=(2, 7))
    other = Message(topic="t", partition=1, error=KafkaError(KafkaError._TRANSPORT))
    assert list(_group([good, other])) == [("t", 0)]
    fatal = Message(topic="t", partition=0, error=KafkaError(KafkaError._FATAL, "fenced"))
    with pytest.raises(KafkaException):
        _group([good, fatal])
