"""qilu/packed.py: an envelope read straight into arrays is the envelope qilu.contract.decode
reads, or None (then decode() decides); StrTable finds what a dictionary finds."""

from __future__ import annotations

import random

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qilu.contract import Envelope, Gap, decode
from qilu.errors import DecodeError
from qilu.packed import PackedEnvelope, StrColumn, StrTable, decode_packed

NOW = 1_763_900_000_000_000


def same(p: PackedEnvelope, e: Envelope) -> bool:
    """The same envelope, values compared bit for bit (a NaN equals the same NaN)."""
    values = np.array(e.values, np.float64) if e.values else np.zeros(0)
    return (
        as_lists(p).devices == e.devices
        and p.metrics.strings() == e.metrics
        and p.ts_us.tolist() == e.ts_us
        and all(type(x) is float for x in e.values)
        and p.values.tobytes() == values.tobytes()
        and p.qualities.tolist() == e.qualities
        and (p.agent_id, p.boot_id, p.seq, p.sent_at_us)
        == (e.agent_id, e.boot_id, e.seq, e.sent_at_us)
        and not e.gaps
    )


def as_lists(p: PackedEnvelope) -> Envelope:
    return Envelope(
        p.agent_id,
        p.boot_id,
        p.seq,
        p.sent_at_us,
        p.devices.strings(),
        p.metrics.strings(),
        p.ts_us.tolist(),
        p.values.tolist(),
        p.qualities.tolist(),
    )


def agrees(data: bytes) -> PackedEnvelope | None:
    """decode_packed(data) never raises; when it reads the envelope, decode() reads the
    same one."""
    packed = decode_packed(data)
    if packed is not None:
        assert same(packed, decode(data))
        assert same(packed, packed.envelope())
    return packed


def province_like(n: int, seed: int = 1) -> Envelope:
    """What an agent sends: ASCII ids of one format, a few metrics, float values."""
    rng = random.Random(seed)
    env = Envelope("agent-370200-charging", "boot-1", 7, NOW)
    metrics = ["power_kw", "energy_kwh", "connector_status", "oil_temp_c"]
    for i in range(n):
        env.devices.append(f"CHG-370200-{rng.randrange(10**5):05d}-{i % 7:04d}")
        env.metrics.append(metrics[i % len(metrics)])
        env.ts_us.append(NOW - rng.randrange(10**9))
        env.values.append(rng.uniform(-50, 500))
        env.qualities.append(rng.randrange(3))
    return env


def test_the_usual_envelope_is_read_into_arrays() -> None:
    for n in (0, 1, 15, 16, 500, 2000):
        env = province_like(n)
        packed = agrees(env.encode())
        assert packed is not None, n
        assert len(packed) == n
        assert packed.ts_us.dtype == np.int64
        assert packed.values.dtype == np.float64


def test_device_ids_of_varying_length_are_read_too() -> None:
    env = province_like(300)
    env.devices = [f"d{'x' * (i % 31)}" for i in range(300)]  # 1 to 31 bytes
    assert agrees(env.encode()) is not None


def test_what_it_does_not_read_is_left_to_decode() -> None:
    """Integer values, long or non-ASCII ids, gap records, unknown keys, other key orders
    still decode; decode_packed returns None or the same envelope, never another one."""
    base = province_like(40)
    cases: list[bytes] = []
    e = province_like(40)
    e.values[3] = 7  # msgpack packs it as an integer
    cases.append(e.encode())
    e = province_like(40)
    e.devices[5] = "d" * 32  # beyond msgpack's fixstr
    cases.append(e.encode())
    e = province_like(40)
    e.devices[5] = "gerät-1"  # not ASCII
    cases.append(e.encode())
    e = province_like(40)
    e.gaps = [Gap("boot-0", 1, None, NOW - 10, NOW, 5, "buffer_full")]
    cases.append(e.encode())
    obj = msgpack.unpackb(base.encode())
    cases.append(msgpack.packb({**obj, "z": [1, 2]}))  # a key this reader does not know
    cases.append(msgpack.packb(dict(reversed(list(obj.items())))))  # another order
    cases.append(msgpack.packb({**obj, "ts": [t - NOW for t in obj["ts"]]}))  # small ints
    cases.append(msgpack.packb({**obj, "q": [0] * 39 + [300]}))  # a quality beyond fixint
    for data in cases:
        agrees(data)
    # reversed keys: the metrics are not where the encoder puts them, and still found
    assert agrees(cases[5]) is not None


def test_broken_envelopes_are_left_to_decode() -> None:
    data = province_like(50).encode()
    rng = random.Random(5)
    for _ in range(3000):
        b = bytearray(data)
        kind = rng.randrange(3)
        if kind == 0:
            b = b[: rng.randrange(len(b))]
        elif kind == 1:
            for _ in range(rng.randrange(1, 4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        else:
            at = rng.randrange(len(b))
            b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 5)))
        blob = bytes(b)
        try:
            expected: Envelope | None = decode(blob)
        except DecodeError:
            expected = None
        packed = decode_packed(blob)
        if packed is not None:  # never an envelope decode() refuses or reads differently
            assert expected is not None
            assert same(packed, expected)
    assert decode_packed(b"") is None
    assert decode_packed(b"\xc1") is None


# mostly what decode_packed reads (the encoder's shape), now and then something it leaves
_ascii = st.text(alphabet="ABC-0123456789_xyz", max_size=31)
_packable = st.tuples(
    _ascii,
    _ascii,
    st.integers(2**32, 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(0, 127),
)
_text = st.one_of(
    st.text(alphabet="ABC-0123456789", max_size=33),
    st.sampled_from(["", "ä", "dev-1", "x" * 31, "y" * 32]),
)
_ts = st.one_of(st.integers(-(2**63), 2**64 - 1), st.sampled_from([NOW, 0, 2**63, 2**32]))
_value = st.one_of(st.floats(allow_nan=True), st.integers(-(2**63), 2**64 - 1))
_quality = st.one_of(st.integers(0, 2), st.integers(-5, 300))
_reading = st.one_of(_packable, _packable, st.tuples(_text, _text, _ts, _value, _quality))


@settings(max_examples=300, deadline=None)
@given(st.lists(_reading, max_size=40), st.sampled_from([False, False, False, True]))
def test_random_envelopes_agree_with_decode(
    readings: list[tuple[str, str, int, float, int]], gaps: bool
) -> None:
    env = Envelope("agent", "boot", 3, NOW)
    for d, m, t, x, q in readings:
        env.devices.append(d)
        env.metrics.append(m)
        env.ts_us.append(t)
        env.values.append(x)
        env.qualities.append(q)
    if gaps:
        env.gaps = [Gap("b", 1, None, NOW, NOW, 1, "r")]
    packed = agrees(env.encode())
    # what it must read: the encoder's shape
    shaped = all(
        d.isascii()
        and m.isascii()
        and len(d) < 32
        and len(m) < 32
        and 2**32 <= t < 2**63
        and type(x) is float
        and 0 <= q < 128
        for d, m, t, x, q in readings
    )
    if shaped and not gaps:
        assert packed is not None


def test_str_table_finds_what_a_dictionary_finds() -> None:
    rng = random.Random(3)
    alphabet = "abcXYZ-_0123456789"
    strings = sorted({"".join(rng.choices(alphabet, k=rng.randrange(0, 31))) for _ in range(5000)})
    numbers = [rng.randrange(10**6) for _ in strings]
    table = StrTable([*strings, "ä-not-ascii", "z" * 40], [*numbers, 1, 2])
    known = dict(zip(strings, numbers, strict=True))
    # lookups with runs of the same string, strings absent, and near misses
    queries: list[str] = []
    for _ in range(20_000):
        s = rng.choice(strings) if rng.random() < 0.8 else rng.choice(strings) + "q"
        queries += [s] * rng.randrange(1, 4)
    got = table.find(StrColumn.of(queries)).tolist()
    assert got == [known.get(q, -1) for q in queries]
    assert table.find(StrColumn.of([])).tolist() == []
    assert StrTable([]).find(StrColumn.of(["a"])).tolist() == [-1]


def test_str_table_when_every_string_collides(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every string hashed alike (one home slot for all): linear probing still finds each,
    and an absent string ends at an empty slot."""
    monkeypatch.setattr(StrColumn, "hashes", lambda self: np.zeros(len(self), np.uint64))
    strings = [f"s{i}" for i in range(300)]
    table = StrTable(strings)
    queries = [*strings, "nope", "s300", "s1"]
    assert table.find(StrColumn.of(queries)).tolist() == [*range(300), -1, -1, 1]


def test_metric_columns_of_a_batch_are_read_at_once() -> None:
    """StrColumn.read of several envelopes' checked metric columns gives their names in
    order, as decode() gives them (names of 0 to 31 bytes, an empty envelope among them),
    and the metric table finds each with or without the run detection."""
    rng = random.Random(11)
    names = ["", "a", "temp_c", "voltage_kv", "sf6_pressure_mpa", "x" * 24, "y" * 31]
    packs: list[PackedEnvelope] = []
    expected: list[str] = []
    for k in (300, 0, 17, 1, 2000):
        env = province_like(k, seed=k)
        env.metrics = [rng.choice(names) for _ in range(k)]
        data = env.encode()
        packed = agrees(data)
        assert packed is not None
        assert packed.metrics.data is data  # checked in place, not read
        packs.append(packed)
        expected += decode(data).metrics
    col = StrColumn.read([p.metrics for p in packs])
    assert col.strings() == expected
    table = StrTable(names[1:])  # "" left out: not found
    want = [names[1:].index(m) if m else -1 for m in expected]
    assert table.find(col, runs=False).tolist() == want
    assert table.find(col).tolist() == want
    assert StrColumn.read([]).strings() == []


def test_a_metric_column_whose_lengths_do_not_chain_is_not_read() -> None:
    """A header whose length points before or past the next header (the count of header
    bytes still right): decode_packed leaves the envelope to decode(), which reads other
    names or refuses it."""
    env = province_like(60)
    data = bytearray(env.encode())
    at = data.index(b"\xa8power_kw")  # a metric's header: 8 bytes follow
    for wrong in (0xA7, 0xA9, 0xA0, 0xBF):
        b = bytearray(data)
        b[at] = wrong
        assert agrees(bytes(b)) is None


def test_a_small_table_is_looked_up_in_one_probe_and_still_exactly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A table of a few names (the metrics) looks each string up in its home slot alone;
    a near miss (same length, one byte off, in any word) is not found. When the names do
    collide, the table probes as a large one does."""
    names = ["temp_c", "voltage_kv", "sf6_pressure_mpa", "x" * 31, ""]
    queries = [*names, "temp_d", "voltage_kw", "sf6_pressure_mpb", "x" * 30 + "y", "nope"]
    want = [0, 1, 2, 3, 4, -1, -1, -1, -1, -1]
    table = StrTable(names)
    assert table._direct
    assert table.find(StrColumn.of(queries), runs=False).tolist() == want
    monkeypatch.setattr(StrColumn, "hashes", lambda self: np.zeros(len(self), np.uint64))
    colliding = StrTable(names)
    assert not colliding._direct
    assert colliding.find(StrColumn.of(queries), runs=False).tolist() == want


def test_string_columns_at_the_end_of_the_data_are_read_inside_it() -> None:
    """Words are loaded from the record's bytes themselves (no padded copy): a device or
    metric column last in the envelope, its strings ending at the data's last byte, short
    ones after a long one, is read without a load past the end, or left to decode()."""
    env = province_like(40)
    env.metrics = ["m" * 31 if i % 3 else "" for i in range(40)]
    env.metrics[-1] = ""
    env.devices[-1] = "d"
    obj = msgpack.unpackb(env.encode())
    for last in ("d", "m"):
        data = msgpack.packb({**{k: v for k, v in obj.items() if k != last}, last: obj[last]})
        assert data.endswith(b"\xa0" if last == "m" else b"\xa1d")
        agrees(data)
        for cut in range(1, 12):  # and the same envelope cut short
            agrees(data[:-cut])
    # ids of one length, last: their last word would end past the data, so decode() reads
    # them (an order the encoder never writes)
    obj = msgpack.unpackb(province_like(40).encode())
    data = msgpack.packb({**{k: v for k, v in obj.items() if k != "d"}, "d": obj["d"]})
    assert agrees(data) is None
    assert len(decode(data)) == 40
