from datetime import UTC, datetime, timedelta, timezone

import msgpack
import pytest

from qilu.contract import (
    MAX_ENVELOPE_BYTES,
    WIRE_VERSION,
    Envelope,
    Quality,
    Reading,
    ReadingColumns,
    decode,
    from_us,
    to_us,
)
from qilu.errors import DecodeError


def envelope(n: int = 3) -> Envelope:
    env = Envelope("agent-1", "boot-1", 7, 1_700_000_000_000_000)
    for i in range(n):
        env.add(Reading(f"dev-{i}", "power_kw", 1_700_000_000_000_000 + i, 1.5 * i, Quality.GOOD))
    return env


def test_round_trip_keeps_every_field() -> None:
    env = envelope()
    back = decode(env.encode())
    assert back == env
    assert list(back.readings()) == list(env.readings())


def test_timestamps_are_exact_microseconds_utc() -> None:
    ts = datetime(2026, 11, 23, 8, 30, 1, 123456, tzinfo=timezone(timedelta(hours=8)))
    us = to_us(ts)
    assert from_us(us) == ts
    assert from_us(us).tzinfo is UTC


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        to_us(datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test


@pytest.mark.parametrize(
    ("blob", "reason"),
    [
        (b"\xc1", "malformed"),
        (envelope().encode()[:-5], "malformed"),
        (msgpack.packb([1, 2, 3]), "malformed"),
        (msgpack.packb({"v": WIRE_VERSION + 1, "a": "x"}), "unsupported_version"),
        (msgpack.packb({"a": "x"}), "unsupported_version"),
        (
            msgpack.packb(
                {
                    "v": 1,
                    "a": "a",
                    "b": "b",
                    "s": 1,
                    "t": 1,
                    "d": ["x"],
                    "m": [],
                    "ts": [],
                    "x": [],
                    "q": [],
                }
            ),
            "malformed",
        ),
        (msgpack.packb({"v": 1, "a": "", "b": "b", "s": 1, "t": 1}), "malformed"),
        (msgpack.packb({"v": 1, "a": "a", "b": "b", "s": -1, "t": 1}), "malformed"),
        (b"\x00" * (MAX_ENVELOPE_BYTES + 1), "oversized"),
        (b"\xff\xfe not msgpack", "malformed"),
    ],
)
def test_decode_rejects_with_a_reason(blob: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode(blob)
    assert info.value.reason == reason


def test_unknown_keys_are_ignored_for_forward_compatibility() -> None:
    raw = msgpack.unpackb(envelope().encode())
    raw["future_field"] = {"anything": 1}
    assert decode(msgpack.packb(raw)) == envelope()


# --------------------------------------------------------------------------- ReadingColumns


def some_readings() -> list[Reading]:
    return [
        Reading("dev-1", "power_kw", 1_700_000_000_000_000, 7.5),
        Reading("dev-2", "fault", 1_700_000_000_000_001, 1.0, Quality.BAD),
        Reading("dev-1", "soc_pct", 1_700_000_000_000_002, 55.0, Quality.UNCERTAIN),
    ]


def test_reading_columns_are_a_sequence_of_the_same_readings() -> None:
    rs = some_readings()
    cols = ReadingColumns.of(rs)
    assert len(cols) == 3
    assert list(cols) == rs
    assert [cols[i] for i in range(3)] == rs
    assert cols[-1] == rs[-1]
    assert isinstance(cols[1].quality, Quality)
    assert cols[1].quality is Quality.BAD
    assert list(cols[1:]) == rs[1:]
    assert isinstance(cols[1:], ReadingColumns)
    assert cols.qualities == [0, 2, 1]
    assert cols.where([True, False, True]) == ReadingColumns.of([rs[0], rs[2]])
    with pytest.raises(IndexError):
        cols[3]


def test_reading_columns_equality_extend_and_lengths() -> None:
    rs = some_readings()
    a, b = ReadingColumns.of(rs[:1]), ReadingColumns.of(rs[1:])
    a.extend(b)
    assert a == ReadingColumns.of(rs)
    assert a != ReadingColumns.of(rs[:2])
    assert a != rs  # column-wise readings never equal a list of Readings
    assert not ReadingColumns()
    with pytest.raises(TypeError):
        hash(a)
    with pytest.raises(ValueError, match="different lengths"):
        ReadingColumns(["d"], ["m"], [1], [1.0], [])


def test_reading_columns_travel_like_the_envelope_columns() -> None:
    rs = some_readings()
    cols = ReadingColumns.of(rs)
    env = Envelope("agent-1", "boot-1", 7, 1_700_000_000_000_000)
    env.extend(cols)
    assert list(decode(env.encode()).readings()) == rs
