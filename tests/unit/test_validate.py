import math

import pytest

from qilu.contract import Envelope
from stream.validate import MIN_TS_US, Validator

NOW = 1_763_900_000_000_000
DEVICES = {"pile-1": (11, "charging_pile"), "trafo-1": (12, "transformer")}
METRICS = {
    "connector_status": 1,
    "power_kw": 2,
    "energy_kwh": 3,
    "fault": 4,
    "oil_temp_c": 5,
    "winding_temp_c": 6,
    "load_pct": 7,
}


def one(device: object, metric: object, ts: object, value: object, q: object = 0) -> Envelope:
    return Envelope("a", "b", 0, NOW, [device], [metric], [ts], [value], [q])  # type: ignore[list-item]


@pytest.fixture
def validator() -> Validator:
    return Validator(DEVICES, METRICS, max_future_skew_s=300)


def test_good_reading_resolves_ids(validator: Validator) -> None:
    rows, rejected = validator.validate(one("pile-1", "power_kw", NOW, 7.2), NOW)
    assert rejected == []
    assert (rows.device_pk, rows.metric_id, rows.ts_us, rows.value, rows.quality) == (
        [11],
        [2],
        [NOW],
        [7.2],
        [0],
    )


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        (one("nobody", "power_kw", NOW, 1.0), "unknown_device"),
        (one(["unhashable"], "power_kw", NOW, 1.0), "unknown_device"),
        (one("pile-1", "oil_temp_c", NOW, 1.0), "unknown_metric"),  # metric of another kind
        (one("pile-1", "power_kw", NOW + 301_000_000, 1.0), "timestamp_out_of_range"),
        (one("pile-1", "power_kw", MIN_TS_US - 1, 1.0), "timestamp_out_of_range"),
        (one("pile-1", "power_kw", float(NOW), 1.0), "bad_timestamp"),
        (one("pile-1", "power_kw", "2026-01-01T00:00:00Z", 1.0), "bad_timestamp"),
        (one("pile-1", "power_kw", NOW, math.nan), "non_finite_value"),
        (one("pile-1", "power_kw", NOW, math.inf), "non_finite_value"),
        (one("pile-1", "power_kw", NOW, -math.inf), "non_finite_value"),
        (one("pile-1", "power_kw", NOW, float("1e999")), "non_finite_value"),
        (one("pile-1", "power_kw", NOW, "7.2"), "bad_value"),
        (one("pile-1", "power_kw", NOW, None), "bad_value"),
        (one("pile-1", "power_kw", NOW, 1e6), "value_out_of_range"),
        (one("pile-1", "power_kw", NOW, 1.0, 9), "bad_quality"),
        (one("pile-1", "power_kw", NOW, 1.0, [0]), "bad_quality"),
    ],
)
def test_bad_readings_are_rejected_with_their_reason(
    validator: Validator, env: Envelope, reason: str
) -> None:
    rows, rejected = validator.validate(env, NOW)
    assert len(rows) == 0
    assert [(r.index, r.reason) for r in rejected] == [(0, reason)]


def test_a_timestamp_of_the_wrong_type_says_what_was_wrong(validator: Validator) -> None:
    _, rejected = validator.validate(one("pile-1", "power_kw", float(NOW), 1.0), NOW)
    assert rejected[0].reason == "bad_timestamp"
    assert rejected[0].detail == f"type float: {float(NOW)!r}"
    _, rejected = validator.validate(one("pile-1", "power_kw", MIN_TS_US - 1, 1.0), NOW)
    assert rejected[0].detail == f"{MIN_TS_US - 1} µs: before 2000"


DAY_US = 86_400_000_000


def test_a_reading_older_than_the_raw_retention_is_refused_as_too_old() -> None:
    v = Validator(DEVICES, METRICS, max_age_s=30 * 86_400)
    env = Envelope(
        "a",
        "b",
        0,
        NOW,
        ["pile-1", "pile-1", "pile-1"],
        ["power_kw"] * 3,
        [NOW - 30 * DAY_US - 1, NOW - 30 * DAY_US, MIN_TS_US - 1],
        [1.0, 2.0, 3.0],
        [0, 0, 0],
    )
    rows, rejected = v.validate(env, NOW)
    assert rows.ts_us == [NOW - 30 * DAY_US]  # exactly at the boundary: kept
    assert [(r.index, r.reason) for r in rejected] == [
        (0, "too_old"),
        (2, "timestamp_out_of_range"),  # before 2000 stays what it was
    ]
    assert "30.0 days old" in rejected[0].detail
    # a retention reaching back before 2000 does not let 1999 in
    long_ago = Validator(DEVICES, METRICS, max_age_s=40 * 365 * 86_400)
    _, rejected = long_ago.validate(one("pile-1", "power_kw", MIN_TS_US - 1, 1.0), NOW)
    assert [r.reason for r in rejected] == ["timestamp_out_of_range"]
    # without a retention (the default) the same reading is accepted
    rows, rejected = Validator(DEVICES, METRICS).validate(env, NOW)
    assert (len(rows), [r.reason for r in rejected]) == (2, ["timestamp_out_of_range"])


def test_conflicting_duplicates_in_one_envelope_are_refused_identical_ones_dropped(
    validator: Validator,
) -> None:
    env = Envelope(
        "a",
        "b",
        0,
        NOW,
        ["pile-1", "pile-1", "trafo-1", "pile-1", "pile-1", "pile-1"],
        ["power_kw", "power_kw", "oil_temp_c", "power_kw", "power_kw", "power_kw"],
        [NOW, NOW, NOW, NOW, NOW, NOW - 1],
        [3.0, math.nan, 55.5, 4.0, 3.0, 3.0],
        [0, 0, 0, 0, 0, 0],
    )
    rows, rejected = validator.validate(env, NOW)
    # the first of each key is kept; index 4 repeats index 0 exactly (silent); 5 is another time
    assert list(zip(rows.device_pk, rows.ts_us, rows.value, strict=True)) == [
        (11, NOW, 3.0),
        (12, NOW, 55.5),
        (11, NOW - 1, 3.0),
    ]
    assert [(r.index, r.reason) for r in rejected] == [
        (1, "non_finite_value"),
        (3, "conflicting_duplicate"),
    ]
    assert rejected[1].detail.startswith("reading 0 has the same device, metric and time: 3.0")
    # another quality is a conflict too
    env.values[3], env.qualities[3] = 3.0, 1
    _, rejected = validator.validate(env, NOW)
    assert [(r.index, r.reason) for r in rejected][1:] == [(3, "conflicting_duplicate")]


def test_bad_reading_does_not_take_good_ones_down(validator: Validator) -> None:
    env = Envelope(
        "a",
        "b",
        0,
        NOW,
        ["pile-1", "pile-1", "trafo-1"],
        ["power_kw", "power_kw", "oil_temp_c"],
        [NOW, NOW, NOW],
        [3.0, math.nan, 55.5],
        [0, 0, 0],
    )
    rows, rejected = validator.validate(env, NOW)
    assert rows.device_pk == [11, 12]
    assert rows.value == [3.0, 55.5]
    assert [(r.index, r.reason) for r in rejected] == [(1, "non_finite_value")]
