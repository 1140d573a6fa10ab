"""A batch's dead letters summed for ``deadletter_summary``. Pure: no I/O.

The ingest consumer (:mod:`stream.ingest`) fills a :class:`DeadLetterTally` while it validates
a batch; :class:`storage.deadletters.SummaryWriter` writes it in the batch's transaction
(docs/adr/0012-dead-letters.md). It lives with its writer, so storage imports nothing of the
stream stage (docs/adr/0019-floors.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from qilu.errors import Rejection

_MINUTE_US = 60_000_000
MAX_TEXT = 256  # agent and device ids are identifiers; a longer one is cut
MAX_DETAIL = 300


def clean_text(value: object, limit: int = MAX_TEXT) -> str:
    """An identifier or detail as the summary stores it: a string (``repr`` of anything else),
    at most ``limit`` characters, no NUL (PostgreSQL text cannot hold one)."""
    text = value if isinstance(value, str) else repr(value)
    return text[:limit].replace("\x00", "\\x00")


@dataclass(frozen=True, slots=True)
class Tallied:
    """What one dead-letter record adds to one summary row."""

    topic: str
    partition: int
    offset: int
    bucket_us: int  # the minute (µs since the epoch) the ingest refused it
    agent_id: str
    reason: str
    device_id: str  # "" for a whole-envelope refusal
    records: int
    readings: int
    detail: str


@dataclass(slots=True)
class _Acc:
    records: int
    readings: int
    source: str
    detail: str
    offset: int


# (bucket µs, agent, reason, device, records, readings, example source, example detail)
SummaryRow = tuple[int, str, str, str, int, int, str, str]


class DeadLetterTally:
    """The batch's dead letters, summed for ``deadletter_summary``. Pure: no I/O.

    Filled while the ingest validates a batch (only refused records and readings touch it, so
    the good readings' hot path pays nothing), written by :class:`storage.deadletters.
    SummaryWriter` in the batch's transaction, forgotten with the batch when it is aborted.
    Each entry keeps its source record's partition and offset, so that records counted by an
    earlier transaction (a batch read again) are left out: :meth:`rows`.
    """

    def __init__(self) -> None:
        self._pending: list[Tallied] = []

    @property
    def pending(self) -> int:
        return len(self._pending)

    def entries(self) -> list[Tallied]:
        return list(self._pending)

    def clear(self) -> None:
        self._pending = []

    def add_envelope(
        self,
        source: tuple[str, int, int],
        now_us: int,
        agent_id: str,
        reason: str,
        detail: str,
        readings: int = 0,
    ) -> None:
        """A record refused whole (undecodable, unauthenticated) or its gap records."""
        topic, partition, offset = source
        self._pending.append(
            Tallied(
                topic,
                partition,
                offset,
                now_us - now_us % _MINUTE_US,
                clean_text(agent_id),
                clean_text(reason, 64),
                "",
                1,
                readings,
                clean_text(detail, MAX_DETAIL),
            )
        )

    def add_readings(
        self,
        source: tuple[str, int, int],
        now_us: int,
        agent_id: str,
        devices: Sequence[object],
        rejected: Sequence[Rejection],
    ) -> None:
        """Readings of a valid envelope refused one by one: one entry per (reason, device)."""
        topic, partition, offset = source
        groups: dict[tuple[str, str], tuple[int, str]] = {}
        for r in rejected:
            # a device id that is not a string (nil, a number) or is empty shows as its repr:
            # device "" marks a whole-envelope refusal
            dev = devices[r.index] if 0 <= r.index < len(devices) else None
            key = (r.reason, clean_text(repr(dev) if dev == "" else dev))
            got = groups.get(key)
            groups[key] = (1, r.detail) if got is None else (got[0] + 1, got[1])
        bucket = now_us - now_us % _MINUTE_US
        agent = clean_text(agent_id)
        for (reason, dev), (count, detail) in groups.items():
            self._pending.append(
                Tallied(
                    topic,
                    partition,
                    offset,
                    bucket,
                    agent,
                    clean_text(reason, 64),
                    dev,
                    1,
                    count,
                    clean_text(detail, MAX_DETAIL),
                )
            )

    def rows(
        self, marks: dict[tuple[str, int], int]
    ) -> tuple[list[SummaryRow], dict[tuple[str, int], int]]:
        """The summary rows to add and the new marks, leaving out every entry whose record lies
        before its partition's mark (``marks``: (topic, partition) -> next offset to count).

        Rows come merged per key and sorted by it, so one upsert statement touches each row
        once and concurrent writers lock rows in the same order."""
        merged: dict[tuple[int, str, str, str], _Acc] = {}
        new_marks: dict[tuple[str, int], int] = {}
        for e in self._pending:
            tp = (e.topic, e.partition)
            if e.offset < marks.get(tp, 0):
                continue  # counted by an earlier transaction
            if e.offset + 1 > new_marks.get(tp, 0):
                new_marks[tp] = e.offset + 1
            source = f"{e.topic}/{e.partition}/{e.offset}"
            key = (e.bucket_us, e.agent_id, e.reason, e.device_id)
            got = merged.get(key)
            if got is None:
                merged[key] = _Acc(e.records, e.readings, source, e.detail, e.offset)
                continue
            got.records += e.records
            got.readings += e.readings
            if e.offset >= got.offset:  # the example is the newest record
                got.source, got.detail, got.offset = source, e.detail, e.offset
        rows: list[SummaryRow] = [
            (b, a, r, d, v.records, v.readings, v.source, v.detail)
            for (b, a, r, d), v in sorted(merged.items())
        ]
        return rows, new_marks
