"""The offsets stored with the rows (storage/offsets.py): what the batch notes, and where
the ingest resumes a newly assigned partition (docs/adr/0016-offsets-in-the-database.md)."""

from __future__ import annotations

from typing import Any

from storage.offsets import OffsetMarks, ReplayLoss, ReplayPlan, replay_plan


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
    plan = replay_plan(stored, committed, {})
    assert plan == ReplayPlan({("t", 0): 100}, [])


def test_records_past_the_broker_retention_are_a_loss_and_reading_starts_at_the_oldest() -> None:
    stored = {("t", 0): 100, ("t", 1): 50, ("t", 2): 70}
    committed: dict[tuple[str, int], int | None] = {("t", 0): 180, ("t", 1): 60, ("t", 2): 60}
    begins = {("t", 0): 130, ("t", 1): 20, ("t", 2): 90}
    plan = replay_plan(stored, committed, begins)
    assert plan.seeks == {("t", 0): 130, ("t", 1): 50}
    # ("t", 2): the database is ahead of Kafka, but its offset is no longer retained either
    assert plan.losses == [
        ReplayLoss("t", 0, 100, 130, 180),
        ReplayLoss("t", 2, 70, 90, 60),
    ]
    assert plan.losses[0].records == 30


def test_a_group_without_committed_offsets_resumes_from_the_database() -> None:
    # a new group id (or expired offsets): neither read again what the database holds nor
    # skip silently what it does not
    retained = replay_plan({("t", 0): 42}, {("t", 0): None}, {("t", 0): 10})
    assert retained == ReplayPlan({("t", 0): 42}, [])
    gone = replay_plan({("t", 0): 42}, {("t", 0): None}, {("t", 0): 50})
    assert gone == ReplayPlan({("t", 0): 50}, [ReplayLoss("t", 0, 42, 50, None)])
    # a partition the database never stored: the reset policy's (the earliest record)
    assert replay_plan({}, {("t", 0): None}, {("t", 0): 50}) == ReplayPlan({}, [])
