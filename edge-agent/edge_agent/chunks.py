"""Pure helpers of the buffer: how readings are grouped, encoded on disk and summarised as gaps.

No I/O. A *chunk* is the unit the buffer stores: readings of one sector and one eviction
priority, at most ``max_readings`` of them, column-wise msgpack ``[d, m, ts, x, q]`` (the same
columns as the wire envelope, so forming an envelope is concatenation).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import msgpack

from qilu.contract import Envelope, Gap, Reading, Sector
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

_pack = msgpack.Packer(use_bin_type=True, use_single_float=False).pack


@dataclass(frozen=True, slots=True)
class Chunk:
    sector: Sector
    prio: int
    readings: tuple[Reading, ...]

    def encode(self) -> bytes:
        rs = self.readings
        return _pack(
            [
                [r.device_id for r in rs],
                [r.metric for r in rs],
                [r.ts_us for r in rs],
                [r.value for r in rs],
                [int(r.quality) for r in rs],
            ]
        )


def split(
    readings: Iterable[Reading], max_readings: int, default: Sector = Sector.CHARGING
) -> list[Chunk]:
    """Group readings by (sector, priority), in arrival order, at most ``max_readings`` each."""
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
    """Concatenate stored chunks into one envelope."""
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
