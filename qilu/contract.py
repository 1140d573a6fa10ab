"""The one shared contract: a reading, and the versioned wire envelope that carries a batch.

Every stage imports these definitions; none redefines them. The wire format and its
compatibility rules are recorded in docs/adr/0001-wire-format.md.

A reading is (device id, metric, UTC timestamp, value, quality); :class:`ReadingColumns` holds
many column-wise, as a collector may hand them over. An envelope is a batch of
readings from one edge agent, identified by (agent id, boot id, sequence number): the sequence
increases by one per envelope within a boot, so the backend can see gaps and duplicates.

On the wire an envelope is one msgpack map whose readings are stored column-wise::

    {"v": 1, "a": agent_id, "b": boot_id, "s": seq, "t": sent_at_us,
     "d": [device_id, ...], "m": [metric, ...], "ts": [ts_us, ...],
     "x": [value, ...], "q": [quality, ...]}

All five columns have the same length. Timestamps are integer microseconds since the Unix
epoch, UTC. Readers ignore keys they do not know (forward compatible within a major version);
a different ``v`` is rejected with the reason ``unsupported_version``.

Optional key ``"g"`` (added within v1): gap records, readings the agent had to drop (buffer
full, too old, corrupted buffer), column-wise like the readings::

    "g": {"b": [boot_id, ...], "n": [gap_no, ...], "d": [device_id or nil, ...],
          "s": [start_ts_us, ...], "e": [end_ts_us, ...], "c": [dropped, ...],
          "r": [reason, ...]}

An agent sends gaps in envelopes of their own (no readings), so a v1 reader that ignores
``"g"`` sees an empty envelope and loses nothing else.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import compress
from typing import overload

import msgpack

from qilu.errors import DecodeError

WIRE_VERSION = 1
MAX_ENVELOPE_BYTES = 1_000_000  # Kafka's default message.max.bytes is ~1 MB
_US = 1_000_000


class Sector(enum.StrEnum):
    CHARGING = "charging"
    SUBSTATION = "substation"
    RANCH = "ranch"


def readings_topics_prefix(prefix: str) -> str:
    """What every readings topic's name starts with: ``<prefix>.readings.``."""
    return f"{prefix}.readings."


def readings_topic_name(prefix: str, sector: Sector) -> str:
    """The Kafka topic of one sector's envelopes, ``<prefix>.readings.<sector>``: built here
    only, for the agents that send to it, the ingest that reads it and the provisioning that
    grants it (``prefix`` is ``kafka.topic_prefix``)."""
    return readings_topics_prefix(prefix) + sector.value


def deadletter_topic_name(prefix: str) -> str:
    """The dead-letter topic, ``<prefix>.deadletter`` (docs/adr/0012-dead-letters.md)."""
    return f"{prefix}.deadletter"


class Quality(enum.IntEnum):
    """OPC-UA style quality, coarse: good, uncertain (estimated, stale), bad (sensor fault)."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2


def to_us(ts: datetime) -> int:
    """Timezone-aware datetime -> integer microseconds since the epoch (UTC)."""
    if ts.tzinfo is None:
        raise ValueError("naive datetime: readings carry timezone-aware UTC timestamps only")
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * _US + delta.microseconds


def from_us(ts_us: int) -> datetime:
    return datetime.fromtimestamp(ts_us // _US, UTC).replace(microsecond=ts_us % _US)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Reading:
    """One measurement of one metric of one device at one instant."""

    device_id: str
    metric: str
    ts_us: int
    value: float
    quality: Quality = Quality.GOOD

    @property
    def ts(self) -> datetime:
        return from_us(self.ts_us)

    @classmethod
    def at(
        cls,
        device_id: str,
        metric: str,
        ts: datetime,
        value: float,
        quality: Quality = Quality.GOOD,
    ) -> Reading:
        return cls(device_id, metric, to_us(ts), float(value), quality)


class ReadingColumns(Sequence[Reading]):
    """Readings column-wise, as a collector may hand them over: the wire envelope's five
    columns (device id, metric, ``ts_us``, value, quality as an int; a :class:`Quality`
    member is one), one entry per reading, all five the same length.

    A ``Sequence[Reading]``: indexing and iterating build each :class:`Reading` on access, so
    whatever takes readings takes these. A consumer that stores columns (the edge agent's
    buffer) uses the lists as they are, without an object per reading: a generator of tens of
    thousands of readings per second (the simulated province) pays ~0.7 us per Reading it
    builds, several times the cost of appending to five lists. Mutable like :class:`Envelope`
    (whoever builds one appends, then hands it over and leaves it alone); equal to another
    ``ReadingColumns`` with the same columns, never to a list of Readings.
    """

    __slots__ = ("devices", "metrics", "qualities", "ts_us", "values")

    def __init__(
        self,
        devices: list[str] | None = None,
        metrics: list[str] | None = None,
        ts_us: list[int] | None = None,
        values: list[float] | None = None,
        qualities: list[int] | None = None,
    ) -> None:
        self.devices: list[str] = [] if devices is None else devices
        self.metrics: list[str] = [] if metrics is None else metrics
        self.ts_us: list[int] = [] if ts_us is None else ts_us
        self.values: list[float] = [] if values is None else values
        self.qualities: list[int] = [] if qualities is None else qualities
        n = len(self.devices)
        if not (
            len(self.metrics) == len(self.ts_us) == len(self.values) == len(self.qualities) == n
        ):
            raise ValueError("reading columns have different lengths")

    @classmethod
    def of(cls, readings: Iterable[Reading]) -> ReadingColumns:
        cols = cls()
        for r in readings:
            cols.append(r)
        return cols

    def append(self, r: Reading) -> None:
        self.devices.append(r.device_id)
        self.metrics.append(r.metric)
        self.ts_us.append(r.ts_us)
        self.values.append(r.value)
        self.qualities.append(int(r.quality))

    def extend(self, other: ReadingColumns) -> None:
        """Append another batch's columns (list concatenation, no Reading built)."""
        self.devices += other.devices
        self.metrics += other.metrics
        self.ts_us += other.ts_us
        self.values += other.values
        self.qualities += other.qualities

    def where(self, mask: Sequence[bool]) -> ReadingColumns:
        """The readings whose entry in ``mask`` is true, in order."""
        return ReadingColumns(
            list(compress(self.devices, mask)),
            list(compress(self.metrics, mask)),
            list(compress(self.ts_us, mask)),
            list(compress(self.values, mask)),
            list(compress(self.qualities, mask)),
        )

    def __len__(self) -> int:
        return len(self.devices)

    @overload
    def __getitem__(self, i: int) -> Reading: ...

    @overload
    def __getitem__(self, i: slice) -> ReadingColumns: ...

    def __getitem__(self, i: int | slice) -> Reading | ReadingColumns:
        if isinstance(i, slice):
            return ReadingColumns(
                self.devices[i], self.metrics[i], self.ts_us[i], self.values[i], self.qualities[i]
            )
        return Reading(
            self.devices[i], self.metrics[i], self.ts_us[i], self.values[i],
            Quality(self.qualities[i]),
        )  # fmt: skip

    def __iter__(self) -> Iterator[Reading]:
        for d, m, t, v, q in zip(
            self.devices, self.metrics, self.ts_us, self.values, self.qualities, strict=True
        ):
            yield Reading(d, m, t, v, Quality(q))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ReadingColumns):
            return NotImplemented
        return (
            self.devices == other.devices
            and self.metrics == other.metrics
            and self.ts_us == other.ts_us
            and self.values == other.values
            and self.qualities == other.qualities
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"ReadingColumns(<{len(self)} readings>)"


@dataclass(frozen=True, slots=True)
class Gap:
    """Readings an agent dropped: ``dropped`` of them between ``start_us`` and ``end_us``.

    ``device_id`` is None when the gap covers many devices (or unknown ones, e.g. a corrupted
    buffer page). (agent id, ``boot_id``, ``gap_no``) identifies a gap; ``boot_id`` is the boot
    that recorded the loss and ``gap_no`` counts up within that boot.
    """

    boot_id: str
    gap_no: int
    device_id: str | None
    start_us: int
    end_us: int
    dropped: int
    reason: str


@dataclass(slots=True)
class Envelope:
    """A batch of readings from one agent, column-wise, as it travels through Kafka."""

    agent_id: str
    boot_id: str
    seq: int
    sent_at_us: int
    devices: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    ts_us: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    qualities: list[int] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.devices)

    def add(self, r: Reading) -> None:
        self.devices.append(r.device_id)
        self.metrics.append(r.metric)
        self.ts_us.append(r.ts_us)
        self.values.append(r.value)
        self.qualities.append(int(r.quality))

    def extend(self, readings: Sequence[Reading]) -> None:
        for r in readings:
            self.add(r)

    def readings(self) -> Iterator[Reading]:
        for d, m, t, v, q in zip(
            self.devices, self.metrics, self.ts_us, self.values, self.qualities, strict=True
        ):
            yield Reading(d, m, t, v, Quality(q) if q in _QUALITIES else Quality.BAD)

    def encode(self) -> bytes:
        obj: dict[str, object] = {
            "v": WIRE_VERSION,
            "a": self.agent_id,
            "b": self.boot_id,
            "s": self.seq,
            "t": self.sent_at_us,
            "d": self.devices,
            "m": self.metrics,
            "ts": self.ts_us,
            "x": self.values,
            "q": self.qualities,
        }
        if self.gaps:
            g = self.gaps
            obj["g"] = {
                "b": [x.boot_id for x in g],
                "n": [x.gap_no for x in g],
                "d": [x.device_id for x in g],
                "s": [x.start_us for x in g],
                "e": [x.end_us for x in g],
                "c": [x.dropped for x in g],
                "r": [x.reason for x in g],
            }
        return _packb(obj)


_QUALITIES = frozenset(int(q) for q in Quality)
_packb = msgpack.Packer(use_bin_type=True, use_single_float=False).pack
_COLUMNS = ("d", "m", "ts", "x", "q")
_GAP_COLUMNS = ("b", "n", "d", "s", "e", "c", "r")


def _decode_gaps(raw: object) -> list[Gap]:
    if not isinstance(raw, dict):
        raise DecodeError("malformed", "gaps 'g' is not a map")
    cols: list[list[object]] = []
    for k in _GAP_COLUMNS:
        col = raw.get(k)
        if not isinstance(col, list):
            raise DecodeError("malformed", "gap columns b, n, d, s, e, c, r must all be arrays")
        cols.append(col)
    if any(len(col) != len(cols[0]) for col in cols):
        raise DecodeError("malformed", "gap columns have different lengths")
    gaps = []
    for boot, no, dev, start, end, count, reason in zip(*cols, strict=True):
        if not (isinstance(boot, str) and boot and isinstance(reason, str) and reason):
            raise DecodeError("malformed", "gap boot id and reason must be non-empty strings")
        if not (dev is None or (isinstance(dev, str) and dev)):
            raise DecodeError("malformed", "gap device id must be a string or nil")
        if not (type(no) is int and type(start) is int and type(end) is int):
            raise DecodeError("malformed", "gap number and times must be integers")
        if type(count) is not int or count < 0:
            raise DecodeError("malformed", "gap count must be a non-negative integer")
        gaps.append(Gap(boot, no, dev, start, end, count, reason))
    return gaps


def decode(data: bytes) -> Envelope:
    """Bytes from the wire -> Envelope, or DecodeError with a machine-readable reason.

    Structural checks only (types, lengths, version). Whether each reading is acceptable
    (finite value, plausible time, known device) is the consumer's validation, per reading.
    """
    if len(data) > MAX_ENVELOPE_BYTES:
        raise DecodeError("oversized", f"{len(data)} bytes > {MAX_ENVELOPE_BYTES}")
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise DecodeError("malformed", str(exc)) from exc
    except ValueError as exc:  # truncated input and invalid UTF-8 surface as ValueError
        raise DecodeError("malformed", str(exc)) from exc
    if not isinstance(obj, dict):
        raise DecodeError("malformed", f"top level is {type(obj).__name__}, not a map")
    version = obj.get("v")
    if version != WIRE_VERSION:
        raise DecodeError("unsupported_version", f"envelope version {version!r}")
    agent, boot, seq, sent = obj.get("a"), obj.get("b"), obj.get("s"), obj.get("t")
    if not isinstance(agent, str) or not agent:
        raise DecodeError("malformed", "agent id 'a' missing or not a string")
    if not isinstance(boot, str) or not boot:
        raise DecodeError("malformed", "boot id 'b' missing or not a string")
    if type(seq) is not int or seq < 0:
        raise DecodeError("malformed", "sequence 's' missing or not a non-negative integer")
    if type(sent) is not int:
        raise DecodeError("malformed", "sent-at 't' missing or not an integer")
    cols = [obj.get(k) for k in _COLUMNS]
    if not all(isinstance(c, list) for c in cols):
        raise DecodeError("malformed", "reading columns d, m, ts, x, q must all be arrays")
    n = len(cols[0])  # type: ignore[arg-type]
    if any(len(c) != n for c in cols):  # type: ignore[arg-type]
        raise DecodeError("malformed", "reading columns have different lengths")
    gaps = _decode_gaps(obj["g"]) if "g" in obj else []
    env = Envelope(agent, boot, seq, sent, *cols)  # type: ignore[arg-type]
    env.gaps = gaps
    return env
