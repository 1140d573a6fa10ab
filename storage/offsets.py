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
  assignment when Kafka's committed offset is ahead or missing, and reports the records
  past the broker's retention as lost (:func:`replay_plan`, pure; storage/replay_losses.py;
  docs/adr/0016-offsets-in-the-database.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class ReplayLoss:
    """Records of one partition that the database never stored and the broker no longer
    holds (past its retention): offsets ``first_offset`` up to ``end_offset`` (exclusive,
    the oldest record the broker still holds). ``committed``: Kafka's committed offset of
    the group then (None: the group had none)."""

    topic: str
    partition: int
    first_offset: int
    end_offset: int
    committed: int | None

    @property
    def records(self) -> int:
        return self.end_offset - self.first_offset


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    """Where to seek the newly assigned partitions (those absent: keep Kafka's position)
    and what is lost past the broker's retention."""

    seeks: dict[TopicPartitionKey, int]
    losses: list[ReplayLoss]


def replay_plan(
    stored: Mapping[TopicPartitionKey, int],
    committed: Mapping[TopicPartitionKey, int | None],
    begins: Mapping[TopicPartitionKey, int],
) -> ReplayPlan:
    """Compare, per assigned partition (a key of ``committed``; None: the group has no
    committed offset), the database's next offset with Kafka's committed one and the
    broker's oldest retained one (``begins``).

    * Kafka's committed offset ahead of the database's (a restore to an earlier time, a
      failover that lost transactions): seek back to the database's offset, since the
      records in between are not in this database.
    * No committed offset (a new or changed group id, offsets expired): seek to the
      database's offset too: the consumer's reset policy (the earliest record) would read
      again everything the database holds, or, when the database's offset is no longer
      retained, skip silently to the oldest record.
    * The database ahead of Kafka (a crash after the database commit, before the Kafka
      commit): keep Kafka's position: the batch is read again, which the natural key makes
      harmless, and its dead letters, produced after the database commit, are sent again
      rather than lost.

    Whenever the database's offset is older than the broker's oldest record, the records in
    between are lost: a :class:`ReplayLoss`, and reading starts at the oldest record.
    """
    seeks: dict[TopicPartitionKey, int] = {}
    losses: list[ReplayLoss] = []
    for key, kafka_next in committed.items():
        db_next = stored.get(key)
        if db_next is None:
            continue  # the database never stored this partition: Kafka's position
        begin = begins.get(key, 0)
        if db_next < begin:
            losses.append(ReplayLoss(key[0], key[1], db_next, begin, kafka_next))
        if kafka_next is None or db_next < kafka_next:
            seeks[key] = max(db_next, begin)
    return ReplayPlan(seeks, losses)
