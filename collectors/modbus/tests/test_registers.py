"""Register maps as data: request planning and word decoding (pure)."""

# ruff: noqa: S101 - pytest asserts

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from collectors.modbus.collector import ModbusCollector
from collectors.modbus.registers import MAX_REGISTERS, Block, Point, decode, encode, plan
from qilu.errors import ConfigError

SAMPLE = Path(__file__).parent.parent / "sample.toml"


def pt(address: int, type_: str = "uint16", table: str = "holding", **kw: object) -> Point:
    return Point("d", "m", address, type_, table, **kw)  # type: ignore[arg-type]


def test_plan_merges_near_registers_and_splits_tables_and_far_ones() -> None:
    points = [pt(0), pt(1, "int16"), pt(4, "float32"), pt(40), pt(100, "uint32", "input")]
    blocks = plan(points, max_gap=8)
    assert [(b.table, b.address, b.count, len(b.points)) for b in blocks] == [
        ("holding", 0, 6, 3),
        ("holding", 40, 1, 1),
        ("input", 100, 2, 1),
    ]


def test_plan_respects_the_request_size_limit() -> None:
    points = [pt(a) for a in range(0, 300)]
    blocks = plan(points)
    assert all(b.count <= MAX_REGISTERS for b in blocks)
    assert sum(len(b.points) for b in blocks) == 300


@pytest.mark.parametrize(
    ("point", "value"),
    [
        (pt(0, "int16", scale=0.1), -12.5),
        (pt(0, "uint16", scale=0.1), 6553.5),
        (pt(0, "uint32"), 4_000_000_000.0),
        (pt(0, "int32", scale=0.01), -21474836.48),
        (pt(0, "float32"), 231.5),
        (pt(0, "float32", word_order="little"), -0.125),
        (pt(0, "uint16", scale=0.001, offset=-1.0), 0.5),
    ],
)
def test_decode_inverts_encode(point: Point, value: float) -> None:
    words = encode(point, value)
    block = Block(point.table, 0, point.words, (point,))
    ((_, got),) = decode(block, words)
    assert got == pytest.approx(value, abs=abs(point.scale) / 2 + 1e-9)


def test_alarm_bits_of_one_status_word() -> None:
    sf6 = Point("g", "sf6_alarm", 10, "bit", bit=0)
    pd = Point("g", "pd_alarm", 10, "bit", bit=1)
    (block,) = plan([sf6, pd])
    got = {p.metric: v for p, v in decode(block, [0b10])}
    assert got == {"sf6_alarm": 0.0, "pd_alarm": 1.0}


def test_known_words_decode_as_documented() -> None:
    # 0x4367_8000 is 231.5 as IEEE 754 single precision, high word first
    ((_, v),) = decode(Block("input", 0, 2, (pt(0, "float32", "input"),)), [0x4367, 0x8000])
    assert v == 231.5
    ((_, v),) = decode(Block("holding", 0, 1, (pt(0, "int16", scale=0.1),)), [0xFF83])
    assert v == pytest.approx(-12.5)


def test_scaled_values_carry_no_binary_noise() -> None:
    """438 tenths are 43.8 as the RTU's manual says, not 438 * 0.1 = 43.800000000000004: the
    value is stored and served as decoded (the edge-agent README's walk-through shows it)."""
    for word, scale, offset, want in [(438, 0.1, 0.0, 43.8), (552, 0.001, 0.0, 0.552),
                                      (3, 0.1, 0.0, 0.3), (70, 0.01, -0.1, 0.6)]:  # fmt: skip
        ((_, v),) = decode(
            Block("holding", 0, 1, (pt(0, "uint16", scale=scale, offset=offset),)), [word]
        )
        assert v == want, (word, scale, v)


def test_sample_register_map_is_valid() -> None:
    table = tomllib.loads(SAMPLE.read_text())
    for name, raw in table["collectors"].items():
        c = ModbusCollector.from_config(name, raw)
        c.validate()
        assert len(c.blocks) == 3  # holding 0-2, input 100-103, holding 200-203


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"metric": "oil_temp"}, "collectors.rtu.points[0].metric"),
        ({"unit": "K"}, "collectors.rtu.points[0].unit"),
        ({"type": "int64"}, "collectors.rtu.points[0].type"),
        ({"address": 70000}, "collectors.rtu.points[0].address"),
        ({"bit": 16, "type": "bit"}, "collectors.rtu.points[0].bit"),
        ({"scale": 0.0}, "collectors.rtu.points[0].scale"),
        ({"adress": 1}, "collectors.rtu.points[0].adress"),
    ],
)
def test_bad_register_map_names_the_key(change: dict[str, object], key: str) -> None:
    point = {"device_id": "SUB-1", "metric": "oil_temp_c", "address": 0, "unit": "degC"}
    raw = {"type": "modbus", "host": "127.0.0.1", "points": [{**point, **change}]}
    with pytest.raises(ConfigError) as err:
        ModbusCollector.from_config("rtu", raw).validate()
    assert err.value.key == key
