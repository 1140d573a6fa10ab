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
        (one("pile-1", "power_kw", float(NOW), 1.0), "timestamp_out_of_range"),
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
