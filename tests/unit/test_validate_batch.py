"""Validator.validate_batch (numpy, the whole batch at once) accepts exactly the readings that
Validator.validate (one envelope at a time, with reasons) accepts."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from qilu.contract import Envelope, decode
from qilu.packed import PackedEnvelope, decode_packed
from storage.rows import RowArrays, Rows
from stream.validate import MIN_TS_US, Validator

NOW = 1_763_900_000_000_000
DEVICES = {
    "pile-1": (11, "charging_pile"),
    "pile-2": (13, "charging_pile"),
    "pile-old": (14, "charging_pile"),
    "trafo-1": (12, "transformer"),
    "nowhere": (15, "transformer"),
}
METRICS = {"connector_status": 1, "power_kw": 2, "energy_kwh": 3, "fault": 4, "oil_temp_c": 5}
SITES = {"pile-1": "s1", "pile-2": "s2", "pile-old": "s1", "trafo-1": "s1"}  # nowhere: none
RETIRED = {"pile-old": NOW - 3_600_000_000}
Row = tuple[int, int, int, float, int]
Batch = list[tuple[list[tuple[object, object, object, object, object]], frozenset[str] | None]]


def validator() -> Validator:
    return Validator(
        DEVICES,
        METRICS,
        max_future_skew_s=300,
        max_age_s=86_400.0,
        retired_us=RETIRED,
        site_of=SITES,
    )


def exact(v: Validator, envs: list[Envelope], sites: list[frozenset[str] | None]) -> list[Row]:
    rows = Rows()
    for env, s in zip(envs, sites, strict=True):
        rows.extend(v.validate(env, NOW, s)[0])
    cols = (rows.device_pk, rows.metric_id, rows.ts_us, rows.value, rows.quality)
    return sorted(zip(*cols, strict=True))


def batched(v: Validator, envs: list[Envelope], sites: list[frozenset[str] | None]) -> list[Row]:
    """validate_batch, then validate() for the envelopes it hands back, as the consumer does."""
    fast, slow = v.validate_batch(envs, NOW, sites)
    assert isinstance(fast, RowArrays)
    parts: list[Rows | RowArrays] = [fast]
    parts += [v.validate(envs[i], NOW, sites[i])[0] for i in slow]
    rows = RowArrays.concat(parts)
    return sorted(
        zip(
            rows.device_pk.tolist(),
            rows.metric_id.tolist(),
            rows.ts_us.tolist(),
            rows.value.tolist(),
            rows.quality.tolist(),
            strict=True,
        )
    )


def env(*readings: tuple[object, object, object, object, object]) -> Envelope:
    e = Envelope("a", "b", 0, NOW)
    for d, m, t, x, q in readings:
        e.devices.append(d)  # type: ignore[arg-type]
        e.metrics.append(m)  # type: ignore[arg-type]
        e.ts_us.append(t)  # type: ignore[arg-type]
        e.values.append(x)  # type: ignore[arg-type]
        e.qualities.append(q)  # type: ignore[arg-type]
    return e


def test_a_good_batch_goes_through_whole() -> None:
    v = validator()
    envs = [
        env(("pile-1", "power_kw", NOW, 7.5, 0), ("pile-1", "fault", NOW, 0, 1)),
        env(("trafo-1", "oil_temp_c", NOW - 10, 55.0, 2)),
    ]
    fast, slow = v.validate_batch(envs, NOW, [frozenset({"s1"}), None])
    assert slow == []
    assert fast.device_pk.tolist() == [11, 11, 12]
    assert fast.metric_id.tolist() == [2, 4, 5]
    assert fast.value.tolist() == [7.5, 0.0, 55.0]
    assert fast.quality.tolist() == [0, 1, 2]


def test_each_refusal_sends_only_its_envelope_the_exact_way() -> None:
    v = validator()
    good = env(("pile-1", "power_kw", NOW, 1.0, 0))
    bad = [
        env(("ghost", "power_kw", NOW, 1.0, 0)),  # unknown_device
        env(("pile-1", "oil_temp_c", NOW, 1.0, 0)),  # unknown_metric for the kind
        env(("pile-1", "power_kw", NOW, "1", 0)),  # bad_value
        env(("pile-1", "power_kw", NOW, math.nan, 0)),  # non_finite_value
        env(("pile-1", "power_kw", NOW, 1e12, 0)),  # value_out_of_range
        env(("pile-1", "power_kw", float(NOW), 1.0, 0)),  # bad_timestamp
        env(("pile-1", "power_kw", MIN_TS_US - 1, 1.0, 0)),  # timestamp_out_of_range
        env(("pile-1", "power_kw", NOW + 10**9, 1.0, 0)),  # ahead of the skew
        env(("pile-1", "power_kw", NOW - 2 * 86_400_000_000, 1.0, 0)),  # too_old
        env(("pile-1", "power_kw", NOW, 1.0, 3)),  # bad_quality
        env(("pile-1", "power_kw", NOW, 1.0, True)),  # bad_quality (a bool)
        env(("pile-old", "power_kw", NOW, 1.0, 0)),  # device_decommissioned
        env(("pile-2", "power_kw", NOW, 1.0, 0)),  # foreign_site (s2)
        env(("nowhere", "oil_temp_c", NOW, 1.0, 0)),  # foreign_site (no site)
        env(("pile-1", "power_kw", NOW, 1.0, 0), ("pile-1", "power_kw", NOW, 1.0, 0)),  # repeat
        env((["x"], "power_kw", NOW, 1.0, 0)),  # a device that is not text
    ]
    for b in bad:
        envs = [good, b, good]
        sites: list[frozenset[str] | None] = [frozenset({"s1"})] * 3
        _, slow = v.validate_batch(envs, NOW, sites)
        assert 1 in slow, b
        assert batched(v, envs, sites) == exact(v, envs, sites)


def test_an_integer_beyond_64_bits_sends_the_batch_the_exact_way() -> None:
    v = validator()
    envs = [env(("pile-1", "power_kw", 2**70, 1.0, 0)), env(("pile-1", "power_kw", NOW, 1.0, 0))]
    fast, slow = v.validate_batch(envs, NOW, [None, None])
    assert slow == [0, 1]
    assert len(fast) == 0


def test_an_empty_batch_and_empty_envelopes() -> None:
    v = validator()
    fast, slow = v.validate_batch([], NOW, [])
    assert (len(fast), slow) == (0, [])
    fast, slow = v.validate_batch([env(), env()], NOW, [None, frozenset()])
    assert (len(fast), slow) == (0, [])


# what msgpack can decode where a string belongs, unhashable lists and maps included
_device = st.sampled_from([*DEVICES, "ghost", 7, None, b"pile-1", True, ["pile-1"], {"d": 1}])
_metric = st.sampled_from([*METRICS, "nope", b"power_kw", 2.0, ["power_kw"], {"m": 1}])
_ts = st.one_of(
    st.integers(NOW - 2 * 86_400_000_000, NOW + 10**9),
    st.sampled_from([NOW, NOW - 1, MIN_TS_US - 1, RETIRED["pile-old"], float(NOW), True]),
)
_value = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from([0, 1, 0.5, 100.0, "1", None]),
)
_quality = st.sampled_from([0, 1, 2, 3, -1, True, 1.0])
_reading = st.tuples(_device, _metric, _ts, _value, _quality)
_sites = st.sampled_from([None, frozenset({"s1"}), frozenset({"s1", "s2"}), frozenset()])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.lists(_reading, max_size=6), _sites), max_size=5))
def test_both_paths_accept_the_same_readings(batch: Batch) -> None:
    v = validator()
    envs = [env(*readings) for readings, _ in batch]
    sites = [s for _, s in batch]
    assert batched(v, envs, sites) == exact(v, envs, sites)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["pile-1", "trafo-1"]), st.integers(0, 3)), max_size=8))
def test_repeats_are_found_whatever_the_order(keys: list[tuple[str, int]]) -> None:
    """Repeated (device, metric, time) within an envelope, identical or not: the exact way
    keeps the first and refuses conflicting ones; the batch way must not store both."""
    v = validator()
    metric = {"pile-1": "power_kw", "trafo-1": "oil_temp_c"}
    e = env(*[(d, metric[d], NOW - t, float(i), 0) for i, (d, t) in enumerate(keys)])
    assert batched(v, [e], [None]) == exact(v, [e], [None])


def test_devices_are_looked_up_among_the_sending_agents_own() -> None:
    """The batch looks a device up among the devices of the agent's sites only (a smaller
    dictionary); a device of another site misses there and goes the exact way, which refuses
    it as foreign_site, as before."""
    v = validator()
    a = v._arrays
    assert set(a.rows_of(frozenset({"s1"}))) == {"pile-1", "pile-old", "trafo-1"}
    assert set(a.rows_of({"s2"})) == {"pile-2"}  # any set, not only frozensets
    assert a.rows_of(None) is a.row  # no site check: every device
    assert not a.rows_of(frozenset())
    foreign = env(("pile-2", "power_kw", NOW - 1_000_000, 3.0, 0))
    own = env(("pile-1", "power_kw", NOW - 1_000_000, 3.0, 0))
    fast, slow = v.validate_batch([foreign, own], NOW, [frozenset({"s1"})] * 2)
    assert slow == [0]
    assert fast.device_pk.tolist() == [11]
    _, rejected = v.validate(foreign, NOW, frozenset({"s1"}))
    assert [r.reason for r in rejected] == ["foreign_site"]


# -- envelopes read into arrays (qilu/packed.py) -------------------------------------------------
def packed_or_listed(e: Envelope) -> Envelope | PackedEnvelope:
    """The envelope as the consumer has it: read into arrays when decode_packed can."""
    data = e.encode()
    return decode_packed(data) or decode(data)


def batched_any(
    v: Validator, envs: list[Envelope | PackedEnvelope], sites: list[frozenset[str] | None]
) -> list[Row]:
    fast, slow = v.validate_batch(envs, NOW, sites)
    parts: list[Rows | RowArrays] = [fast]
    for i in slow:
        e = envs[i]
        parts.append(v.validate(e if isinstance(e, Envelope) else e.envelope(), NOW, sites[i])[0])
    rows = RowArrays.concat(parts)
    cols = (rows.device_pk, rows.metric_id, rows.ts_us, rows.value, rows.quality)
    return sorted(zip(*(c.tolist() for c in cols), strict=True))


_text_device = st.sampled_from([*DEVICES, "ghost", "", "x" * 31, "pile-1 "])
_text_metric = st.sampled_from([*METRICS, "nope", ""])
_wire_value = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0, 1, 2**60, 7.5])
)
_wire_reading = st.tuples(
    _text_device,
    _text_metric,
    st.one_of(st.integers(NOW - 2 * 86_400_000_000, NOW + 10**9), st.sampled_from([NOW, 5])),
    _wire_value,
    st.sampled_from([0, 1, 2, 3, 200]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.lists(_wire_reading, max_size=6), _sites), max_size=6))
def test_envelopes_read_into_arrays_give_the_same_readings(batch: Batch) -> None:
    """A batch of envelopes as decode_packed reads them (with those it leaves to decode()
    mixed in: an integer value sends an envelope that way) accepts exactly the readings
    validate() accepts, envelope by envelope."""
    v = validator()
    listed = [env(*readings) for readings, _ in batch]
    envs = [packed_or_listed(e) for e in listed]
    sites = [s for _, s in batch]
    assert batched_any(v, envs, sites) == exact(v, [decode(e.encode()) for e in listed], sites)


def test_a_batch_read_into_arrays_goes_through_whole() -> None:
    v = validator()
    envs = [
        packed_or_listed(
            env(("pile-1", "power_kw", NOW, 7.5, 0), ("pile-1", "fault", NOW, 1.0, 1))
        ),
        packed_or_listed(env(("trafo-1", "oil_temp_c", NOW - 10, 55.0, 2))),
    ]
    assert all(isinstance(e, PackedEnvelope) for e in envs)
    fast, slow = v.validate_batch(envs, NOW, [frozenset({"s1"}), None])
    assert slow == []
    assert fast.device_pk.tolist() == [11, 11, 12]
    assert fast.metric_id.tolist() == [2, 4, 5]
    # a foreign device misses in its agent's table and goes the exact way
    foreign = packed_or_listed(env(("pile-2", "power_kw", NOW, 1.0, 0)))
    _, slow = v.validate_batch([envs[0], foreign], NOW, [frozenset({"s1"})] * 2)
    assert slow == [1]
