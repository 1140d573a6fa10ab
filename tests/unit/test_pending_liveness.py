"""LivenessCoalescer, the coalesced liveness of storage/writer.py: each device's liveness
written at most once per period, nothing lost or moved backwards in between, without a
Python loop per device."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.rows import RowArrays
from storage.writer import Liveness, LivenessCoalescer, newest_per_device


def arrays(pairs: dict[int, int]) -> Liveness:
    devs = sorted(pairs)
    return np.array(devs, np.int32), np.array([pairs[d] for d in devs], np.int64)


def as_dict(live: Liveness) -> dict[int, int]:
    return dict(zip(live[0].tolist(), live[1].tolist(), strict=True))


def test_a_device_not_written_within_the_period_goes_with_its_batch() -> None:
    live = LivenessCoalescer(5.0)
    plan = live.plan(arrays({3: 100, 7: 200}), now=0.0)
    assert as_dict(plan.write) == {3: 100, 7: 200}  # the first sight of a device: at once
    live.committed(plan, 0.0, scanned=True)
    assert len(live) == 0
    plan = live.plan(arrays({3: 150, 9: 90}), now=5.0)  # 3's period is over, 9 is new
    assert as_dict(plan.write) == {3: 150, 9: 90}
    assert as_dict(plan.hold) == {}


def test_a_device_written_within_the_period_is_held_then_written_with_its_newest() -> None:
    live = LivenessCoalescer(5.0)
    live.committed(live.plan(arrays({3: 100, 7: 200}), 0.0), 0.0, scanned=True)
    for now, ts in ((1.0, 110), (2.0, 130), (3.0, 120)):  # 120: late data, older
        plan = live.plan(arrays({3: ts}), now)
        assert as_dict(plan.write) == {}
        live.committed(plan, now, scanned=live.due(now))
    assert len(live) == 1
    assert not live.plan(None, 4.9).write[0].size  # not due yet
    plan = live.plan(None, 5.0)  # due: the newest, never the late one
    assert as_dict(plan.write) == {3: 130}
    live.committed(plan, 5.0, scanned=True)
    assert len(live) == 0


def test_a_fresh_batch_device_keeps_a_newer_pending_timestamp() -> None:
    live = LivenessCoalescer(5.0)
    live.committed(live.plan(arrays({3: 100}), 0.0), 0.0, scanned=True)
    live.committed(live.plan(arrays({3: 300}), 1.0), 1.0, scanned=False)  # held
    plan = live.plan(arrays({3: 200}), 5.0)  # late data after the period: 300 stays
    assert as_dict(plan.write) == {3: 300}


def test_force_writes_everything_pending_and_an_uncommitted_plan_changes_nothing() -> None:
    live = LivenessCoalescer(5.0)
    live.committed(live.plan(arrays({1: 10, 2: 20}), 0.0), 0.0, scanned=True)
    live.plan(arrays({1: 11, 2: 21}), 1.0)  # its transaction failed: never committed
    assert len(live) == 0
    live.committed(live.plan(arrays({1: 12}), 1.0), 1.0, scanned=True)
    assert as_dict(live.plan(None, 1.0, force=True).write) == {1: 12}


def test_a_negative_device_pk_is_refused_not_folded_into_another_device() -> None:
    live = LivenessCoalescer(5.0)
    with pytest.raises(ValueError, match="device_pk"):
        live.plan(arrays({-1: 2}), 0.0)


@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 300), st.integers(1, 10**15)), max_size=40),
        max_size=8,
    ),
    st.lists(st.floats(0, 3), min_size=8, max_size=8),
)
def test_written_then_forced_equals_the_newest_per_device_and_each_once_per_period(
    batches: list[list[tuple[int, int]]], steps: list[float]
) -> None:
    live = LivenessCoalescer(2.0)
    db: dict[int, int] = {}  # device_liveness: moves only forward
    written_at: dict[int, list[float]] = {}
    expected: dict[int, int] = {}
    now = 0.0
    for batch, step in zip(batches, steps, strict=False):
        now += step
        rows = None
        if batch:
            rows = newest_per_device(
                RowArrays(
                    np.array([d for d, _ in batch], np.int32),
                    np.zeros(len(batch), np.int16),
                    np.array([t for _, t in batch], np.int64),
                    np.zeros(len(batch), np.float64),
                    np.zeros(len(batch), np.int16),
                )
            )
            for d, t in batch:
                expected[d] = max(t, expected.get(d, t))
        scanned = live.due(now)
        plan = live.plan(rows, now)
        for d, t in as_dict(plan.write).items():
            db[d] = max(t, db.get(d, t))
            written_at.setdefault(d, []).append(now)
        live.committed(plan, now, scanned=scanned)
    plan = live.plan(None, now, force=True)
    for d, t in as_dict(plan.write).items():
        db[d] = max(t, db.get(d, t))
    live.committed(plan, now, scanned=True)
    assert db == expected
    assert len(live) == 0
    for times in written_at.values():
        assert all(b - a >= 2.0 for a, b in itertools.pairwise(times))


@pytest.mark.parametrize(("now", "written"), [(4.0, {3}), (16.0, {3, 7}), (31.0, {3, 7, 9})])
def test_each_device_is_held_for_its_own_period_at_most_the_cap(
    now: float, written: set[int]
) -> None:
    live = LivenessCoalescer(30.0)
    # a transformer's 30 s window / 8, a charging pile's 120 s / 8, a collar's 900 s / 8
    live.set_periods(np.array([3, 7, 9], np.int32), np.array([3.75, 15.0, 112.5]))
    live.committed(live.plan(arrays({3: 1, 7: 1, 9: 1}), now=0.0), 0.0, scanned=True)
    plan = live.plan(arrays({3: 2, 7: 2, 9: 2}), now=now)
    assert set(as_dict(plan.write)) == written  # the collar's 112.5 s capped at 30 s
    assert set(as_dict(plan.hold)) == {3, 7, 9} - written


def test_a_held_device_is_written_when_its_own_period_is_over() -> None:
    live = LivenessCoalescer(30.0)
    live.set_periods(np.array([3, 7], np.int32), np.array([4.0, 20.0]))
    live.committed(live.plan(arrays({3: 1, 7: 1}), now=0.0), 0.0, scanned=True)
    plan = live.plan(arrays({3: 2, 7: 2}), now=1.0)  # both held
    assert as_dict(plan.hold) == {3: 2, 7: 2}
    live.committed(plan, 1.0, scanned=False)
    assert live.due(1.8)  # looked for every fifth of the shortest period
    plan = live.plan(None, now=4.0)
    assert as_dict(plan.write) == {3: 2}
    live.committed(plan, 4.0, scanned=True)
    plan = live.plan(None, now=20.0)
    assert as_dict(plan.write) == {7: 2}


def test_a_device_without_a_period_gets_the_shortest_never_a_longer_one() -> None:
    live = LivenessCoalescer(30.0)
    assert live.unknown(np.array([1, 5], np.int32)).tolist() == [1, 5]
    live.set_periods(np.array([1], np.int32), np.array([10.0]))
    live.set_periods(np.array([2], np.int32), np.array([60.0]))  # above the cap: 30
    assert live.unknown(np.array([1, 2, 5, 100], np.int32)).tolist() == [5, 100]
    live.committed(live.plan(arrays({2: 1, 5: 1}), now=0.0), 0.0, scanned=True)
    assert set(as_dict(live.plan(arrays({2: 2, 5: 2}), now=10.0).write)) == {5}
    live.forget_periods()  # every device the shortest until set again
    assert live.unknown(np.array([1, 2], np.int32)).tolist() == [1, 2]
    assert set(as_dict(live.plan(arrays({2: 2, 5: 2}), now=10.0).write)) == {2, 5}
