"""The Kafka offsets the database has stored, per topic partition (migration 058).

The ingest commits Kafka offsets after the database commits, so Kafka's committed offset
can run ahead of what the database holds in two cases: a database restored to an earlier
point in time (docs/operations.md), and a failover to a replica that had not received the
last transactions. To survive both, every batch also writes, in its own transaction, the
offset after its last record for each source partition (``ingest_offsets``):

* :class:`OffsetMarks` is a part of the readings sink's transaction
  (:class:`storage.writer.ReadingsSink`, ``parts``): one upsert per batch, one row per
  partition of the batch, moving only forward;
* :func:`stored_offsets` reads them back; the ingest seeks to them on every partition
  assignment when Kafka's committed offset is ahead (:func:`resume_positions`, pure;
  docs/adr/0016-offsets-in-the-database.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import psycopg
from psycopg.rows import TupleRow

TopicPartitionKey = tuple[str, int]

_UPSERT = (
    "INSERT INTO ingest_offsets AS o (topic, partition, next_offset)"
    " SELECT t, p, n FROM unnest(%s::text[], %s::int4[], %s::int8[]) AS u(t, p, n)"
    " ORDER BY t, p"
    " ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset,"
    " updated_at = now() WHERE o.next_offset < EXCLUDED.next_offset"
)
_READ = "SELECT topic, partition, next_offset FROM ingest_offsets WHERE topic = ANY(%s::text[])"


class OffsetMarks:
    """The next offset per source partition of the batch being written
    (a :class:`storage.writer.TransactionPart`)."""

    def __init__(self) -> None:
        self._next: dict[TopicPartitionKey, int] = {}

    def note(self, topic: str, partition: int, next_offset: int) -> None:
        """The batch holds the records of ``topic``/``partition`` before ``next_offset``."""
        key = (topic, partition)
        if next_offset > self._next.get(key, -1):
            self._next[key] = next_offset

    @property
    def pending(self) -> int:
        return len(self._next)

    def write(self, cur: psycopg.Cursor[TupleRow]) -> None:
        keys = sorted(self._next)
        cur.execute(
            _UPSERT,
            (
                [t for t, _ in keys],
                [p for _, p in keys],
                [self._next[k] for k in keys],
            ),
        )

    def committed(self) -> None:
        self._next.clear()

    def discard(self) -> None:
        self._next.clear()


def stored_offsets(
    conn: psycopg.Connection[TupleRow], topics: Iterable[str]
) -> dict[TopicPartitionKey, int]:
    """topic partition -> the offset after the last record the database holds."""
    rows = conn.execute(_READ, (list(topics),)).fetchall()
    return {(str(t), int(p)): int(n) for t, p, n in rows}


def resume_positions(
    stored: Mapping[TopicPartitionKey, int],
    committed: Mapping[TopicPartitionKey, int | None],
) -> dict[TopicPartitionKey, int]:
    """Where to seek the newly assigned partitions (those absent: keep Kafka's position).

    Only backwards: the database's offset wins when Kafka's committed one is ahead of it,
    since the records in between are not in this database (a restore to an earlier time, a
    failover that lost transactions). When the database is ahead (a crash after the
    database commit, before the Kafka commit) Kafka's position is kept: the batch is read
    again, which the natural key makes harmless, and its dead letters, which are produced
    after the database commit, are sent again rather than lost. A group without a committed
    offset (a new group id) starts where the consumer's reset policy says (the earliest
    record): it reads again what the database holds, harmlessly, and skips nothing.
    """
    out: dict[TopicPartitionKey, int] = {}
    for key, db_next in stored.items():
        kafka_next = committed.get(key)  # absent: not assigned to us
        if kafka_next is not None and db_next < kafka_next:
            out[key] = db_next
    return out
