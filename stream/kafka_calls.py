"""The ingest's synchronous calls into confluent-kafka (librdkafka), each with a bound.

librdkafka runs its network I/O on its own threads; the binding's synchronous calls wait for
an answer on the calling thread with the GIL released. Most take a timeout of their own:

- ``committed(partitions, timeout=)``, ``offsets_for_times(partitions, timeout=)`` and
  ``list_topics(topic, timeout=)`` raise ``KafkaException`` (``_TIMED_OUT``) when the bound
  passes: given ``request_timeout_ms`` here;
- ``commit(offsets=, asynchronous=False)`` takes none: it waits for the group coordinator's
  answer (and for a coordinator, while none is known). It runs on a worker thread whose wait
  is bounded (:func:`commit`); a commit that outlives its bound is waited for by the next
  one instead of a second one starting beside it (no thread piles up behind a stuck call).
- ``position`` and ``get_watermark_offsets(cached=True)`` answer from the client's state,
  without the broker.

The poll loop's watchdog (stream/watchdog.py) still ends the process if something nothing
bounds holds the loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from storage.offsets import TopicPartitionKey

# librdkafka's "no offset" (``OFFSET_INVALID``): no committed offset, no position, no
# watermark learnt yet
OFFSET_INVALID = -1001


def timed_out(what: str, timeout_ms: int) -> KafkaException:
    return KafkaException(
        KafkaError(KafkaError._TIMED_OUT, f"{what}: no answer in {timeout_ms} ms")
    )


class _Call(threading.Thread):
    def __init__(self, name: str, call: Callable[[], object]) -> None:
        super().__init__(name=name, daemon=True)
        self._call = call
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._call()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            self.error = exc


_calls: dict[tuple[int, str], _Call] = {}


def bounded(consumer: object, name: str, call: Callable[[], object], timeout_ms: int) -> None:
    """Run ``call`` on a worker thread and wait at most ``timeout_ms`` for it; raises
    ``KafkaException`` (``_TIMED_OUT``) when it takes longer, and what ``call`` raised. A call
    of the same name and consumer that timed out earlier is waited for first (its outcome is
    not this call's): while it runs no other starts, so no thread piles up behind it."""
    key = (id(consumer), name)
    earlier = _calls.pop(key, None)
    if earlier is not None:
        earlier.join(timeout_ms / 1000)
        if earlier.is_alive():
            _calls[key] = earlier
            raise timed_out(f"{name} (an earlier one still waits)", timeout_ms)
    worker = _Call(f"kafka-{name}", call)
    worker.start()
    worker.join(timeout_ms / 1000)
    if worker.is_alive():
        _calls[key] = worker
        raise timed_out(name, timeout_ms)
    if worker.error is not None:
        raise worker.error


def commit(consumer: Consumer, offsets: dict[TopicPartitionKey, int], timeout_ms: int) -> None:
    """Commit ``offsets`` (the next offset to read, per partition) and wait for the group
    coordinator's answer; raises ``KafkaException`` (e.g. ``_TIMED_OUT`` after ``timeout_ms``,
    ``REBALANCE_IN_PROGRESS`` or ``ILLEGAL_GENERATION`` after a rebalance)."""
    if not offsets:
        return
    parts = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]

    def call() -> None:
        done = consumer.commit(offsets=parts, asynchronous=False)
        for tp in done or ():
            if tp.error is not None:
                raise KafkaException(tp.error)

    bounded(consumer, "commit", call, timeout_ms)


def committed(
    consumer: Consumer, partitions: Collection[TopicPartitionKey], timeout_ms: int
) -> dict[TopicPartitionKey, int | None]:
    """The group's committed offset of each partition (None: none); raises
    ``KafkaException`` after ``timeout_ms``."""
    if not partitions:
        return {}
    got = consumer.committed(
        [TopicPartition(t, p) for t, p in partitions], timeout=timeout_ms / 1000
    )
    out: dict[TopicPartitionKey, int | None] = {}
    for tp in got:
        if tp.error is not None:
            raise KafkaException(tp.error)
        out[tp.topic, tp.partition] = tp.offset if tp.offset >= 0 else None
    return out


# the ListOffsets request's special timestamps: the oldest offset the broker holds, the end
EARLIEST, LATEST = -2, -1


def _list_offsets(
    consumer: Consumer, partitions: Collection[TopicPartitionKey], at: int, timeout_ms: int
) -> dict[TopicPartitionKey, int]:
    """One ListOffsets request per leader for all ``partitions`` (``offsets_for_times`` with
    the protocol's special timestamps), not one per partition: on a connection the broker
    answers in order, and each waited behind the long-poll fetch in flight (up to
    ``fetch.wait.max.ms``, 0.5 s, per partition)."""
    if not partitions:
        return {}
    asked = [TopicPartition(t, p, at) for t, p in partitions]
    out: dict[TopicPartitionKey, int] = {}
    for tp in consumer.offsets_for_times(asked, timeout=timeout_ms / 1000):
        if tp.error is not None:
            raise KafkaException(tp.error)
        out[tp.topic, tp.partition] = tp.offset
    return out


def beginning_offsets(
    consumer: Consumer, partitions: Collection[TopicPartitionKey], timeout_ms: int
) -> dict[TopicPartitionKey, int]:
    """Each partition's first offset the broker still holds; raises ``KafkaException``
    after ``timeout_ms``."""
    return _list_offsets(consumer, partitions, EARLIEST, timeout_ms)


def end_offsets(
    consumer: Consumer, partitions: Collection[TopicPartitionKey], timeout_ms: int
) -> dict[TopicPartitionKey, int]:
    """Each partition's end (the offset of its next record); raises ``KafkaException``
    after ``timeout_ms``."""
    return _list_offsets(consumer, partitions, LATEST, timeout_ms)


def cached_end(consumer: Consumer, tp: TopicPartitionKey) -> int | None:
    """The partition's high watermark as the client last learnt it (every fetch response
    carries it, an empty one too); None before the first."""
    got = consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
    if got is None or got[1] < 0:
        return None
    return got[1]


def partitions_for_topic(consumer: Consumer, topic: str, timeout_ms: int) -> set[int]:
    """The topic's partitions (empty: not served yet); raises ``KafkaException`` when the
    metadata request takes longer than ``timeout_ms``."""
    meta = consumer.list_topics(topic, timeout=timeout_ms / 1000).topics.get(topic)
    if meta is None or meta.error is not None:
        return set()
    return set(meta.partitions)
