"""The offsets stored with the rows (storage/offsets.py): what the batch notes, and where
the ingest resumes a newly assigned partition (docs/adr/0016-offsets-in-the-database.md)."""

from __future__ import annotations

from typing import Any

from storage.offsets import OffsetMarks, resume_positions


class _Cursor:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def execute(self, query: str, params: Any) -> None:
        self.calls.append((query, params))


def test_marks_keep_the_highest_next_offset_per_partition_in_one_statement() -> None:
    marks = OffsetMarks()
    marks.note("q.readings.charging", 1, 10)
    marks.note("q.readings.charging", 1, 7)  # an older note changes nothing
    marks.note("q.readings.charging", 0, 3)
    marks.note("q.readings.ranch", 0, 5)
    assert marks.pending == 3
    cur = _Cursor()
    marks.write(cur)  # type: ignore[arg-type]
    assert len(cur.calls) == 1
    _, (topics, partitions, offsets) = cur.calls[0]
    assert list(zip(topics, partitions, offsets, strict=True)) == [
        ("q.readings.charging", 0, 3),
        ("q.readings.charging", 1, 10),
        ("q.readings.ranch", 0, 5),
    ]
    marks.committed()
    assert marks.pending == 0


def test_discarded_batch_notes_nothing() -> None:
    marks = OffsetMarks()
    marks.note("t", 0, 4)
    marks.discard()
    assert marks.pending == 0


def test_resume_seeks_back_only_where_kafka_is_ahead_of_the_database() -> None:
    stored = {("t", 0): 100, ("t", 1): 50, ("t", 2): 70, ("t", 3): 9}
    committed: dict[tuple[str, int], int | None] = {
        ("t", 0): 180,  # a restore to an earlier time: read 100..179 again
        ("t", 1): 50,  # the same: nothing to do
        ("t", 2): 60,  # the database is ahead (crash before the Kafka commit): Kafka's
        ("t", 4): 12,  # no row in the database: Kafka's
    }
    # ("t", 3) is not assigned to this consumer
    assert resume_positions(stored, committed) == {("t", 0): 100}


def test_a_group_without_committed_offsets_skips_nothing() -> None:
    # a new group id reads from the earliest record: again what the database holds
    assert resume_positions({("t", 0): 42}, {("t", 0): None}) == {}
