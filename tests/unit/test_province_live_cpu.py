"""Unit tier: CPU per component in bench/province_live.py from captured /proc figures."""

from __future__ import annotations

from bench.province_live import cpu_since, summarise


def test_a_process_that_exits_between_two_samples_is_no_negative_cpu() -> None:
    # pid 2 (a database backend) exits after the previous sample; pid 3 starts after it
    prev = {1: 100, 2: 500}
    now = {1: (130, 10), 3: (20, 1_000)}
    assert cpu_since([1, 2, 3], now, prev, since=900) == 30 + 20


def test_a_process_older_than_the_previous_sample_counts_from_the_next_one() -> None:
    # seen for the first time, but running before the previous sample: no baseline yet
    assert cpu_since([4], {4: (1_000, 10)}, {}, since=900) == 0


def _sample(t: float, stored: float | None, lag_s: float) -> dict[str, object]:
    s: dict[str, object] = {"t_s": t, "components": {}, "lag_records": 1, "lag_s": lag_s}
    if stored is not None:
        s["readings_stored_total"] = stored
    return s


def test_the_lag_and_the_rate_count_from_the_warm_up_after_the_first_reading_stored() -> None:
    # the ingest answers at 10 s but stores its first reading at 100 s (the agents' start);
    # a lag of 50 s at 120 s is inside the 60 s warm-up, one of 12 s at 170 s is not
    samples = [
        _sample(10, 0, 0),
        _sample(50, 0, 0),
        _sample(100, 1_000, 0),
        _sample(120, 40_000, 50),
        _sample(160, 1_000_000, 3),
        _sample(170, 1_370_330, 12),
        _sample(200, 2_481_320, 4),
    ]
    out = summarise(samples, warmup=60, target=10)
    assert out["lag"]["max_s"] == 12
    assert out["lag"]["under_target"] is False
    # (2,481,320 - 1,000,000) / (200 - 160) readings/s: the window's, not the start's
    assert out["readings_stored_per_s"] == 37_033
    assert out["share_of_the_province"] == 1.0
