"""A substation RTU's register map as data, and its decoding. Pure: no sockets, no clock.

A :class:`Point` says where one metric of one device lives: which table (holding or input
registers), which address (0-based, as on the wire), how to read the words (``uint16``,
``int16``, ``uint32``, ``int32``, ``float32``, or one ``bit`` of a status word for alarms), and
how to scale the raw number (``value = raw * scale + offset``) into the metric's unit.

:func:`plan` groups the points into as few requests as possible (contiguous ranges of at most
125 registers, gaps up to ``max_gap`` registers read through); :func:`decode` turns the words
of one request back into values.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from qilu.schema import bounds

Table = Literal["holding", "input"]
WordType = Literal["uint16", "int16", "uint32", "int32", "float32", "bit"]
WORDS: dict[str, int] = {"uint16": 1, "int16": 1, "bit": 1, "uint32": 2, "int32": 2, "float32": 2}
MAX_REGISTERS = 125  # per read request (Modbus application protocol, function codes 3 and 4)


@dataclass(frozen=True, slots=True)
class Point:
    """``[[collectors.<name>.points]]``: one metric of one device in the RTU's registers."""

    device_id: str
    metric: str
    address: int = field(metadata=bounds(0, 65535))
    type: WordType = "uint16"
    table: Table = "holding"
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""  # the unit after scaling: must be the metric's unit
    bit: int = field(default=0, metadata=bounds(0, 15))  # for type = "bit": 0 = least significant
    word_order: Literal["big", "little"] = "big"  # 32-bit values: high word first ("big")

    @property
    def words(self) -> int:
        return WORDS[self.type]


@dataclass(frozen=True, slots=True)
class Block:
    """One read request: ``count`` registers from ``address`` in ``table``, and its points."""

    table: Table
    address: int
    count: int
    points: tuple[Point, ...]


def plan(points: Sequence[Point], *, max_gap: int = 8) -> list[Block]:
    """Fewest requests covering every point (sorted by table and address)."""
    blocks: list[Block] = []
    for table in ("holding", "input"):
        mine = sorted((p for p in points if p.table == table), key=lambda p: p.address)
        start, end = -1, -1  # end: one past the last register
        group: list[Point] = []
        for p in mine:
            p_end = p.address + p.words
            if group and p.address <= end + max_gap and p_end - start <= MAX_REGISTERS:
                end = max(end, p_end)
                group.append(p)
                continue
            if group:
                blocks.append(Block(table, start, end - start, tuple(group)))
            start, end, group = p.address, p_end, [p]
        if group:
            blocks.append(Block(table, start, end - start, tuple(group)))
    return blocks


def raw_value(words: Sequence[int], p: Point) -> float:
    """The raw number of one point from its words (each 0..65535)."""
    if p.type == "bit":
        return float((words[0] >> p.bit) & 1)
    if p.type == "uint16":
        return float(words[0])
    if p.type == "int16":
        return float(struct.unpack(">h", struct.pack(">H", words[0]))[0])
    hi, lo = (words[0], words[1]) if p.word_order == "big" else (words[1], words[0])
    data = struct.pack(">HH", hi, lo)
    fmt = {"uint32": ">I", "int32": ">i", "float32": ">f"}[p.type]
    return float(struct.unpack(fmt, data)[0])


def _scaled(raw: float, p: Point) -> float:
    """``raw * scale + offset`` to 15 significant digits, what a double holds exactly: 438
    tenths read 43.8, not 43.800000000000004 (the binary fraction's noise in the last bit)."""
    value = raw * p.scale + p.offset
    return float(f"{value:.15g}") if math.isfinite(value) else value


def decode(block: Block, registers: Sequence[int]) -> list[tuple[Point, float]]:
    """Words of one request -> (point, scaled value); non-finite values are left out."""
    if len(registers) < block.count:
        raise ValueError(f"expected {block.count} registers, got {len(registers)}")
    out = []
    for p in block.points:
        i = p.address - block.address
        raw = raw_value(registers[i : i + p.words], p)
        value = raw if p.type == "bit" else _scaled(raw, p)
        if math.isfinite(value):
            out.append((p, value))
    return out


def encode(p: Point, value: float) -> list[int]:
    """The words an RTU holds for ``value`` (inverse of decode; for simulators and tests)."""
    if p.type == "bit":
        return [(1 << p.bit) if value else 0]
    raw = (value - p.offset) / p.scale
    if p.type == "uint16":
        return [round(raw) & 0xFFFF]
    if p.type == "int16":
        return [struct.unpack(">H", struct.pack(">h", round(raw)))[0]]
    fmt = {"uint32": ">I", "int32": ">i", "float32": ">f"}[p.type]
    hi, lo = struct.unpack(">HH", struct.pack(fmt, raw if p.type == "float32" else round(raw)))
    return [hi, lo] if p.word_order == "big" else [lo, hi]
