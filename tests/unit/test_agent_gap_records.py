"""Gap records on the wire (optional key "g" of a v1 envelope) and their summaries."""

from __future__ import annotations

import msgpack
import pytest
from edge_agent.chunks import MAX_GAP_DEVICES, Chunk, gaps_of, summarise

from qilu.contract import Envelope, Gap, Reading, Sector, decode
from qilu.errors import DecodeError


def test_gaps_round_trip_and_old_envelopes_have_none() -> None:
    gaps = [
        Gap("boot-1", 0, "CHG-1", 10, 20, 3, "buffer_full"),
        Gap("boot-0", 1, None, 5, 9, 7, "corrupt_buffer"),
    ]
    env = decode(Envelope("agent", "boot-1", 4, 99, gaps=gaps).encode())
    assert env.gaps == gaps
    assert len(env) == 0
    plain = decode(Envelope("agent", "boot-1", 5, 99).encode())
    assert plain.gaps == []
    assert b"\xa1g" not in Envelope("agent", "boot-1", 5, 99).encode()  # no key when no gaps


def test_a_v1_reader_that_ignores_g_sees_an_empty_envelope() -> None:
    raw = Envelope("a", "b", 0, 1, gaps=[Gap("b", 0, None, 1, 2, 3, "max_age")]).encode()
    obj = msgpack.unpackb(raw)
    assert obj["v"] == 1
    assert [obj[k] for k in ("d", "m", "ts", "x", "q")] == [[], [], [], [], []]


@pytest.mark.parametrize(
    "g",
    [
        [],
        {"b": ["x"], "n": [0], "d": [None], "s": [1], "e": [2], "c": [3]},  # no reasons
        {"b": ["x"], "n": [0], "d": [None], "s": [1], "e": [2], "c": [-1], "r": ["r"]},
        {"b": ["x"], "n": [0], "d": [5], "s": [1], "e": [2], "c": [1], "r": ["r"]},
        {"b": ["x", "y"], "n": [0], "d": [None], "s": [1], "e": [2], "c": [1], "r": ["r"]},
    ],
)
def test_malformed_gaps_are_rejected(g: object) -> None:
    obj = msgpack.unpackb(Envelope("a", "b", 0, 1).encode())
    obj["g"] = g
    with pytest.raises(DecodeError) as err:
        decode(msgpack.packb(obj))
    assert err.value.reason == "malformed"


def test_summaries_per_device_or_one_row_for_many() -> None:
    few = [Reading(f"d{i % 3}", "power_kw", 100 + i, 1.0) for i in range(9)]
    total, spans = summarise([Chunk(Sector.CHARGING, 0, tuple(few)).encode()])
    assert total == 9
    gaps = gaps_of("boot", 7, spans, "buffer_full")
    assert [(g.gap_no, g.device_id, g.start_us, g.end_us, g.dropped) for g in gaps] == [
        (7, "d0", 100, 106, 3),
        (8, "d1", 101, 107, 3),
        (9, "d2", 102, 108, 3),
    ]
    many = [Reading(f"d{i}", "power_kw", 100 + i, 1.0) for i in range(MAX_GAP_DEVICES + 1)]
    _, spans = summarise([Chunk(Sector.CHARGING, 0, tuple(many)).encode()])
    (one,) = gaps_of("boot", 0, spans, "buffer_full")
    assert (one.device_id, one.dropped, one.start_us, one.end_us) == (
        None,
        MAX_GAP_DEVICES + 1,
        100,
        100 + MAX_GAP_DEVICES,
    )
