"""The writer's pure parts: the binary COPY stream, liveness per device, rollup invalidations."""

from __future__ import annotations

import random
import struct
from datetime import UTC, datetime

from storage.coverage import province_day
from storage.rows import Rows
from storage.writer import (
    COPY_HEADER,
    COPY_TRAILER,
    PG_EPOCH_US,
    CopyStream,
    newest_per_device,
    touched_ranges,
)
from storage.writer import copy_payload as payload


def rows(*items: tuple[int, int, int, float, int]) -> Rows:
    r = Rows()
    for d, m, t, v, q in items:
        r.device_pk.append(d)
        r.metric_id.append(m)
        r.ts_us.append(t)
        r.value.append(v)
        r.quality.append(q)
    return r


def parse_copy(stream: bytes | memoryview) -> list[tuple[int, int, int, float, int]]:
    """An independent reader of PostgreSQL's binary COPY format (field by field)."""
    data = bytes(stream)
    assert data.startswith(COPY_HEADER)
    assert data.endswith(COPY_TRAILER)
    pos, out = len(COPY_HEADER), []
    while True:
        (nfields,) = struct.unpack_from(">h", data, pos)
        pos += 2
        if nfields == -1:
            break
        assert nfields == 5
        fields = []
        for fmt in (">i", ">h", ">q", ">d", ">h"):
            (length,) = struct.unpack_from(">i", data, pos)
            pos += 4
            assert length == struct.calcsize(fmt)
            fields.append(struct.unpack_from(fmt, data, pos)[0])
            pos += length
        out.append(tuple(fields))
    assert pos == len(data)
    return out  # type: ignore[return-value]


def test_copy_payload_round_trips_with_the_postgres_epoch() -> None:
    ts = 1_763_900_000_123_456  # microseconds since 1970
    r = rows((7, 3, ts, 1.5, 0), (2_000_000_000, 32_000, ts + 1, -0.25, 2))
    assert parse_copy(payload(r)) == [
        (7, 3, ts - PG_EPOCH_US, 1.5, 0),
        (2_000_000_000, 32_000, ts + 1 - PG_EPOCH_US, -0.25, 2),
    ]


def test_copy_payload_of_nothing_is_a_valid_empty_stream() -> None:
    assert parse_copy(payload(Rows())) == []


def test_copy_payload_is_one_buffer_psycopg_slices_without_copying() -> None:
    """Random rows (the types' extremes included) read back field by field; the stream is a
    memoryview, so psycopg's 128 KB pieces of it are views, not copies of the bytes."""
    rng = random.Random(17)
    items = [
        (
            rng.choice([0, 1, 2**31 - 1, rng.randrange(2**31)]),
            rng.choice([0, 2**15 - 1, rng.randrange(2**15)]),
            rng.choice([PG_EPOCH_US, 0, 2**62, rng.randrange(2**62)]),
            rng.choice([0.0, -0.0, 1e308, -1e-308, rng.uniform(-1e6, 1e6)]),
            rng.randrange(3),
        )
        for _ in range(3000)
    ]
    stream = payload(rows(*items))
    assert isinstance(stream, memoryview)
    assert parse_copy(stream) == [(d, m, t - PG_EPOCH_US, v, q) for d, m, t, v, q in items]
    piece = stream[len(COPY_HEADER) : len(COPY_HEADER) + 2]
    assert isinstance(piece, memoryview)
    assert piece.obj is stream.obj  # a view of the same buffer


def test_newest_per_device_takes_the_maximum_not_the_last() -> None:
    r = rows((1, 1, 30, 0, 0), (1, 2, 10, 0, 0), (2, 1, 5, 0, 0), (1, 3, 20, 0, 0))
    devices, newest = newest_per_device(r)
    assert dict(zip(devices.tolist(), newest.tolist(), strict=True)) == {1: 30, 2: 5}


def test_live_batch_is_one_range_for_all_devices() -> None:
    r = rows((1, 1, 1_000, 0, 0), (2, 1, 1_500, 0, 0), (3, 1, 1_200, 0, 0))
    assert touched_ranges(r, watermark_us=900) == [(None, 1_000, 1_500)]
    assert touched_ranges(r, watermark_us=None) == [(None, 1_000, 1_500)]


def test_late_rows_give_one_range_per_device() -> None:
    r = rows(
        (5, 1, 100, 0, 0),
        (5, 2, 300, 0, 0),
        (4, 1, 200, 0, 0),
        (5, 1, 150, 0, 0),
        (6, 1, 2_000, 0, 0),  # live
        (4, 1, 1_000, 0, 0),  # exactly at the watermark: live
    )
    assert touched_ranges(r, watermark_us=1_000) == [
        (4, 200, 200),
        (5, 100, 300),
        (None, 1_000, 2_000),
    ]


def test_all_late_batch_has_no_live_range() -> None:
    r = rows((9, 1, 10, 0, 0), (9, 1, 20, 0, 0))
    assert touched_ranges(r, watermark_us=1_000) == [(9, 10, 20)]


def test_coverage_day_is_the_province_calendar_day() -> None:
    assert str(province_day(datetime(2026, 11, 23, 15, 59, tzinfo=UTC))) == "2026-11-23"
    assert str(province_day(datetime(2026, 11, 23, 16, 0, tzinfo=UTC))) == "2026-11-24"


def test_array_literal_is_exact_for_ints_and_floats() -> None:
    from storage.writer import array_literal

    assert array_literal([]) == "{}"
    assert array_literal([1, -2, 2**40]) == "{1,-2,1099511627776}"
    values = [0.1, 1e-300, 123456789.123456789, -2.5e17]
    text = array_literal(values)
    assert [float(x) for x in text.strip("{}").split(",")] == values


def test_key_order_sorts_by_device_then_metric_keeping_report_order() -> None:
    from storage.rows import RowArrays
    from storage.writer import key_order

    r = RowArrays.of(
        rows(
            (7, 2, 10, 0.5, 0),
            (3, 1, 20, 1.5, 1),
            (7, 1, 10, 2.5, 0),
            (3, 1, 5, 3.5, 0),  # the same device and metric again: stays after the first
            (70_000, 0, 1, 4.5, 0),  # a device_pk above 2**16 does not collide with a metric
            (1, 30_000, 1, 5.5, 0),
        )
    )
    out = key_order(r)
    got = list(
        zip(
            out.device_pk.tolist(),
            out.metric_id.tolist(),
            out.ts_us.tolist(),
            out.value.tolist(),
            out.quality.tolist(),
            strict=True,
        )
    )
    assert got == [
        (1, 30_000, 1, 5.5, 0),
        (3, 1, 20, 1.5, 1),
        (3, 1, 5, 3.5, 0),
        (7, 1, 10, 2.5, 0),
        (7, 2, 10, 0.5, 0),
        (70_000, 0, 1, 4.5, 0),
    ]


def test_newest_per_device_of_sorted_rows_equals_the_general_path() -> None:
    import numpy as np

    from storage.rows import RowArrays
    from storage.writer import key_order

    rng = np.random.default_rng(17)
    for n in (1, 2, 50, 5_000):
        r = RowArrays(
            rng.integers(0, max(2, n // 3), n).astype(np.int32),
            rng.integers(0, 5, n).astype(np.int16),
            rng.integers(0, 10**15, n).astype(np.int64),
            rng.random(n),
            np.zeros(n, np.int16),
        )
        general = newest_per_device(r)  # shuffled: the lexsort path
        fast = newest_per_device(key_order(r))  # in device order: one run per device
        assert fast[0].tolist() == general[0].tolist()
        assert fast[1].tolist() == general[1].tolist()


def test_binary_arrays_are_postgres_binary_array_format() -> None:
    import numpy as np

    from storage.writer import int4_array, int8_array

    data = int4_array(np.array([1, -2, 2**31 - 1], np.int32))
    ndim, flags, oid, n, lower = struct.unpack_from(">iiIii", data)
    assert (ndim, flags, oid, n, lower) == (1, 0, 23, 3, 1)
    assert struct.unpack_from(">ii ii ii", data, 20) == (4, 1, 4, -2, 4, 2**31 - 1)
    assert len(data) == 20 + 3 * 8
    data8 = int8_array([2**62, -1])
    assert struct.unpack_from(">iiIii", data8) == (1, 0, 20, 2, 1)
    assert struct.unpack_from(">iq iq", data8, 20) == (8, 2**62, 8, -1)
    assert int4_array(np.zeros(0, np.int32)) == struct.pack(">iiI", 0, 0, 23)


def test_key_order_equals_a_stable_sort_by_device_and_metric_on_both_paths() -> None:
    import numpy as np

    from storage.rows import RowArrays
    from storage.writer import key_order

    rng = np.random.default_rng(11)
    cases = [
        (0, 50, 0, 4),  # small ids: device, metric and row number packed into one int64
        (0, 2**31 - 1, 0, 2**15 - 1),  # too wide to pack: the stable argsort
        (-5, 5, 0, 3),  # a negative device_pk: the stable argsort
    ]
    for lo_d, hi_d, lo_m, hi_m in cases:
        n = 2_000
        r = RowArrays(
            rng.integers(lo_d, hi_d, n, endpoint=True).astype(np.int32),
            rng.integers(lo_m, hi_m, n, endpoint=True).astype(np.int16),
            np.arange(n, dtype=np.int64),  # the row number: shows the order of equal keys
            rng.random(n),
            np.zeros(n, np.int16),
        )
        expected = sorted(range(n), key=lambda i: (int(r.device_pk[i]), int(r.metric_id[i])))
        assert key_order(r).ts_us.tolist() == expected


def test_the_sinks_kept_buffer_gives_each_batch_the_stream_of_its_own() -> None:
    """One CopyStream for batches of varying size (smaller after larger, the kept buffer's
    size, larger than it may keep): each stream is exactly copy_payload's, so the trailer
    of a smaller batch left in the buffer never reaches the next one's rows."""
    rng = random.Random(23)
    stream = CopyStream(keep_rows=500)

    def batch(n: int) -> Rows:
        return rows(
            *[
                (rng.randrange(2**31), rng.randrange(2**15), rng.randrange(2**62), 0.5, 1)
                for _ in range(n)
            ]
        )

    for n in (300, 10, 0, 299, 300, 1, 450, 1000, 450, 17, 500, 499):
        r = batch(n)
        got = stream.payload(r)
        assert bytes(got) == bytes(payload(r)), n
        assert len(parse_copy(got)) == n
