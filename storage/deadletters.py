"""Dead letters an operator can read: the summary the ingest writes, and the reads of it.

The ingest keeps every refused record on the dead-letter topic (stream/deadletter.py) and, in
the same transaction as the batch's readings, adds what the batch refused to
``deadletter_summary`` (migration 050, docs/adr/0012-dead-letters.md):

* :class:`SummaryWriter` is a part of the readings sink's transaction
  (:class:`storage.writer.ReadingsSink`, ``parts``). It locks the marks of the batch's source
  partitions, leaves out records an earlier transaction counted (a batch read again after a
  crash or a rebalance), upserts the summed rows and moves the marks: per batch three or four
  set-based statements, none per record;
* :func:`summary` answers "what was refused, by reason / agent / device, in a time window"
  for ``qilu deadletters summary`` and ``/v1/admin/deadletters``;
* :func:`prune` deletes the minutes before a time (``qilu deadletters prune``).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from storage.deadletter_tally import DeadLetterTally

_ENSURE_MARKS = (
    "INSERT INTO deadletter_marks (topic, partition)"
    " SELECT t, p FROM unnest(%s::text[], %s::int4[]) AS u(t, p) ORDER BY t, p"
    " ON CONFLICT DO NOTHING"
)
# row locks in key order: a second writer of the same partition (the old owner finishing a
# batch during a rebalance) waits here and then sees what the first one counted
_LOCK_MARKS = (
    "SELECT m.topic, m.partition, m.next_offset FROM deadletter_marks m"
    " JOIN unnest(%s::text[], %s::int4[]) AS u(t, p) ON m.topic = u.t AND m.partition = u.p"
    " ORDER BY m.topic, m.partition FOR UPDATE OF m"
)
_MOVE_MARKS = (
    "UPDATE deadletter_marks m SET next_offset = greatest(m.next_offset, u.o)"
    " FROM unnest(%s::text[], %s::int4[], %s::int8[]) AS u(t, p, o)"
    " WHERE m.topic = u.t AND m.partition = u.p"
)
_UPSERT = (
    "INSERT INTO deadletter_summary AS s (bucket, agent_id, reason, device_id, records,"
    " refused_readings, example_source, example_detail)"
    " SELECT 'epoch'::timestamptz + b * interval '1 microsecond', a, r, d, n, x, es, ed"
    " FROM unnest(%s::int8[], %s::text[], %s::text[], %s::text[], %s::int8[], %s::int8[],"
    " %s::text[], %s::text[]) AS u(b, a, r, d, n, x, es, ed)"
    " ON CONFLICT (bucket, agent_id, reason, device_id) DO UPDATE SET"
    " records = s.records + EXCLUDED.records,"
    " refused_readings = s.refused_readings + EXCLUDED.refused_readings,"
    " example_source = EXCLUDED.example_source, example_detail = EXCLUDED.example_detail"
)


class SummaryWriter:
    """The dead-letter summary as a part of the readings sink's transaction.

    ``tally`` is the one the ingest consumer fills (:class:`storage.deadletter_tally.
    DeadLetterTally`); ``max_rows_per_statement`` bounds the array statements (the
    TimescaleDB test engine takes 500)."""

    def __init__(self, tally: DeadLetterTally, *, max_rows_per_statement: int = 0) -> None:
        self.tally = tally
        self._chunk = max_rows_per_statement if max_rows_per_statement > 0 else 1 << 30
        self.written = 0  # summary rows upserted by the last committed batch

    @property
    def pending(self) -> int:
        return self.tally.pending

    def write(self, cur: psycopg.Cursor[TupleRow]) -> None:
        """Inside the sink's transaction: add the batch's new dead letters to the summary."""
        self.written = 0
        entries = self.tally.entries()
        if not entries:
            return
        parts = sorted({(e.topic, e.partition) for e in entries})
        topics, partitions = [t for t, _ in parts], [p for _, p in parts]
        cur.execute(_ENSURE_MARKS, (topics, partitions))
        # The marks are read from a cursor of their own. The sink sends its statements in
        # pipeline mode on one shared cursor; psycopg resets a cursor when it executes and sets
        # an answer on its cursor when the answer arrives, also while a later statement of the
        # same cursor is being sent. When the server answers each statement at once (the
        # TimescaleDB test engine does; PostgreSQL holds the answers until the pipeline's sync
        # or flush, or a full output buffer), the INSERT's answer could so land on ``cur``
        # after the SELECT's reset, and a fetchall() there took it for the SELECT's and failed:
        # "the last operation didn't produce records (command status: INSERT 0 0)".
        with cur.connection.cursor() as locking:
            locking.execute(_LOCK_MARKS, (topics, partitions))
            marks = {(str(t), int(p)): int(o) for t, p, o in locking.fetchall()}
        rows, moved = self.tally.rows(marks)
        for lo in range(0, len(rows), self._chunk):
            part = rows[lo : lo + self._chunk]
            cur.execute(_UPSERT, [list(col) for col in zip(*part, strict=True)])
        if moved:
            keys = sorted(moved)
            cur.execute(
                _MOVE_MARKS,
                ([t for t, _ in keys], [p for _, p in keys], [moved[k] for k in keys]),
            )
        self.written = len(rows)

    def committed(self) -> None:
        self.tally.clear()

    def discard(self) -> None:
        self.tally.clear()


# -- reads ------------------------------------------------------------------------------------
class Dimension(enum.StrEnum):
    REASON = "reason"
    AGENT = "agent"
    DEVICE = "device"


_COLUMN = {Dimension.REASON: "reason", Dimension.AGENT: "agent_id", Dimension.DEVICE: "device_id"}


@dataclass(frozen=True, slots=True)
class SummaryRow:
    """One group of the summary; the dimensions not grouped by are None."""

    reason: str | None
    agent_id: str | None
    device_id: str | None
    records: int
    readings: int
    first: datetime  # first and last minute with a refusal of the group
    last: datetime
    example_source: str
    example_detail: str


def summary(
    conn: psycopg.Connection[TupleRow],
    *,
    start: datetime,
    end: datetime,
    by: Sequence[Dimension] = (Dimension.REASON,),
    reason: str | None = None,
    agent_id: str | None = None,
    device_id: str | None = None,
    limit: int = 100,
) -> list[SummaryRow]:
    """What the ingest refused in [start, end) (the minute it refused it), grouped by ``by``,
    most readings (then records) first. A whole-envelope refusal has device ``""``."""
    dims = list(dict.fromkeys(by))
    params: dict[str, Any] = {"start": start, "end": end, "limit": limit}
    where: list[sql.Composable] = [sql.SQL("bucket >= %(start)s AND bucket < %(end)s")]
    for col, value in (("reason", reason), ("agent_id", agent_id), ("device_id", device_id)):
        if value is not None:
            params[col] = value
            where.append(sql.SQL("{} = {}").format(sql.Identifier(col), sql.Placeholder(col)))
    selected = [
        sql.Identifier(_COLUMN[d]) if d in dims else sql.SQL("NULL::text")
        for d in (Dimension.REASON, Dimension.AGENT, Dimension.DEVICE)
    ]
    group = sql.SQL(", ").join(sql.Identifier(_COLUMN[d]) for d in dims) if dims else None
    query = sql.SQL(
        "SELECT {sel}, sum(records)::int8, sum(refused_readings)::int8, min(bucket), max(bucket),"
        " (array_agg(example_source ORDER BY bucket DESC, example_source DESC))[1],"
        " (array_agg(example_detail ORDER BY bucket DESC, example_source DESC))[1]"
        " FROM deadletter_summary WHERE {where} {group}"
        " ORDER BY 5 DESC, 4 DESC {order} LIMIT %(limit)s"
    ).format(
        sel=sql.SQL(", ").join(selected),
        where=sql.SQL(" AND ").join(where),
        group=sql.SQL("GROUP BY ") + group if group is not None else sql.SQL(""),
        order=sql.SQL(", ") + group if group is not None else sql.SQL(""),
    )
    rows = conn.execute(query, params).fetchall()
    return [
        SummaryRow(r[0], r[1], r[2], int(r[3]), int(r[4]), r[5], r[6], r[7], r[8])
        for r in rows
        if r[5] is not None  # no row at all: an aggregate without GROUP BY still answers one
    ]


def prune(conn: psycopg.Connection[TupleRow], before: datetime) -> int:
    """Delete the summary's minutes before ``before``; returns how many rows went. Safe at any
    time: the marks that keep the counting exact are kept apart (``deadletter_marks``)."""
    cur = conn.execute("DELETE FROM deadletter_summary WHERE bucket < %s", (before,))
    return cur.rowcount
