"""The sink logs its own liveness changes (migration 067, storage/writer.py) on the real
PostgreSQL:

* one change-log row per liveness statement of the sink, holding every device it wrote with
  its newest time, however the statement splits into inserts and updates (the triggers of
  migration 062 wrote one row per kind of change);
* the trigger skips only a transaction that says it logged itself: any other writer is
  still logged, and the flag ends with its transaction;
* the incremental coverage fed by the sink's log equals a full recomputation after random
  writes, late data and redeliveries.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from psycopg_pool import ConnectionPool

from qilu.catalog import load_catalog
from qilu.contract import to_us
from qilu.registry import generate
from qilu.settings import DatabaseSettings, Settings, StorageMode
from storage import coverage
from storage.coverage_incremental import IncrementalCoverage
from storage.db import connect
from storage.registry_store import load_registry
from storage.rows import RowArrays
from storage.writer import ReadingsSink
from tests.helpers import scalar
from tests.integration.test_storage_postgres import Fleet

pytestmark = pytest.mark.integration


def log_rows(db: DatabaseSettings) -> list[dict[int, int]]:
    with connect(db) as conn:
        rows = conn.execute("SELECT devices, seen_us FROM liveness_changes ORDER BY at").fetchall()
    return [dict(zip(d, s, strict=True)) for d, s in rows]


def newest_stored(db: DatabaseSettings) -> dict[int, int]:
    with connect(db) as conn:
        rows = conn.execute("SELECT device_pk, max(ts) FROM readings GROUP BY 1").fetchall()
    return {d: to_us(t) for d, t in rows}


def test_one_log_row_per_sink_statement_with_every_device_it_wrote(
    db: DatabaseSettings, sink_pool: ConnectionPool
) -> None:
    fleet = Fleet(db)
    devices = sorted(fleet.pk)[:3]
    a, b, c = (fleet.pk[d] for d in devices)
    sink = ReadingsSink(sink_pool, mode=StorageMode.POSTGRES)
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    sink.add(fleet.rows(devices[:2], t0, minutes=1))  # a and b: inserted
    sink.flush()
    # a moves forward (an update), c is new (an insert), b is redelivered (nothing moves):
    # one statement, one log row with all three
    sink.add(fleet.rows(devices[:1], t0 + timedelta(minutes=1), minutes=1))
    sink.add(fleet.rows(devices[2:], t0, minutes=1))
    sink.add(fleet.rows(devices[1:2], t0, minutes=1))
    sink.flush()
    rows = log_rows(db)
    stored = newest_stored(db)
    assert len(rows) == 2
    assert set(rows[0]) == {a, b}
    assert rows[1] == {a: stored[a], b: stored[b], c: stored[c]}


def test_a_sink_not_logging_itself_leaves_the_log_to_the_triggers(
    db: DatabaseSettings, sink_pool: ConnectionPool
) -> None:
    # self_logged_liveness=False (the sink as it was, for bench/sink_cost.py): the triggers of
    # migration 062 log what moved, one row per kind of change, the redelivery not at all
    fleet = Fleet(db)
    devices = sorted(fleet.pk)[:3]
    a, b, c = (fleet.pk[d] for d in devices)
    sink = ReadingsSink(sink_pool, mode=StorageMode.POSTGRES, self_logged_liveness=False)
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    sink.add(fleet.rows(devices[:2], t0, minutes=1))
    sink.flush()
    sink.add(fleet.rows(devices[:1], t0 + timedelta(minutes=1), minutes=1))
    sink.add(fleet.rows(devices[2:], t0, minutes=1))
    sink.add(fleet.rows(devices[1:2], t0, minutes=1))
    sink.flush()
    stored = newest_stored(db)
    rows = log_rows(db)
    assert set(rows[0]) == {a, b}
    assert sorted(map(sorted, rows[1:])) == sorted([[a], [c]])
    assert {k: v for r in rows[1:] for k, v in r.items()} == {a: stored[a], c: stored[c]}
    with connect(db) as conn:
        live: dict[int, datetime] = dict(
            conn.execute("SELECT device_pk, last_seen FROM device_liveness").fetchall()
        )
    assert {d: to_us(t) for d, t in live.items()} == stored


def test_other_writers_are_logged_by_the_trigger_and_the_flag_ends_with_its_transaction(
    db: DatabaseSettings,
) -> None:
    fleet = Fleet(db)
    a, b = sorted(fleet.pk.values())[:2]
    seen = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    upsert = (
        "INSERT INTO device_liveness (device_pk, last_seen) VALUES (%s, %s)"
        " ON CONFLICT (device_pk) DO UPDATE SET last_seen = EXCLUDED.last_seen"
    )
    with connect(db) as conn:
        with conn.transaction():  # a writer that logs itself: the trigger stays out
            conn.execute("SELECT set_config('qilu.liveness_logged', 'on', true)")
            conn.execute(upsert, (a, seen))
        assert scalar(db, "SELECT count(*) FROM liveness_changes") == 0
        with conn.transaction():  # the same session, a new transaction: logged again
            conn.execute(upsert, (b, seen))
            conn.execute(upsert, (a, seen + timedelta(seconds=1)))
    assert log_rows(db) == [{b: to_us(seen)}, {a: to_us(seen + timedelta(seconds=1))}]


# as test_coverage_incremental.py, with the sink as the writer
def test_incremental_coverage_from_the_sinks_log_equals_full(settings: Settings) -> None:
    catalog = load_catalog()
    rng = random.Random(67)
    with connect(settings.db) as conn:
        load_registry(conn, generate(seed=5, scale=0.01))
        pks = [r[0] for r in conn.execute("SELECT device_pk FROM devices ORDER BY 1")]
        metric = int(conn.execute("SELECT min(metric_id) FROM metrics").fetchone()[0])  # type: ignore[index]
    sink_pool = ConnectionPool(
        settings.db.conninfo(),
        min_size=1,
        max_size=1,
        kwargs={"prepare_threshold": None},
        open=True,
    )
    sink = ReadingsSink(sink_pool, mode=StorageMode.POSTGRES)
    now = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    redelivery: RowArrays | None = None

    def write(n: int) -> RowArrays:
        chosen = np.array(rng.sample(pks, n), np.int32)
        # recent readings, late ones (older than what is stored), ones ahead of now
        ts = np.array(
            [to_us(now - timedelta(seconds=rng.uniform(-20, 1200))) for _ in chosen], np.int64
        )
        rows = RowArrays(
            chosen,
            np.full(n, metric, np.int16),
            ts,
            np.arange(n, dtype=np.float64),
            np.zeros(n, np.int16),
        )
        sink.add(rows)
        sink.flush()
        return rows

    try:
        write(len(pks) // 2)
        inc = IncrementalCoverage(catalog)
        incremental = 0
        with connect(settings.db, autocommit=True) as conn:
            for i in range(25):
                now += timedelta(seconds=rng.choice([0, 1, 1, 5, 61, 181]))
                now += timedelta(microseconds=rng.randrange(1_000_000))
                if i % 5 == 4 and redelivery is not None:
                    sink.add(redelivery)  # stored already: nothing moves, logged anyway
                    assert sink.flush().inserted == 0
                else:
                    redelivery = write(rng.randrange(1, 200))
                got = inc.compute(conn, now)
                assert inc.last is not None
                incremental += not inc.last.full
                want = coverage.compute(conn, catalog, now)
                assert [(f.target.id, f.province, f.cities) for f in got] == [
                    (f.target.id, f.province, f.cities) for f in want
                ], i
    finally:
        sink_pool.close()
    assert incremental >= 23  # the first computation (and a new province day) in full
    # every sink transaction logged itself, the triggers nothing on top
    assert scalar(settings.db, "SELECT count(*) FROM liveness_changes") == 26
