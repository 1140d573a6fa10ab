"""The sink's batch in key order and its binary array parameters, on the real PostgreSQL
(storage/writer.py; docs/adr/0008-ingest-write-path.md, "Amended (issue 17, session 6)"):

* a batch handed over in any order is stored in key order (device, metric): the heap holds
  it so, which is what makes the primary key's index take it page after page;
* the binary ``int4[]`` / ``int8[]`` parameters reach the server exactly, extremes included;
* liveness written from them is the newest reading per device, moving only forward.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from psycopg_pool import ConnectionPool

from qilu.contract import to_us
from qilu.settings import DatabaseSettings, StorageMode
from storage.db import connect
from storage.rows import RowArrays
from storage.writer import ReadingsSink, int4_array, int8_array
from tests.integration.test_storage_postgres import Fleet

pytestmark = pytest.mark.integration


def test_a_shuffled_batch_is_stored_in_key_order(
    db: DatabaseSettings, sink_pool: ConnectionPool
) -> None:
    fleet = Fleet(db)
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    rows = RowArrays.of(fleet.rows(sorted(fleet.pk), start, minutes=5))
    order = np.random.default_rng(3).permutation(len(rows))
    shuffled = RowArrays(
        rows.device_pk[order],
        rows.metric_id[order],
        rows.ts_us[order],
        rows.value[order],
        rows.quality[order],
    )
    sink = ReadingsSink(sink_pool, mode=StorageMode.POSTGRES)
    sink.add(shuffled)
    assert sink.flush().inserted == len(rows)
    with connect(db) as conn:
        # one hour's partition: the heap's order is the order the COPY sent the rows in
        stored = conn.execute(
            "SELECT device_pk, metric_id, ts FROM readings WHERE ts >= %s AND ts < %s"
            " ORDER BY tableoid, ctid",
            (start, start.replace(minute=59, second=59)),
        ).fetchall()
    keys = [(d, m) for d, m, _ in stored]
    assert len(keys) == len(rows)
    assert keys == sorted(keys)
    # a device's reports of one metric keep the order they were handed over in
    handed: dict[tuple[int, int], list[int]] = {}
    for d, m, t in zip(
        shuffled.device_pk.tolist(),
        shuffled.metric_id.tolist(),
        shuffled.ts_us.tolist(),
        strict=True,
    ):
        handed.setdefault((d, m), []).append(t)
    kept: dict[tuple[int, int], list[int]] = {}
    for d, m, t in stored:
        kept.setdefault((d, m), []).append(to_us(t))
    assert kept == handed


def test_binary_arrays_reach_the_server_exactly(db: DatabaseSettings) -> None:
    devs = np.array([0, 1, -7, 2**31 - 1, -(2**31)], np.int32)
    stamps = [0, -1, 2**63 - 1, -(2**63), 1_796_608_755_524_509]
    with connect(db) as conn:
        row = conn.execute(
            "SELECT %b::int4[], %b::int8[], %b::int4[], cardinality(%b::int8[])",
            (int4_array(devs), int8_array(stamps), int4_array(devs[:0]), int8_array([])),
        ).fetchone()
    assert row == (devs.tolist(), stamps, [], 0)


def test_liveness_from_binary_arrays_is_the_newest_and_moves_only_forward(
    db: DatabaseSettings, sink_pool: ConnectionPool
) -> None:
    fleet = Fleet(db)
    start = datetime.now(UTC).replace(second=0, microsecond=0)
    rows = fleet.rows(sorted(fleet.pk), start, minutes=2)
    sink = ReadingsSink(sink_pool, mode=StorageMode.POSTGRES)
    sink.add(rows)
    sink.flush()
    newest: dict[int, int] = {}
    for d, t in zip(rows.device_pk, rows.ts_us, strict=True):
        newest[d] = max(newest.get(d, t), t)
    # an older batch (late data) of every device moves nothing
    late = fleet.rows(sorted(fleet.pk), start.replace(minute=(start.minute + 59) % 60), 1)
    late.ts_us[:] = [t - 3_600_000_000 for t in late.ts_us]
    sink.add(late)
    sink.flush()
    with connect(db) as conn:
        stored: dict[int, datetime] = dict(
            conn.execute("SELECT device_pk, last_seen FROM device_liveness").fetchall()
        )
        logged = conn.execute(
            "SELECT devices, seen_us FROM liveness_changes ORDER BY at LIMIT 1"
        ).fetchone()
    assert {d: to_us(t) for d, t in stored.items()} == newest
    assert logged is not None
    assert dict(zip(logged[0], logged[1], strict=True)) == newest


def test_a_sink_not_key_ordered_keeps_the_order_it_was_given(
    db: DatabaseSettings, sink_pool: ConnectionPool
) -> None:
    """``key_ordered=False`` is bench/sink_cost.py's sink as it was (the "_arrival" variants)."""
    fleet = Fleet(db)
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    rows = RowArrays.of(fleet.rows(sorted(fleet.pk), start, minutes=5))
    order = np.random.default_rng(4).permutation(len(rows))
    sink = ReadingsSink(sink_pool, mode=StorageMode.POSTGRES, key_ordered=False)
    sink.add(
        RowArrays(
            rows.device_pk[order],
            rows.metric_id[order],
            rows.ts_us[order],
            rows.value[order],
            rows.quality[order],
        )
    )
    sink.flush()
    with connect(db) as conn:
        stored = conn.execute(
            "SELECT device_pk, metric_id, ts FROM readings ORDER BY tableoid, ctid"
        ).fetchall()
    given = list(
        zip(
            rows.device_pk[order].tolist(),
            rows.metric_id[order].tolist(),
            rows.ts_us[order].tolist(),
            strict=True,
        )
    )
    assert [(d, m, to_us(t)) for d, m, t in stored] == given


def test_the_sink_prepares_its_statements_and_gives_the_connection_back_as_it_was(
    db: DatabaseSettings, sink_pool: ConnectionPool
) -> None:
    """With the COPY method (a real PostgreSQL) the batch's statements are prepared once per
    connection; the sink_pool's connections otherwise do not prepare (storage/db.py)."""
    fleet = Fleet(db)
    start = datetime.now(UTC).replace(second=0, microsecond=0)
    sink = ReadingsSink(sink_pool, mode=StorageMode.POSTGRES)
    for minute in range(3):
        sink.add(fleet.rows(sorted(fleet.pk), start.replace(minute=minute), minutes=1))
        sink.flush()
    with sink_pool.connection() as conn:  # the sink_pool's one connection: the sink's
        assert conn.prepare_threshold is None
        prepared = [
            str(q)
            for (q,) in conn.execute("SELECT statement FROM pg_prepared_statements").fetchall()
        ]
    assert any("INSERT INTO device_liveness" in q for q in prepared)
    assert any("INSERT INTO rollup_invalidations" in q for q in prepared)
    assert any("set_config('statement_timeout'" in q for q in prepared)
    assert sum("INSERT INTO device_liveness" in q for q in prepared) == 1  # once, not per batch
