"""The readings writer: a batching sink. Add per record, flush per batch, one transaction.

The ingest consumer commits Kafka offsets only after :meth:`ReadingsSink.flush` returned, i.e.
after the database transaction committed. The natural key (device, metric, time) is the
primary key, so a reading is stored at most once; liveness moves only forward, so a
redelivered batch changes nothing. Nothing is dropped: the pending batch stays in the sink
until a flush succeeds or the caller discards it.

Two ways to move a batch (docs/adr/0008-ingest-write-path.md has the measurements):

* ``copy`` (the default): the batch goes in as one binary ``COPY`` straight into
  ``readings``, inside a savepoint. If the primary key refuses it (some rows are stored
  already: a redelivery), the savepoint is rolled back and the batch is copied into a
  session-local staging table and inserted with ``INSERT ... SELECT ... ON CONFLICT DO
  NOTHING``; the sink stays on that path while batches carry duplicates.
* ``unnest``: array parameters, ``max_rows_per_statement`` rows per statement, ``ON
  CONFLICT DO NOTHING``. For engines without COPY or with small protocol messages (the
  TimescaleDB test engine).

Either way the batch goes in key order (device, metric: :func:`key_order`), so the primary
key's index takes it page after page: ~18 % less of the database's CPU per row than in the
order the consumers hand it over (docs/adr/0008-ingest-write-path.md, "Amended (issue 17,
session 6)"). The liveness arrays go as binary ``int4[]``/``int8[]`` parameters
(:func:`int4_array`, :func:`int8_array`), built by numpy, parsed by the server without a
number per element. With the COPY method (a real PostgreSQL) the transaction's statements are
server-side prepared, planned once per connection instead of per batch (:meth:`ReadingsSink.
_prepared`).

In the same transaction: in postgres mode the ranges the rollup refresh must recompute
(``rollup_invalidations``), whatever :class:`TransactionPart` the sink was given (``parts``:
the offsets, the dead-letter summary of storage/deadletters.py), and ``device_liveness``
(newest reading per device) with its own row of the coverage's change log
``liveness_changes``: the statement logs the arrays it writes and the transaction sets
``qilu.liveness_logged``, so the log triggers of migration 062 skip it (migration 067). A
batch with nothing but parts to write still gets its transaction.

Liveness is coalesced when ``liveness_flush_s`` > 0 (``ingest.liveness_flush_s``): a
device's liveness is written at most once per its period, an eighth of its kind's liveness
window (``qilu/devices.py``, as ``device_kinds.expected_interval``), at most
``liveness_flush_s`` (:class:`LivenessCoalescer`). A batch's device not written within its
period goes with the batch, as without coalescing (real time: every kind reports at least
three times per window, so a device's readings are further apart than its period); one
written within it is held, its newest committed reading kept, and written with the first
transaction after its period, or on its own with :meth:`ReadingsSink.flush_liveness` (the
ingest calls it when a poll brings nothing, and forced when it stops). A device seen in many
batches in a row (a catch-up, a backlog) costs one liveness row per period instead of one
per batch. Only committed batches are noted, so ``last_seen`` never names a reading that is
not stored and never moves backwards; a crash loses the pending liveness, never a reading:
``last_seen`` is then older than the device's newest stored reading by at most its period,
until its next reading (docs/adr/0008-ingest-write-path.md, "Coalesced liveness").

Errors: a lost connection or a database restart raises RetryableError (the pool replaces the
broken connection by itself); a saturated database (statement timeout, too many connections,
no free pooled connection, lock timeout, disk or memory full) raises BackpressureError.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import struct
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import errors as pgerrors
from psycopg import pq
from psycopg.adapt import Dumper
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolTimeout

from qilu.devices import KINDS
from qilu.errors import BackpressureError, RetryableError
from qilu.settings import StorageMode
from storage.rows import RowArrays, Rows

logger = logging.getLogger(__name__)


class WriteMethod(enum.StrEnum):
    COPY = "copy"
    UNNEST = "unnest"


# --- binary COPY ------------------------------------------------------------------------------
# PostgreSQL's binary COPY: a header, then per row the field count and (length, value) pairs,
# big-endian; timestamptz is int64 microseconds since 2000-01-01 UTC.
PG_EPOCH_US = 946_684_800_000_000
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = b"\xff\xff"
# one row: 5 fields (int4, int2, timestamptz, float8, int2), each after its length
_ROW = np.dtype(
    [
        ("fields", ">i2"),
        ("pk_len", ">i4"),
        ("pk", ">i4"),
        ("metric_len", ">i4"),
        ("metric", ">i2"),
        ("ts_len", ">i4"),
        ("ts", ">i8"),
        ("value_len", ">i4"),
        ("value", ">f8"),
        ("quality_len", ">i4"),
        ("quality", ">i2"),
    ]
)
_FIELD_COUNT = np.frombuffer(b"\x00\x05", np.uint8)  # a row's first field: 5 fields, >i2
_ROW_CONSTANTS = {
    "fields": 5,
    "pk_len": 4,
    "metric_len": 2,
    "ts_len": 8,
    "value_len": 8,
    "quality_len": 2,
}


def copy_payload(rows: Rows | RowArrays) -> memoryview:
    """The whole batch as one binary COPY stream: header, rows and trailer in one buffer, the
    rows a record array in it filled column by column (numpy does the byte order), no Python
    work per row. A memoryview, not bytes: psycopg sends a large stream in 128 KB pieces, and
    slicing bytes copies each piece where slicing a memoryview does not; with the join of
    header, rows and trailer that was two copies of the stream, 0.06 against 0.025 µs per
    row for a 240,000-row batch (docs/adr/0008-ingest-write-path.md, "Amended (issue 17,
    session 7)"). The sink builds it in a buffer it keeps (:class:`CopyStream`)."""
    return CopyStream(keep_rows=0).payload(rows)


class CopyStream:
    """:func:`copy_payload` in a buffer kept from batch to batch: the rows' constant fields
    (the field count and lengths) are written when the buffer is made, not for every batch,
    and its pages are not mapped again: 0.025 -> 0.012 µs per row for a 240,000-row batch.
    The view :meth:`payload` returns is valid until its next call (the sink's COPY has sent
    it by then). A batch of more than ``keep_rows`` rows gets a buffer of its own."""

    def __init__(self, keep_rows: int = 1_000_000) -> None:
        self._keep_rows = keep_rows
        self._buf = np.empty(0, np.uint8)
        # where the last batch's trailer went in the kept buffer: over the field count of the
        # row after its last, put back before the next batch
        self._trailer_at = -1

    def _buffer(self, n: int) -> npt.NDArray[np.uint8]:
        size = len(COPY_HEADER) + n * _ROW.itemsize + len(COPY_TRAILER)
        if len(self._buf) >= size:
            return self._buf
        buf = np.empty(size, np.uint8)
        buf[: len(COPY_HEADER)] = np.frombuffer(COPY_HEADER, np.uint8)
        out = buf[len(COPY_HEADER) : len(COPY_HEADER) + n * _ROW.itemsize].view(_ROW)
        for name, value in _ROW_CONSTANTS.items():
            out[name] = value
        if n <= self._keep_rows:
            self._buf, self._trailer_at = buf, -1
        return buf

    def payload(self, rows: Rows | RowArrays) -> memoryview:
        cols = RowArrays.of(rows)
        head, n = len(COPY_HEADER), len(cols)
        buf = self._buffer(n)
        end = head + n * _ROW.itemsize
        if buf is self._buf and self._trailer_at >= 0:
            at = self._trailer_at
            buf[at : at + 2] = _FIELD_COUNT
            self._trailer_at = -1
        out = buf[head:end].view(_ROW)
        out["pk"] = cols.device_pk
        out["metric"] = cols.metric_id
        out["ts"] = cols.ts_us - PG_EPOCH_US
        out["value"] = cols.value
        out["quality"] = cols.quality
        buf[end : end + len(COPY_TRAILER)] = np.frombuffer(COPY_TRAILER, np.uint8)
        if buf is self._buf:
            self._trailer_at = end
        return buf.data[: end + len(COPY_TRAILER)]


def key_order(rows: RowArrays) -> RowArrays:
    """The batch in key order (device, metric; a device's reports keep their order, which is
    nearly always their time order): the primary key's index takes the COPY's rows page after
    page instead of one random leaf per row, ~18 % less of the database's CPU per row for the
    province stream's batches (docs/adr/0008-ingest-write-path.md, "Amended (issue 17,
    session 6)"). Device, metric and row number packed into one int64 and sorted (~0.01 µs
    per row; a stable argsort of the key when they do not fit: ~0.04)."""
    n = len(rows)
    if n < 2:
        return rows
    dev = rows.device_pk.astype(np.int64)
    metric = rows.metric_id.astype(np.int64)
    lo_d, hi_d, lo_m, hi_m = int(dev.min()), int(dev.max()), int(metric.min()), int(metric.max())
    bits_m, bits_i = max(1, hi_m.bit_length()), (n - 1).bit_length()
    if lo_d >= 0 and lo_m >= 0 and hi_d.bit_length() + bits_m + bits_i <= 63:
        key = (dev << bits_m) | metric
        if bool(np.all(key[1:] >= key[:-1])):
            return rows
        key <<= bits_i
        key |= np.arange(n, dtype=np.int64)  # the row number: equal keys keep their order
        key.sort()
        order = key & ((1 << bits_i) - 1)
    else:
        key = (dev << 16) | (metric & 0xFFFF)
        if bool(np.all(key[1:] >= key[:-1])):
            return rows
        order = np.argsort(key, kind="stable")
    return RowArrays(
        rows.device_pk[order],
        rows.metric_id[order],
        rows.ts_us[order],
        rows.value[order],
        rows.quality[order],
    )


# --- binary array parameters -------------------------------------------------------------------
# An int4[] / int8[] parameter in PostgreSQL's binary array format, built by numpy: the server
# reads it without parsing a number per element, and the client builds it without a Python
# string per element (the text literal cost ~0.29 µs of the consumer and ~0.1 µs of the
# database per liveness device; docs/adr/0008-ingest-write-path.md, "Amended (issue 17,
# session 6)"). A one-dimensional array: ndim, has-nulls, element type, then the dimension's
# length and lower bound; each element after its length, big-endian.
_INT4_OID, _INT8_OID = 23, 20


class Int4Array(bytes):
    """An ``int4[]`` parameter in binary form (:func:`int4_array`); pass it with ``%b``."""


class Int8Array(bytes):
    """An ``int8[]`` parameter in binary form (:func:`int8_array`); pass it with ``%b``."""


def _binary_array(values: npt.ArrayLike, elem_oid: int, dtype: str, size: int) -> bytes:
    arr = np.asarray(values)
    n = len(arr)
    if n == 0:
        return struct.pack(">iiI", 0, 0, elem_oid)
    out = np.empty(n, [("len", ">i4"), ("value", dtype)])
    out["len"] = size
    out["value"] = arr  # numpy checks nothing here: the callers' arrays are int32 / int64
    return struct.pack(">iiIii", 1, 0, elem_oid, n, 1) + out.tobytes()


def int4_array(values: npt.NDArray[np.int32]) -> Int4Array:
    return Int4Array(_binary_array(values, _INT4_OID, ">i4", 4))


def int8_array(values: npt.NDArray[np.int64] | list[int]) -> Int8Array:
    return Int8Array(_binary_array(np.asarray(values, np.int64), _INT8_OID, ">i8", 8))


class _ArrayDumper(Dumper):
    """Sends an already built binary array (:func:`int4_array`, :func:`int8_array`) as is."""

    format = pq.Format.BINARY

    def dump(self, obj: object) -> bytes:
        assert isinstance(obj, Int4Array | Int8Array)  # noqa: S101 - registered for these only
        return bytes(obj)


class _Int4ArrayDumper(_ArrayDumper):
    oid = 1007  # int4[]


class _Int8ArrayDumper(_ArrayDumper):
    oid = 1016  # int8[]


# the project's own two types, for every connection (they dump nothing else)
psycopg.adapters.register_dumper(Int4Array, _Int4ArrayDumper)
psycopg.adapters.register_dumper(Int8Array, _Int8ArrayDumper)


_COPY_READINGS = (
    "COPY readings (device_pk, metric_id, ts, value, quality) FROM STDIN (FORMAT BINARY)"
)
# The slow path, for batches holding rows already stored (a redelivery): stage the batch in a
# session-local table, then one set-based insert that skips the duplicates. Key order: fewer
# index page misses, and concurrent writers of overlapping batches take row locks in the same
# order, so they cannot deadlock.
_CREATE_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS qilu_stage ("
    " device_pk int4 NOT NULL, metric_id int2 NOT NULL, ts timestamptz NOT NULL,"
    " value float8 NOT NULL, quality int2 NOT NULL) ON COMMIT DELETE ROWS"
)
_COPY_STAGE = (
    "COPY qilu_stage (device_pk, metric_id, ts, value, quality) FROM STDIN (FORMAT BINARY)"
)
_INSERT_STAGE = (
    "INSERT INTO readings (device_pk, metric_id, ts, value, quality)"
    " SELECT device_pk, metric_id, ts, value, quality FROM qilu_stage"
    " ORDER BY device_pk, metric_id, ts ON CONFLICT DO NOTHING"
)

# --- unnest (engines without COPY) -------------------------------------------------------------
_INSERT_UNNEST = (
    "INSERT INTO readings (device_pk, metric_id, ts, value, quality)"
    " SELECT d, m, 'epoch'::timestamptz + t * interval '1 microsecond', v, q"
    " FROM unnest(%s::int4[], %s::int2[], %s::int8[], %s::float8[], %s::int2[]) AS u(d, m, t, v, q)"
    " ON CONFLICT DO NOTHING"
)

# --- both methods --------------------------------------------------------------------------
# Newest reading per device, moving only forward (a redelivery writes nothing); device order,
# so concurrent writers lock liveness rows in the same order.
_LIVENESS = (
    "INSERT INTO device_liveness (device_pk, last_seen)"
    " SELECT d, 'epoch'::timestamptz + t * interval '1 microsecond'"
    " FROM unnest(%b::int4[], %b::int8[]) AS u(d, t) ORDER BY d"
    " ON CONFLICT (device_pk) DO UPDATE SET last_seen = EXCLUDED.last_seen"
    " WHERE device_liveness.last_seen < EXCLUDED.last_seen"
)
# The same, logging its own change for the incremental coverage (migration 067): the arrays
# go into liveness_changes as they are, in the same statement, and the transaction says so
# (qilu.liveness_logged), so the change-log trigger of migration 062 returns at once instead
# of aggregating the moved rows and converting each time back to microseconds. Devices that
# did not move forward are logged too; the coverage model keeps each device's newest time,
# so they change nothing.
_LIVENESS_LOGGED = (
    "WITH a AS (SELECT %b::int4[] AS d, %b::int8[] AS t),"
    " logged AS (INSERT INTO liveness_changes (devices, seen_us) SELECT d, t FROM a)"
    " INSERT INTO device_liveness (device_pk, last_seen)"
    " SELECT u.d, 'epoch'::timestamptz + u.t * interval '1 microsecond'"
    " FROM a, unnest(a.d, a.t) AS u(d, t) ORDER BY u.d"
    " ON CONFLICT (device_pk) DO UPDATE SET last_seen = EXCLUDED.last_seen"
    " WHERE device_liveness.last_seen < EXCLUDED.last_seen"
)
# the transaction's statement timeout and whether its liveness statement logs itself
# (migration 067); in postgres mode with the minute watermark of the rollup refresh
# (migration 003), which decides the ranges the batch invalidates: one round trip
_TIMEOUT = (
    "SELECT set_config('statement_timeout', %s, true),"
    " set_config('qilu.liveness_logged', %s, true), NULL::int8"
)
_TIMEOUT_AND_WATERMARK = (
    "SELECT set_config('statement_timeout', %s, true),"
    " set_config('qilu.liveness_logged', %s, true),"
    " (SELECT CASE WHEN isfinite(watermark)"
    " THEN (extract(epoch FROM watermark) * 1000000)::int8 END"
    " FROM rollup_state WHERE name = 'readings_1m')"
)
_INVALIDATE = (
    "INSERT INTO rollup_invalidations (device_pk, lo, hi)"
    " SELECT d, 'epoch'::timestamptz + lo * interval '1 microsecond',"
    " 'epoch'::timestamptz + hi * interval '1 microsecond'"
    " FROM unnest(%s::int4[], %s::int8[], %s::int8[]) AS u(d, lo, hi)"
)
_ENSURE_PARTITIONS = (
    "SELECT qilu_ensure_partitions('readings',"
    " 'epoch'::timestamptz + %s * interval '1 microsecond',"
    " 'epoch'::timestamptz + %s * interval '1 microsecond')"
)
_HOUR_US = 3_600_000_000

# server-side conditions that mean "the database is overloaded, come back later"
_SATURATED = (
    pgerrors.TooManyConnections,
    pgerrors.QueryCanceled,  # statement_timeout
    pgerrors.LockNotAvailable,
    pgerrors.DiskFull,
    pgerrors.OutOfMemory,
    pgerrors.ConfigurationLimitExceeded,
)
# transient conflicts between concurrent writers: simply try again
_CONFLICT = (pgerrors.DeadlockDetected, pgerrors.SerializationFailure)


@contextlib.contextmanager
def _translated_errors() -> Iterator[None]:
    """The database's errors as the caller should act on them (the module docstring)."""
    try:
        yield
    except _SATURATED as exc:
        raise BackpressureError(f"database saturated: {exc}", retry_after=1.0) from exc
    except PoolTimeout as exc:
        raise BackpressureError(f"no database connection free: {exc}", 1.0) from exc
    except _CONFLICT as exc:
        raise RetryableError(f"write conflict, retrying: {exc}") from exc
    except psycopg.OperationalError as exc:
        raise RetryableError(f"database unavailable: {exc}") from exc


_NONE = np.iinfo(np.int64).min  # no pending reading for this device
# coalesced liveness per device kind: a device's liveness is written at most once per this
# fraction of its kind's liveness window (device_kinds.expected_interval), capped by
# ``liveness_flush_s``. Every kind reports at least 3 times per window (qilu/devices.py), so in
# real time a device's readings are further apart than its period and none is held
# (docs/adr/0008-ingest-write-path.md, "Coalesced liveness per kind")
WINDOW_FRACTION = 8
# the devices' periods are read again after this long (a kind's window or a device's kind
# changed in the registry); a batch with a device the sink has no period for (registered
# since) has them read again, at most every PERIODS_RETRY_S (until then: the shortest period)
PERIODS_TTL_S = 600.0
PERIODS_RETRY_S = 60.0
# every device of the registry by kind: one scan, an array per kind (a lookup per device
# costs the database about what a liveness write does). The kinds' windows come from the
# catalog in code (qilu/devices.py), which migrate syncs into device_kinds; the ingest role
# reads devices, not device_kinds
_DEVICES_BY_KIND = "SELECT kind, array_agg(device_pk) FROM devices GROUP BY kind"
Liveness = tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]  # devices, newest µs


@dataclass(frozen=True, slots=True)
class LivenessPlan:
    """What one transaction writes to ``device_liveness`` and what it leaves pending."""

    write: Liveness  # distinct devices in ascending order, their newest timestamps
    hold: Liveness  # the batch's devices written within the period: pending after the commit


class LivenessCoalescer:
    """Each device's liveness written at most once per its period (coalesced liveness).

    A device's period is ``period_s``, or shorter if :meth:`set_periods` says so (the sink
    gives each device ``min(its kind's liveness window / WINDOW_FRACTION, period_s)``); a
    device whose period was not set, or was forgotten, gets the shortest period set so far,
    never a longer one. A batch's device not written within its period is written with the
    batch (real time: a device reports less often than its period, so nearly all of them,
    and ``last_seen`` is as fresh as without coalescing); one written within the period is
    held, its newest timestamp kept, and written with the first transaction after its
    period is over (a catch-up: a device recurs in consecutive batches). Pending devices are
    looked for at most every fifth of the shortest period, so a held device is written at
    most 1.2 periods after its previous write.

    One int64 (newest pending µs) and two float64 (when last written, period) per device_pk
    up to the largest seen (device_pk is the registry's serial: 6 MB for a province of
    270,000 devices): a batch costs vectorised gathers over its devices, no Python work per
    device. Pure: the sink plans, writes, and reports the commit (:meth:`committed`)."""

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self._ts = np.full(0, _NONE, np.int64)
        self._written = np.full(0, -np.inf, np.float64)
        self._period = np.full(0, np.nan, np.float64)  # NaN: not set (the shortest)
        self._shortest = period_s
        self._count = 0
        self._scanned = -np.inf  # when pending devices were last looked for

    def __len__(self) -> int:
        return self._count

    def due(self, now: float) -> bool:
        """Pending devices may have come due (a transaction should look)."""
        return self._count > 0 and now - self._scanned >= self._shortest / 5

    def set_periods(self, devs: npt.NDArray[np.int32], periods: npt.NDArray[np.float64]) -> None:
        """The devices' own periods (seconds; ``period_s`` at most)."""
        if not len(devs):
            return
        if int(devs.min()) < 0:
            raise ValueError("device_pk must be >= 0")
        self._grow(int(devs.max()))
        own = np.minimum(periods, self.period_s)
        self._period[devs] = own
        self._shortest = min(self._shortest, float(own.min()))

    def unknown(self, devs: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
        """Those of ``devs`` whose period is not set."""
        inside = devs < len(self._period)
        known = np.zeros(len(devs), bool)
        known[inside] = ~np.isnan(self._period[devs[inside]])
        return devs[~known]

    def forget_periods(self) -> None:
        """Every device's period is to be set again (until then: the shortest)."""
        self._period[:] = np.nan

    def _periods(
        self, devs: npt.NDArray[np.int32] | npt.NDArray[np.intp]
    ) -> npt.NDArray[np.float64]:
        own = self._period[devs]
        return np.where(np.isnan(own), self._shortest, own)

    def plan(self, batch: Liveness | None, now: float, *, force: bool = False) -> LivenessPlan:
        """What to write now: the batch's devices not written within the period, the pending
        ones whose period is over (all pending ones with ``force``), in device order."""
        if batch is not None and len(batch[0]):
            if int(batch[0].min()) < 0:  # a negative index would name another device
                raise ValueError("device_pk must be >= 0")
            self._grow(int(batch[0].max()))
            devs, ts = batch
            fresh = self._written[devs] <= now - self._periods(devs)
            # a fresh device may still hold a newer pending timestamp (late data came after)
            parts = [(devs[fresh], np.maximum(ts[fresh], self._ts[devs[fresh]]))]
            hold = (devs[~fresh], ts[~fresh])
        else:
            parts, hold = [], _empty()
        if self._count and (force or self.due(now)):
            pending = np.flatnonzero(self._ts != _NONE)
            if not force:
                pending = pending[self._written[pending] <= now - self._periods(pending)]
            parts.append((pending.astype(np.int32), self._ts[pending]))
        return LivenessPlan(_newest(parts), hold)

    def committed(self, plan: LivenessPlan, now: float, *, scanned: bool) -> None:
        """``plan`` is in the database: its writes are no longer pending, its held devices
        are (``scanned``: the plan looked for pending devices)."""
        devs, _ = plan.write
        if len(devs):
            self._count -= int(np.count_nonzero(self._ts[devs] != _NONE))
            self._ts[devs] = _NONE
            self._written[devs] = now
        devs, ts = plan.hold
        if len(devs):
            self._count += int(np.count_nonzero(self._ts[devs] == _NONE))
            self._ts[devs] = np.maximum(self._ts[devs], ts)
        if scanned:
            self._scanned = now

    def _grow(self, top: int) -> None:
        if top < len(self._ts):
            return
        n = max(top + 1, 2 * len(self._ts))
        ts, written = np.full(n, _NONE, np.int64), np.full(n, -np.inf, np.float64)
        period = np.full(n, np.nan, np.float64)
        ts[: len(self._ts)], written[: len(self._written)] = self._ts, self._written
        period[: len(self._period)] = self._period
        self._ts, self._written, self._period = ts, written, period


def _empty() -> Liveness:
    return np.zeros(0, np.int32), np.zeros(0, np.int64)


def _newest(parts: list[Liveness]) -> Liveness:
    """The devices of ``parts`` in ascending order, each with its newest timestamp."""
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return _empty()
    if len(parts) == 1:
        return parts[0]
    devs = np.concatenate([p[0] for p in parts])
    ts = np.concatenate([p[1] for p in parts])
    order = np.lexsort((ts, devs))
    devs, ts = devs[order], ts[order]
    last = np.ones(len(devs), bool)  # the last of each device: its newest
    last[:-1] = devs[1:] != devs[:-1]
    return devs[last], ts[last]


class TransactionPart(Protocol):
    """Something written in the same transaction as a batch of readings."""

    @property
    def pending(self) -> int:
        """How much it holds to write (0: nothing)."""
        ...

    def write(self, cur: psycopg.Cursor[TupleRow]) -> None:
        """Write it, inside the batch's transaction (may run again if the transaction fails).

        ``cur`` runs in pipeline mode and is shared with the batch's other statements: a
        result to read must come from a cursor of its own (``cur.connection.cursor()``), as an
        earlier statement's answer may land on ``cur`` (storage/deadletters.py)."""
        ...

    def committed(self) -> None:
        """The transaction committed: forget what was written."""
        ...

    def discard(self) -> None:
        """The batch is abandoned (its records will be read again)."""
        ...


@dataclass(frozen=True, slots=True)
class WriteResult:
    offered: int
    inserted: int
    seconds: float

    @property
    def duplicates(self) -> int:
        return self.offered - self.inserted


class ReadingsSink:
    """Batches readings and writes each batch in one transaction.

    ``mode`` is the storage mode of the database (postgres mode needs partitions and rollup
    invalidations, see migrations 002 and 003). ``method`` defaults to ``unnest`` when
    ``max_rows_per_statement`` is set, ``copy`` otherwise.
    """

    def __init__(
        self,
        pool: ConnectionPool,
        *,
        mode: StorageMode = StorageMode.POSTGRES,
        max_rows_per_statement: int = 0,
        method: WriteMethod | None = None,
        pool_timeout_s: float = 5.0,
        statement_timeout_ms: int = 60_000,
        parts: tuple[TransactionPart, ...] = (),
        liveness_flush_s: float = 0.0,
        liveness_per_kind: bool = True,
        self_logged_liveness: bool = True,
        key_ordered: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``liveness_per_kind``: coalesce each device per its kind's period (False: one
        ``liveness_flush_s`` for every device); ``self_logged_liveness``: the liveness statement
        writes its own change-log row (migration 067; False: migration 062's triggers log it);
        ``key_ordered``: the batch goes in key order (:func:`key_order`; False: in the order it
        was added). All three False only to measure the sink as it was (bench/sink_cost.py)."""
        if mode is StorageMode.AUTO:
            raise ValueError("ReadingsSink needs the resolved storage mode, not auto")
        if liveness_flush_s < 0:
            raise ValueError("liveness_flush_s must be >= 0 (0: liveness with every batch)")
        self._pool = pool
        self._mode = mode
        self._chunk = max_rows_per_statement if max_rows_per_statement > 0 else 1 << 30
        self.method = method or (
            WriteMethod.UNNEST if max_rows_per_statement > 0 else WriteMethod.COPY
        )
        self._pool_timeout_s = pool_timeout_s
        self._statement_timeout = str(statement_timeout_ms)
        self._pending: list[Rows | RowArrays] = []
        self._staged: weakref.WeakSet[psycopg.Connection[TupleRow]] = weakref.WeakSet()
        self._staging = False  # the last batch held duplicates: stage until one does not
        self._copy = CopyStream()
        self._partition_hours: set[int] = set()  # hours known to have a partition
        self._parts = parts
        # coalesced liveness (None: every batch writes the liveness of its devices)
        self._clock = clock  # seconds, monotonic (a test's own clock)
        self._live = LivenessCoalescer(liveness_flush_s) if liveness_flush_s > 0 else None
        self._per_kind = liveness_per_kind
        self._self_logged = self_logged_liveness
        self._key_ordered = key_ordered
        self._periods_at = -np.inf  # when the devices' periods were last read

    def add(self, rows: Rows | RowArrays) -> None:
        if len(rows):
            self._pending.append(rows)

    @property
    def pending(self) -> int:
        return sum(map(len, self._pending))

    def discard(self) -> None:
        """Forget the pending batch (its Kafka records will be redelivered to someone)."""
        self._pending = []
        for part in self._parts:
            part.discard()

    @property
    def pending_liveness(self) -> int:
        """Devices whose newest committed reading is not in ``device_liveness`` yet."""
        return len(self._live) if self._live is not None else 0

    def flush(self) -> WriteResult:
        """Write the pending rows in one transaction; on success the batch is cleared."""
        start = time.perf_counter()
        now = self._clock()
        if (
            not self._pending
            and not any(part.pending for part in self._parts)
            and not (self._live is not None and self._live.due(now))
        ):
            return WriteResult(0, 0, 0.0)
        rows = RowArrays.concat(self._pending)
        if self._key_ordered:
            rows = key_order(rows)
        batch_live = newest_per_device(rows) if rows else None
        if self._live is not None and batch_live is not None:
            with _translated_errors():
                self._learn_periods(batch_live[0], now)
        plan, scanned = None, False
        live = batch_live
        if self._live is not None:
            scanned = self._live.due(now)
            plan = self._live.plan(batch_live, now)
            live = plan.write
            if not rows and not len(live[0]) and not any(p.pending for p in self._parts):
                self._live.committed(plan, now, scanned=scanned)  # nothing due yet
                return WriteResult(0, 0, 0.0)
        with _translated_errors():
            try:
                if self._mode is StorageMode.POSTGRES and rows:
                    self._ensure_partitions(rows)
                inserted = self._write(rows, live)
            except pgerrors.CheckViolation as exc:
                # "no partition of relation readings found for row": retention dropped a
                # partition this process had seen, and a very late reading arrived for it
                if self._mode is not StorageMode.POSTGRES:
                    raise
                logger.info("creating a missing partition after: %s", str(exc).strip())
                self._partition_hours.clear()
                self._ensure_partitions(rows)
                inserted = self._write(rows, live)
        self._pending = []
        for part in self._parts:
            part.committed()
        if self._live is not None and plan is not None:
            self._live.committed(plan, now, scanned=scanned)
        return WriteResult(len(rows), inserted, time.perf_counter() - start)

    def flush_liveness(self, *, force: bool = False) -> int:
        """Write the pending (coalesced) liveness whose period is over in a transaction of its
        own, or all of it with ``force`` (the ingest stopping); returns the devices written.
        The pending rows and parts of a batch are left for :meth:`flush`. Raises like
        :meth:`flush`; on an error the liveness stays pending."""
        now = self._clock()
        if self._live is None or not (self._live and (force or self._live.due(now))):
            return 0
        plan = self._live.plan(None, now, force=force)
        if len(plan.write[0]):
            with _translated_errors():
                self._write(RowArrays.concat([]), plan.write, with_parts=False)
        self._live.committed(plan, now, scanned=True)
        return len(plan.write[0])

    # -- internals ------------------------------------------------------------------------------
    def _learn_periods(self, devs: npt.NDArray[np.int32], now: float) -> None:
        """Give the coalescer every device's period: its kind's liveness window /
        WINDOW_FRACTION, read for the whole registry at once (:data:`_DEVICES_BY_KIND`) when the
        sink starts, every PERIODS_TTL_S, and when ``devs`` holds a device without one (at
        most every PERIODS_RETRY_S). A device the registry does not know gets the shortest
        period."""
        live = self._live
        if live is None or not self._per_kind:
            return
        age = now - self._periods_at
        if age <= PERIODS_TTL_S and (age < PERIODS_RETRY_S or not len(live.unknown(devs))):
            return
        with self._pool.connection(timeout=self._pool_timeout_s) as conn:
            found = conn.execute(_DEVICES_BY_KIND).fetchall()
        live.forget_periods()
        for kind, pks in found:
            spec = KINDS.get(kind)
            if spec is not None:  # a kind the code does not know: the shortest period
                window = np.full(len(pks), spec.expected_interval_s / WINDOW_FRACTION)
                live.set_periods(np.array(pks, np.int32), window)
        self._periods_at = now

    def _ensure_partitions(self, rows: RowArrays) -> None:
        """Create the partitions of the hours this batch has rows in (not of the hours in
        between: one reading from years ago must not create years of partitions)."""
        known = self._partition_hours
        lo, hi = int(rows.ts_us.min()) // _HOUR_US, int(rows.ts_us.max()) // _HOUR_US
        if hi - lo <= 1 and lo in known and hi in known:
            return  # the usual batch: live data of one or two hours already seen
        missing = set(np.unique(rows.ts_us // _HOUR_US).tolist()) - known
        if not missing:
            return
        with self._pool.connection(timeout=self._pool_timeout_s) as conn:
            for h in sorted(missing):
                conn.execute(_ENSURE_PARTITIONS, (h * _HOUR_US, h * _HOUR_US))
        known |= missing

    def _write(
        self,
        rows: RowArrays,
        live: Liveness | None,
        *,
        with_parts: bool = True,
    ) -> int:
        """One transaction in few round trips: the settings (and watermark), the rows, then
        liveness (``live``: devices and newest timestamps; None: none this time),
        invalidations and the parts sent together (pipeline mode)."""
        postgres = self._mode is StorageMode.POSTGRES
        with (
            self._pool.connection(timeout=self._pool_timeout_s) as conn,
            self._prepared(conn),
        ):
            with conn.transaction(), conn.cursor() as cur:
                row = cur.execute(
                    _TIMEOUT_AND_WATERMARK if postgres else _TIMEOUT,
                    (self._statement_timeout, "on" if self._self_logged else "off"),
                ).fetchone()
                watermark = row[2] if row else None
                inserted = 0
                if rows:
                    if self.method is WriteMethod.COPY:
                        inserted = self._write_copy(conn, cur, rows)
                    else:
                        inserted = self._write_unnest(cur, rows)
                with conn.pipeline():
                    if live is not None and len(live[0]):
                        self._write_liveness(cur, *live)
                    if rows and postgres:
                        self._write_invalidations(cur, rows, watermark)
                    if with_parts:
                        for part in self._parts:
                            if part.pending:
                                part.write(cur)
            return inserted

    @contextlib.contextmanager
    def _prepared(self, conn: psycopg.Connection[TupleRow]) -> Iterator[None]:
        """The transaction's statements as server-side prepared statements (parsed and planned
        once per connection, not per batch) where the server is a real PostgreSQL (the COPY
        method: the TimescaleDB test engine has no COPY and keeps prepared statements across
        reconnects, so the pool's connections do not prepare: storage/db.py). In real time
        (~2,100 rows per transaction) the settings, invalidation and offsets statements cost
        half as much, ~0.15-0.27 µs per row (docs/adr/0008-ingest-write-path.md, "Amended
        (issue 17, session 6)"); the connection goes back to the pool as it was."""
        if self.method is not WriteMethod.COPY:
            yield
            return
        before = conn.prepare_threshold
        conn.prepare_threshold = 0
        try:
            yield
        finally:
            conn.prepare_threshold = before

    def _write_copy(
        self, conn: psycopg.Connection[TupleRow], cur: psycopg.Cursor[TupleRow], rows: RowArrays
    ) -> int:
        payload = self._copy.payload(rows)
        if not self._staging:
            try:
                # a savepoint: a refused COPY leaves nothing behind
                with conn.transaction(), cur.copy(_COPY_READINGS) as copy:
                    copy.write(payload)
            except pgerrors.UniqueViolation:
                # part of the batch is stored already: a redelivery. Stage it instead, and
                # keep staging while batches carry duplicates (a replay comes in a run).
                self._staging = True
                logger.debug("batch holds readings stored already; staging to skip them")
            else:
                return len(rows)
        if conn not in self._staged:
            cur.execute(_CREATE_STAGE)
            self._staged.add(conn)
        with cur.copy(_COPY_STAGE) as copy:
            copy.write(payload)
        cur.execute(_INSERT_STAGE)
        inserted = cur.rowcount
        if inserted == len(rows):
            self._staging = False  # no duplicates any more: back to the direct COPY
        return inserted

    def _write_unnest(self, cur: psycopg.Cursor[TupleRow], rows: RowArrays) -> int:
        inserted = 0
        for lo in range(0, len(rows), self._chunk):
            hi = lo + self._chunk
            cur.execute(
                _INSERT_UNNEST,
                (
                    array_literal(rows.device_pk[lo:hi]),
                    array_literal(rows.metric_id[lo:hi]),
                    array_literal(rows.ts_us[lo:hi]),
                    array_literal(rows.value[lo:hi]),
                    array_literal(rows.quality[lo:hi]),
                ),
            )
            inserted += cur.rowcount
        return inserted

    def _write_liveness(
        self,
        cur: psycopg.Cursor[TupleRow],
        devs: npt.NDArray[np.int32],
        last: npt.NDArray[np.int64],
    ) -> None:
        statement = _LIVENESS_LOGGED if self._self_logged else _LIVENESS
        for lo in range(0, len(devs), self._chunk):
            hi = lo + self._chunk
            cur.execute(statement, (int4_array(devs[lo:hi]), int8_array(last[lo:hi])))

    def _write_invalidations(
        self, cur: psycopg.Cursor[TupleRow], rows: RowArrays, watermark: int | None
    ) -> None:
        ranges = touched_ranges(rows, watermark)
        for lo in range(0, len(ranges), self._chunk):
            part = ranges[lo : lo + self._chunk]
            cur.execute(
                _INVALIDATE,
                (
                    "{" + ",".join("NULL" if r[0] is None else str(r[0]) for r in part) + "}",
                    array_literal([r[1] for r in part]),
                    array_literal([r[2] for r in part]),
                ),
            )


def array_literal(values: list[int] | list[float] | npt.NDArray[np.generic]) -> str:
    """A PostgreSQL array literal of numbers (``{1,2,3}``), built in C by ``map``/``join``.

    psycopg dumps a Python list element by element in Python with a quoting regexp per
    element: 7 % of the consumer's time for the liveness arrays (bench/ingest.py --profile).
    Numbers need no quoting; ``repr`` of a float round-trips exactly."""
    if isinstance(values, np.ndarray):
        values = values.tolist()
    return "{" + ",".join(map(repr, values)) + "}"


def newest_per_device(
    rows: Rows | RowArrays,
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]:
    """The batch's devices in ascending order and the newest timestamp (µs) of each."""
    cols = RowArrays.of(rows)
    if len(cols) and bool(np.all(cols.device_pk[1:] >= cols.device_pk[:-1])):
        # in device order already (key_order): each device's rows are one run
        first = np.ones(len(cols), bool)
        first[1:] = cols.device_pk[1:] != cols.device_pk[:-1]
        starts = np.flatnonzero(first)
        return cols.device_pk[starts], np.maximum.reduceat(cols.ts_us, starts)
    order = np.lexsort((cols.ts_us, cols.device_pk))  # by device, then time
    devs = cols.device_pk[order]
    last = np.ones(len(devs), bool)  # the last row of each device: its newest
    last[:-1] = devs[1:] != devs[:-1]
    return devs[last], cols.ts_us[order][last]


def touched_ranges(
    rows: Rows | RowArrays, watermark_us: int | None
) -> list[tuple[int | None, int, int]]:
    """What the rollup refresh must recompute for this batch, as (device or None, lo, hi).

    Rows at or after the minute watermark give one range for all devices (the advance of the
    watermark materializes those minutes anyway; the range matters only if the refresh passed
    them while this transaction was open). Older rows (late data) give one range per device,
    so a device uploading a backlog costs a recomputation of that device only.
    """
    cols = RowArrays.of(rows)
    ts = cols.ts_us
    lo, hi = int(ts.min()), int(ts.max())
    if watermark_us is None or lo >= watermark_us:
        return [(None, lo, hi)]
    late = ts < watermark_us
    devs, late_ts = cols.device_pk[late], ts[late]
    order = np.lexsort((late_ts, devs))
    devs, late_ts = devs[order], late_ts[order]
    first = np.ones(len(devs), bool)
    first[1:] = devs[1:] != devs[:-1]
    last = np.ones(len(devs), bool)
    last[:-1] = first[1:]
    out: list[tuple[int | None, int, int]] = list(
        zip(devs[first].tolist(), late_ts[first].tolist(), late_ts[last].tolist(), strict=True)
    )
    live = ts[~late]
    if len(live):
        out.append((None, int(live.min()), int(live.max())))
    return out
