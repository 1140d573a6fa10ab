"""Pure helpers of the buffer: how readings are grouped, encoded on disk and summarised as gaps.

No I/O. A *chunk* is the unit the buffer stores: readings of one sector and one eviction
priority, at most ``max_readings`` of them, column-wise msgpack ``[d, m, ts, x, q]`` (the same
columns as the wire envelope, so forming an envelope is concatenation). A hand-over that comes
column-wise (:class:`qilu.contract.ReadingColumns`, the simulated feed's) is grouped and stored
column by column, without a Reading object per row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import msgpack

from qilu.contract import WIRE_VERSION, Envelope, Gap, Reading, ReadingColumns, Sector
from qilu.devices import DEVICE_KINDS, MetricKind

SECTORS: tuple[Sector, ...] = tuple(Sector)
SECTOR_INDEX = {s: i for i, s in enumerate(SECTORS)}
# metric keys are unique across sectors (checked in tests), so a reading's metric names its topic
SECTOR_OF_METRIC: dict[str, Sector] = {m.key: k.sector for k in DEVICE_KINDS for m in k.metrics}
ALARM_METRICS = frozenset(
    m.key for k in DEVICE_KINDS for m in k.metrics if m.kind is MetricKind.ALARM
)
NORMAL, ALARM = 0, 1  # eviction priority: alarms and faults go last
MAX_GAP_DEVICES = 32  # more devices in one eviction: one gap row without a device id

_packer = msgpack.Packer(use_bin_type=True, use_single_float=False)
_pack, _pack_map_header = _packer.pack, _packer.pack_map_header


@dataclass(frozen=True, slots=True)
class Chunk:
    sector: Sector
    prio: int
    readings: Sequence[Reading]  # a tuple of Readings, or ReadingColumns

    def encode(self) -> bytes:
        rs = self.readings
        if isinstance(rs, ReadingColumns):
            return _pack([rs.devices, rs.metrics, rs.ts_us, rs.values, rs.qualities])
        return _pack(
            [
                [r.device_id for r in rs],
                [r.metric for r in rs],
                [r.ts_us for r in rs],
                [r.value for r in rs],
                [int(r.quality) for r in rs],
            ]
        )


def joined(handovers: Sequence[Sequence[Reading]]) -> Sequence[Reading]:
    """Several hand-overs as one sequence, in order: ReadingColumns stay columns when every
    hand-over is column-wise (one collector's feed), otherwise a list of Readings."""
    if len(handovers) == 1:
        return handovers[0]
    if all(isinstance(h, ReadingColumns) for h in handovers):
        out = ReadingColumns()
        for h in handovers:
            out.extend(h)  # type: ignore[arg-type]  # checked above
        return out
    return [r for h in handovers for r in h]


def _key(metric: str, default: Sector) -> tuple[Sector, int]:
    return SECTOR_OF_METRIC.get(metric, default), ALARM if metric in ALARM_METRICS else NORMAL


def split(
    readings: Iterable[Reading], max_readings: int, default: Sector = Sector.CHARGING
) -> list[Chunk]:
    """Group readings by (sector, priority), in arrival order, at most ``max_readings`` each."""
    if isinstance(readings, ReadingColumns):
        return _split_columns(readings, max_readings, default)
    groups: dict[tuple[Sector, int], list[Reading]] = {}
    sector_of, alarms = SECTOR_OF_METRIC, ALARM_METRICS
    for r in readings:
        key = (sector_of.get(r.metric, default), ALARM if r.metric in alarms else NORMAL)
        groups.setdefault(key, []).append(r)
    return [
        Chunk(sector, prio, tuple(rs[lo : lo + max_readings]))
        for (sector, prio), rs in groups.items()
        for lo in range(0, len(rs), max_readings)
    ]


def _split_columns(rs: ReadingColumns, max_readings: int, default: Sector) -> list[Chunk]:
    """:func:`split` column-wise: a key per distinct metric (in order of first appearance),
    then one filtering pass per group over the metric column, at C speed (usually one or two
    groups: an agent's sector, its alarms apart)."""
    keys = {metric: _key(metric, default) for metric in dict.fromkeys(rs.metrics)}
    groups: dict[tuple[Sector, int], ReadingColumns] = {}
    if len(set(keys.values())) == 1:
        if rs:
            groups[next(iter(keys.values()))] = rs
    else:
        for key in dict.fromkeys(keys.values()):
            of_key = frozenset(m for m, k in keys.items() if k == key)
            groups[key] = rs.where(list(map(of_key.__contains__, rs.metrics)))
    return [
        Chunk(sector, prio, group[lo : lo + max_readings])
        for (sector, prio), group in groups.items()
        for lo in range(0, len(group), max_readings)
    ]


Columns = tuple[list[str], list[str], list[int], list[float], list[int]]


def decode_columns(data: bytes) -> Columns:
    d, m, t, x, q = msgpack.unpackb(data, raw=False, use_list=True)
    return d, m, t, x, q


def chunk_is_intact(data: object, n: object) -> bool:
    """A stored chunk read back from a damaged file: does it decode to ``n`` sane readings?"""
    if not isinstance(data, bytes) or type(n) is not int:
        return False
    try:
        cols = msgpack.unpackb(data, raw=False, use_list=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        return False
    if not (isinstance(cols, list) and len(cols) == 5):
        return False
    if not all(isinstance(c, list) and len(c) == n for c in cols):
        return False
    d, m, t, x, q = cols
    return (
        all(isinstance(v, str) for v in d)
        and all(isinstance(v, str) for v in m)
        and all(type(v) is int for v in t)
        and all(isinstance(v, float) for v in x)
        and all(type(v) is int for v in q)
    )


def envelope_of(
    agent_id: str, boot_id: str, seq: int, now_us: int, blobs: Sequence[bytes]
) -> Envelope:
    """Concatenate stored chunks into one envelope (decoded: :func:`encoded_envelope_of`
    gives its bytes without decoding a reading)."""
    env = Envelope(agent_id, boot_id, seq, now_us)
    for blob in blobs:
        d, m, t, x, q = decode_columns(blob)
        env.devices += d
        env.metrics += m
        env.ts_us += t
        env.values += x
        env.qualities += q
    return env


@dataclass(slots=True)
class Span:
    """One device's lost readings: first and last timestamp, how many."""

    start: int
    end: int
    count: int


def summarise(blobs: Iterable[bytes]) -> tuple[int, dict[str, Span]]:
    """Dropped chunks -> (readings, per-device time span and count)."""
    return spans_of((d, t) for d, _, t, _, _ in map(decode_columns, blobs))


def spans_of(
    columns: Iterable[tuple[Sequence[str], Sequence[int]]],
) -> tuple[int, dict[str, Span]]:
    """(devices, times) column pairs (of chunks or envelopes) -> (readings, per-device time
    span and count)."""
    total = 0
    spans: dict[str, Span] = {}
    for devices, times in columns:
        total += len(devices)
        for dev, ts in zip(devices, times, strict=True):
            s = spans.get(dev)
            if s is None:
                spans[dev] = Span(ts, ts, 1)
            else:
                s.count += 1
                s.start = min(s.start, ts)
                s.end = max(s.end, ts)
    return total, spans


def gaps_of(boot_id: str, first_no: int, spans: dict[str, Span], reason: str) -> list[Gap]:
    """Per-device gaps, or one gap without a device when too many devices lost readings."""
    if not spans:
        return []
    if len(spans) > MAX_GAP_DEVICES:
        start = min(s.start for s in spans.values())
        end = max(s.end for s in spans.values())
        count = sum(s.count for s in spans.values())
        return [Gap(boot_id, first_no, None, start, end, count, reason)]
    return [
        Gap(boot_id, first_no + i, dev, s.start, s.end, s.count, reason)
        for i, (dev, s) in enumerate(sorted(spans.items()))
    ]


_ENVELOPE_HEAD = ("v", "a", "b", "s", "t")  # Envelope.encode's keys before the columns
_ENVELOPE_COLUMNS = ("d", "m", "ts", "x", "q")
_pack_array_header = msgpack.Packer().pack_array_header


def _column_items(blob: bytes) -> tuple[int, list[bytes]]:
    """A stored chunk's readings and, per column, its packed items without the array header
    (the unpacker only skips over them, in C; ``raw``: without checking the strings' UTF-8,
    which was checked when they were packed)."""
    u = msgpack.Unpacker(raw=True)
    u.feed(blob)
    if u.read_array_header() != 5:
        raise ValueError("a stored chunk is not five columns")
    counts, items = [], []
    for _ in range(5):
        start = u.tell()
        first = blob[start]
        if 0x90 <= first <= 0x9F:
            n, head = first & 0x0F, 1
        elif first == 0xDC:
            n, head = int.from_bytes(blob[start + 1 : start + 3], "big"), 3
        elif first == 0xDD:
            n, head = int.from_bytes(blob[start + 1 : start + 5], "big"), 5
        else:
            raise ValueError("a stored chunk's column is not an array")
        u.skip()
        counts.append(n)
        items.append(blob[start + head : u.tell()])
    if len(set(counts)) != 1 or u.tell() != len(blob):
        raise ValueError("a stored chunk's columns have different lengths")
    return counts[0], items


def encoded_envelope_of(
    agent_id: str, boot_id: str, seq: int, now_us: int, blobs: Sequence[bytes]
) -> tuple[bytes, int]:
    """The bytes of ``envelope_of(...).encode()`` and its readings, by concatenation: each
    column's packed items of every chunk under one new array header (a stored chunk packs its
    columns like the envelope: same packer options). Byte for byte the same (tested); forming
    an envelope decodes no reading and builds no Python object per reading."""
    parts = [_column_items(blob) for blob in blobs]
    total = sum(n for n, _ in parts)
    out = [_pack_map_header(len(_ENVELOPE_HEAD) + len(_ENVELOPE_COLUMNS))]
    for key, value in zip(
        _ENVELOPE_HEAD, (WIRE_VERSION, agent_id, boot_id, seq, now_us), strict=True
    ):
        out += (_pack(key), _pack(value))
    header = _pack_array_header(total)
    for col, key in enumerate(_ENVELOPE_COLUMNS):
        out += (_pack(key), header)
        out += (items[col] for _, items in parts)
    return b"".join(out), total
