"""Unit tier: CPU per component in bench/province_live.py from captured /proc figures."""

from __future__ import annotations

from bench.province_live import cpu_since


def test_a_process_that_exits_between_two_samples_is_no_negative_cpu() -> None:
    # pid 2 (a database backend) exits after the previous sample; pid 3 starts after it
    prev = {1: 100, 2: 500}
    now = {1: (130, 10), 3: (20, 1_000)}
    assert cpu_since([1, 2, 3], now, prev, since=900) == 30 + 20


def test_a_process_older_than_the_previous_sample_counts_from_the_next_one() -> None:
    # seen for the first time, but running before the previous sample: no baseline yet
    assert cpu_since([4], {4: (1_000, 10)}, {}, since=900) == 0
