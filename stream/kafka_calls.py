"""The ingest's synchronous calls into kafka-python, each with a bound.

kafka-python 3 (3.0.12 here) runs all network I/O on its own I/O thread; a synchronous call
from the poll loop's thread schedules a coroutine there and waits on an event
(``kafka/net/selector.py`` ``NetworkSelector.run``) with no timeout of its own: it returns when
the coroutine ends. Whether it ends depends on the call:

- ``commit(timeout_ms=None)`` defaults to ``request_timeout_ms`` in 3.0.12; passed explicitly
  here, so an upgrade that changes the default changes nothing;
- ``committed(timeout_ms=None)`` retries forever while the group's coordinator is unknown
  (``Timer(None)``): bounded here;
- ``beginning_offsets`` and ``end_offsets`` default to ``request_timeout_ms``; passed
  explicitly;
- ``partitions_for_topic`` waits for a metadata update with no timeout at all
  (``_fetch_all_topic_metadata``: ``wait_for(future, None)``) and takes none: run on a worker
  thread whose wait is bounded (:func:`partitions_for_topic`);
- ``position`` takes one (the loop gives 1 s).

None of these bounds helps when the I/O thread itself is stuck (every call and ``poll`` then
wait on it): the poll loop's watchdog (stream/watchdog.py) ends the process then.
"""

from __future__ import annotations

import threading
from collections.abc import Collection

from kafka import KafkaConsumer
from kafka.errors import KafkaTimeoutError
from kafka.structs import TopicPartition


def commit(consumer: KafkaConsumer, timeout_ms: int) -> None:
    """Commit the consumed offsets; raises ``KafkaTimeoutError`` after ``timeout_ms``."""
    consumer.commit(timeout_ms=timeout_ms)


def committed(
    consumer: KafkaConsumer, partitions: Collection[TopicPartition], timeout_ms: int
) -> dict[TopicPartition, int | None]:
    """The group's committed offset of each partition (None: none); raises
    ``KafkaTimeoutError`` after ``timeout_ms`` per partition."""
    return {tp: consumer.committed(tp, timeout_ms=timeout_ms) for tp in partitions}


def beginning_offsets(
    consumer: KafkaConsumer, partitions: Collection[TopicPartition], timeout_ms: int
) -> dict[TopicPartition, int]:
    got: dict[TopicPartition, int] = consumer.beginning_offsets(
        list(partitions), timeout_ms=timeout_ms
    )
    return got


def end_offsets(
    consumer: KafkaConsumer, partitions: Collection[TopicPartition], timeout_ms: int
) -> dict[TopicPartition, int]:
    """Each partition's end (the offset of its next record); raises ``KafkaTimeoutError``
    after ``timeout_ms``."""
    got: dict[TopicPartition, int] = consumer.end_offsets(list(partitions), timeout_ms=timeout_ms)
    return got


class _Lookup(threading.Thread):
    def __init__(self, consumer: KafkaConsumer, topic: str) -> None:
        super().__init__(name=f"partitions-for-{topic}", daemon=True)
        self._consumer, self._topic = consumer, topic
        self.result: set[int] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = set(self._consumer.partitions_for_topic(self._topic))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            self.error = exc


_lookups: dict[tuple[int, str], _Lookup] = {}


def partitions_for_topic(consumer: KafkaConsumer, topic: str, timeout_ms: int) -> set[int]:
    """The topic's partitions (empty: not served yet); raises ``KafkaTimeoutError`` when
    the lookup takes longer than ``timeout_ms``. A lookup that timed out is waited for by the
    next call instead of starting another (no thread piles up behind a stuck one)."""
    key = (id(consumer), topic)
    lookup = _lookups.get(key)
    if lookup is None:
        lookup = _lookups[key] = _Lookup(consumer, topic)
        lookup.start()
    lookup.join(timeout_ms / 1000)
    if lookup.is_alive():
        raise KafkaTimeoutError(f"partitions of {topic}: no answer in {timeout_ms} ms")
    del _lookups[key]
    if lookup.error is not None:
        raise lookup.error
    return lookup.result or set()
