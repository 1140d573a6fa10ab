"""Reading the dead-letter topic back: the newest records, or one by its place.

Used by ``qilu deadletters tail`` / ``show`` and ``/v1/admin/deadletters/records``. A plain
consumer without a group: it assigns partitions, seeks and reads, and commits nothing.
"""

from __future__ import annotations

from typing import Any

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from qilu.settings import KafkaSettings
from stream.deadletter import StoredLetter, decode_headers
from stream.topics import deadletter_topic

POLL_MS = 1000


def _consumer(kafka: KafkaSettings) -> KafkaConsumer:
    return KafkaConsumer(
        bootstrap_servers=kafka.bootstrap,
        client_id=f"{kafka.client_id}-deadletters",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=POLL_MS,
    )


def _stored(rec: Any) -> StoredLetter:
    return StoredLetter(
        rec.partition,
        rec.offset,
        rec.timestamp,
        rec.key,
        rec.value or b"",
        decode_headers(rec.headers or []),
    )


def _read(
    consumer: KafkaConsumer, ranges: dict[TopicPartition, tuple[int, int]]
) -> list[StoredLetter]:
    """Every record of [first, end) of each partition."""
    todo = {tp: r for tp, r in ranges.items() if r[0] < r[1]}
    if not todo:
        return []
    consumer.assign(list(todo))
    for tp, (first, _) in todo.items():
        consumer.seek(tp, first)
    out: list[StoredLetter] = []
    idle = 0
    while todo and idle < 10:  # ten empty polls in a row: the broker holds no more for us
        got = consumer.poll(timeout_ms=POLL_MS)
        idle = 0 if got else idle + 1
        for tp, recs in got.items():
            end = todo.get(tp, (0, 0))[1]
            out += [_stored(r) for r in recs if r.offset < end]
            if recs and recs[-1].offset + 1 >= end:
                todo.pop(tp, None)
                consumer.pause(tp)
    return out


def tail(
    kafka: KafkaSettings,
    n: int,
    *,
    reason: str | None = None,
    agent: str | None = None,
    scan: int = 10_000,
) -> list[StoredLetter]:
    """The newest ``n`` dead letters matching the filters among the last ``scan`` records of
    each partition, oldest first."""
    topic = deadletter_topic(kafka)
    consumer = _consumer(kafka)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        begins, ends = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
        ranges = {tp: (max(begins[tp], ends[tp] - scan), ends[tp]) for tp in tps}
        letters = _read(consumer, ranges)
    finally:
        consumer.close()
    found = [
        x
        for x in letters
        if (reason is None or x.reason == reason) and (agent is None or x.agent_id == agent)
    ]
    found.sort(key=lambda x: (x.timestamp_ms, x.partition, x.offset))
    return found[-n:] if n > 0 else []


def fetch(kafka: KafkaSettings, partition: int, offset: int) -> StoredLetter | None:
    """One record of the dead-letter topic, None if the topic does not hold it (any more)."""
    topic = deadletter_topic(kafka)
    consumer = _consumer(kafka)
    try:
        if partition not in (consumer.partitions_for_topic(topic) or set()):
            return None
        tp = TopicPartition(topic, partition)
        first, end = consumer.beginning_offsets([tp])[tp], consumer.end_offsets([tp])[tp]
        if not first <= offset < end:
            return None
        got = _read(consumer, {tp: (offset, offset + 1)})
    finally:
        consumer.close()
    return next((x for x in got if x.offset == offset), None)
