"""Losses past Kafka's retention per agent (storage/replay_losses.py): which agents the
window after the loss names, and the estimate of what each lost."""

from __future__ import annotations

from typing import Any

from storage.offsets import ReplayLoss
from storage.replay_losses import REASON, LossWindow, ReplayLosses, gap_boot_id

LOSS = ReplayLoss("q.readings.charging", 2, 100, 104, 180)  # 4 records lost


class _Cursor:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def execute(self, query: str, params: Any) -> None:
        self.calls.append((query, params))


def test_the_window_names_each_agent_its_resume_point_and_its_share() -> None:
    w = LossWindow(LOSS)
    w.observe(99, "old", 10, 1, ("d0",), None)  # before the loss: not counted
    w.observe(104, "a", 250, 5_000, ("d2", "d1"), 7_000)
    w.observe(105, "b", 250, 6_000, ("d3",), 7_100)
    w.observe(104, "a", 250, 5_000, ("d2", "d1"), 7_000)  # a batch read again: once
    w.observe(106, None, 0, None, (), 7_200)  # not decodable: counted, no agent
    assert w.seen == 3
    w.observe(107, "a", 100, 9_000, ("d1",), 7_300)
    assert w.full  # as many records as were lost
    w.observe(108, "c", 250, 9_500, ("d4",), 7_400)  # past the window
    assert w.first_kept_us == 7_000
    gaps = {g.agent_id: g for g in w.gaps()}
    assert set(gaps) == {"a", "b"}
    # exact: where each agent resumed; estimated: 4 lost records x its readings / 4 records
    assert (gaps["a"].end_us, gaps["a"].devices) == (5_000, ("d2", "d1"))
    assert gaps["a"].dropped_estimate == 350
    assert gaps["b"].dropped_estimate == 250
    assert gaps["a"].boot_id == gap_boot_id(LOSS) == "kafka:q.readings.charging/2@100"


def test_an_empty_window_names_no_agent() -> None:
    assert LossWindow(LOSS).gaps() == []


def test_the_loss_is_written_with_the_next_batch_and_kept_until_one_commits() -> None:
    part = ReplayLosses(lookback_s=86_400.0)
    assert part.lost(LOSS)
    assert not part.lost(LOSS)  # a rebalance shows it again: counted once
    assert part.pending == 1
    cur = _Cursor()
    part.write(cur)  # type: ignore[arg-type]
    part.discard()  # that batch was abandoned: the loss is still to write
    assert part.pending == 1
    window = part.window(LOSS.topic, LOSS.partition)
    assert window is not None
    window.observe(104, "a", 250, 5_000, ("d1",), None)
    part.close(LOSS.topic, LOSS.partition)
    assert part.window(LOSS.topic, LOSS.partition) is None
    cur = _Cursor()
    part.write(cur)  # type: ignore[arg-type]
    part.committed()
    assert part.pending == 0
    statements = [q.split()[0] + " " + q.split()[2] for q, _ in cur.calls]
    assert statements == [
        "INSERT replay_losses",
        "INSERT agent_gaps",
        "UPDATE SET",
    ]
    gap = cur.calls[1][1]
    assert (gap["agent"], gap["dropped"], gap["reason"]) == ("a", 1000, REASON)
