"""PendingLiveness, the coalesced liveness of storage/writer.py: the newest timestamp per
device not written yet, kept without a Python loop per device."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.rows import RowArrays
from storage.writer import PendingLiveness, newest_per_device


def arrays(pairs: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    devs = sorted(pairs)
    return np.array(devs, np.int32), np.array([pairs[d] for d in devs], np.int64)


def test_note_keeps_the_newest_and_never_moves_back() -> None:
    live = PendingLiveness()
    live.note(*arrays({3: 100, 7: 200}))
    live.note(*arrays({3: 50, 7: 300, 1000: 5}))  # 3 older: kept at 100; 1000 grows the table
    assert len(live) == 3
    devs, ts = live.merged(None)
    assert devs.tolist() == [3, 7, 1000]
    assert ts.tolist() == [100, 300, 5]


def test_merged_folds_a_batch_in_without_changing_the_pending_set() -> None:
    live = PendingLiveness()
    live.note(*arrays({1: 10, 2: 20}))
    devs, ts = live.merged(arrays({2: 15, 4: 40}))
    assert (devs.tolist(), ts.tolist()) == ([1, 2, 4], [10, 20, 40])
    assert live.merged(None)[0].tolist() == [1, 2]  # unchanged
    live.clear()
    assert len(live) == 0
    assert live.merged(None)[0].tolist() == []


@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 300), st.integers(1, 10**15)), max_size=40),
        max_size=6,
    )
)
def test_noting_batches_equals_the_newest_per_device_of_all_of_them(
    batches: list[list[tuple[int, int]]],
) -> None:
    live = PendingLiveness()
    expected: dict[int, int] = {}
    for batch in batches:
        if not batch:
            continue
        rows = RowArrays(
            np.array([d for d, _ in batch], np.int32),
            np.zeros(len(batch), np.int16),
            np.array([t for _, t in batch], np.int64),
            np.zeros(len(batch), np.float64),
            np.zeros(len(batch), np.int16),
        )
        live.note(*newest_per_device(rows))
        for d, t in batch:
            expected[d] = max(t, expected.get(d, t))
    devs, ts = live.merged(None)
    assert dict(zip(devs.tolist(), ts.tolist(), strict=True)) == expected
    assert len(live) == len(expected)


def test_a_negative_device_pk_is_refused_not_folded_into_another_device() -> None:
    live = PendingLiveness()
    live.note(*arrays({5: 1}))
    with pytest.raises(ValueError, match="device_pk"):
        live.note(*arrays({-1: 2}))
    assert live.merged(None)[1].tolist() == [1]
