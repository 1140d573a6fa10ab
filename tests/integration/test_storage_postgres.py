"""Storage in postgres mode on the real PostgreSQL 15: partitions, rollups, exactly once,
late data, the coverage series, least privilege, backpressure and a database restart.

Each test gets a fresh migrated database (tests/integration/conftest.py). Readings are stored
by the real writer; rollups are refreshed by the real maintenance function and compared with a
recomputation from the raw rows (storage.verify) and with hand-computed values.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import errors as pgerrors
from psycopg import sql
from psycopg_pool import ConnectionPool
from pydantic import SecretStr

from ops.services import Services
from qilu.catalog import load_catalog
from qilu.contract import Envelope, Reading, Sector, to_us
from qilu.ports import free_port
from qilu.registry import Device, Registry, Site
from qilu.settings import REPO_ROOT, DatabaseSettings, ServicesSettings, Settings, StorageMode
from storage import coverage, maintain, verify
from storage import mode as modes
from storage.db import connect
from storage.registry_store import load_device_index, load_registry
from storage.rows import Rows
from storage.writer import ReadingsSink, WriteMethod
from stream.topics import readings_topic
from tests.helpers import scalar, signing_headers, wait_for

pytestmark = pytest.mark.integration
QINGDAO, JINAN = "370200", "370100"

LOGICAL = {
    "readings": {
        "device_pk": "integer",
        "metric_id": "smallint",
        "ts": "timestamp with time zone",
        "value": "double precision",
        "quality": "smallint",
    },
    "device_liveness": {"device_pk": "integer", "last_seen": "timestamp with time zone"},
    "readings_1m": {
        "device_pk": "integer",
        "metric_id": "smallint",
        "bucket": "timestamp with time zone",
        "n": "bigint",
        "min": "double precision",
        "max": "double precision",
        "avg": "double precision",
        "last": "double precision",
    },
    "site_liveness_1h": {
        "site_id": "text",
        "bucket": "timestamp with time zone",
        "devices_reporting": "integer",
        "readings": "bigint",
    },
    "coverage_daily": {
        "day": "date",
        "target_id": "text",
        "city_code": "text",
        "numerator": "integer",
        "denominator": "integer",
        "value": "double precision",
    },
}
LOGICAL["readings_1h"] = LOGICAL["readings_1m"]


def registry() -> Registry:
    reg = Registry()
    reg.sites += [
        Site("CHG-Q-1", Sector.CHARGING, QINGDAO, "Q1", public=True, networked=True),
        Site("CHG-J-1", Sector.CHARGING, JINAN, "J1", public=True, networked=True),
        Site("SUB-J-1", Sector.SUBSTATION, JINAN, "JS1", voltage_kv=220),
    ]
    reg.devices += [Device(f"CHG-Q-1-{i:02d}", "CHG-Q-1", "charging_pile") for i in range(1, 5)]
    reg.devices += [Device(f"CHG-J-1-{i:02d}", "CHG-J-1", "charging_pile") for i in range(1, 3)]
    reg.devices += [
        Device("SUB-J-1-01", "SUB-J-1", "transformer"),
        Device("SUB-J-1-02", "SUB-J-1", "bus_meter"),
    ]
    return reg


class Fleet:
    """The test registry in the database and a generator of readings for it."""

    def __init__(self, db: DatabaseSettings) -> None:
        with connect(db) as conn:
            load_registry(conn, registry())
            idx = load_device_index(conn)
        self.pk = {dev: pk for dev, (pk, _kind) in idx.devices.items()}
        self.metric = idx.metrics

    def rows(
        self,
        devices: list[str],
        start: datetime,
        minutes: float,
        step_s: float = 20,
        metrics: tuple[str, ...] = ("power_kw", "energy_kwh"),
        value0: float = 0.0,
    ) -> Rows:
        out = Rows()
        t0 = to_us(start)
        steps = int(minutes * 60 / step_s)
        for dev in devices:
            for i in range(steps):
                for k, metric in enumerate(metrics):
                    out.device_pk.append(self.pk[dev])
                    out.metric_id.append(self.metric[metric])
                    out.ts_us.append(t0 + int(i * step_s * 1_000_000) + self.pk[dev])
                    out.value.append(value0 + i + 0.5 * k + self.pk[dev] / 8)
                    out.quality.append(0)
        return out


@pytest.fixture
def fleet(db: DatabaseSettings) -> Fleet:
    return Fleet(db)


def write(sink_pool: ConnectionPool, rows: Rows, **kw: object) -> int:
    sink = ReadingsSink(sink_pool, mode=StorageMode.POSTGRES, **kw)  # type: ignore[arg-type]
    sink.add(rows)
    return sink.flush().inserted


def refresh(db: DatabaseSettings, now: datetime | None = None) -> dict[str, object]:
    with connect(db) as conn:
        return maintain.refresh_rollups_postgres(conn, Settings().storage, now or datetime.now(UTC))


def assert_rollups_equal_raw(db: DatabaseSettings, lo: datetime, hi: datetime) -> None:
    with connect(db) as conn:
        result = verify.compare(conn, lo, hi)
    assert result.buckets["readings_1m"] > 0
    assert result.equal, "\n".join(map(str, result.mismatches[:10]))


def hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def test_migration_records_the_mode_and_creates_the_logical_relations(
    db: DatabaseSettings,
) -> None:
    with connect(db) as conn:
        assert modes.recorded(conn) is StorageMode.POSTGRES
        got: dict[str, dict[str, str]] = {}
        for table, column, dtype in conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ANY(%s)",
            (list(LOGICAL),),
        ):
            got.setdefault(table, {})[column] = dtype
        pk = conn.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = 'readings'::regclass AND contype = 'p'"
        ).fetchone()
        kind = conn.execute("SELECT relkind FROM pg_class WHERE relname = 'readings'").fetchone()
        # hours ahead exist, so the first batches never wait for a partition
        ahead = conn.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'readings'::regclass"
        ).fetchone()
        # forcing the other mode on this database is refused, naming the key
        with pytest.raises(Exception, match=r"db\.mode"):
            modes.resolve(conn, StorageMode.TIMESCALE)
    # every column of ADR 0002 with its type (implementation columns may come on top)
    assert {t: {c: got.get(t, {}).get(c) for c in cols} for t, cols in LOGICAL.items()} == LOGICAL
    assert pk is not None
    assert pk[0] == "PRIMARY KEY (device_pk, metric_id, ts)"
    assert kind is not None
    assert kind[0] == "p"
    assert ahead is not None
    assert ahead[0] >= 48


def test_partitions_on_demand_for_late_data_and_dropped_by_retention(
    db: DatabaseSettings, fleet: Fleet, sink_pool: ConnectionPool
) -> None:
    now = datetime.now(UTC)
    old = fleet.rows(["CHG-Q-1-01"], now - timedelta(days=40), minutes=5)
    week = fleet.rows(["CHG-Q-1-01"], now - timedelta(days=6), minutes=5)
    assert write(sink_pool, old) == len(old)  # no partition existed 40 days back: created
    assert write(sink_pool, week) == len(week)
    with connect(db) as conn:
        dropped = maintain.drop_expired_partitions(conn, Settings().storage, now)
        left = conn.execute("SELECT min(ts), count(*) FROM readings").fetchone()
    assert dropped
    assert all(name.startswith("readings_p") for name in dropped)
    assert left is not None
    assert left[1] == len(week)  # the 40-day-old rows went with their partition
    assert left[0] > now - timedelta(days=30)

    # one implausibly old (but valid) reading among live ones creates one partition for its
    # own hour, not one per hour in between
    before = scalar(db, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'readings'::regclass")
    mixed = fleet.rows(["CHG-Q-1-02"], now - timedelta(minutes=5), minutes=2)
    mixed.extend(fleet.rows(["CHG-Q-1-03"], datetime(2001, 5, 1, tzinfo=UTC), minutes=0.4))
    assert write(sink_pool, mixed) == len(mixed)
    after = scalar(db, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'readings'::regclass")
    assert after - before <= 2  # the 2001 hour (and at most one new current hour)


def test_redelivery_stores_nothing_twice_and_rollups_do_not_double_count(
    db: DatabaseSettings, fleet: Fleet, sink_pool: ConnectionPool
) -> None:
    now = datetime.now(UTC)
    start = hour(now) - timedelta(hours=2)
    batch = fleet.rows(["CHG-Q-1-01", "CHG-Q-1-02", "SUB-J-1-01"], start, minutes=90)
    assert write(sink_pool, batch) == len(batch)
    refresh(db, now)
    with connect(db) as conn:
        before = conn.execute(
            "SELECT sum(n), sum(avg * n) FROM readings_1h WHERE bucket >= %s", (start,)
        ).fetchone()
        liveness = conn.execute("SELECT sum(extract(epoch FROM last_seen)) FROM device_liveness")
        live_before = liveness.fetchone()
    # the same batch again, plus one new reading: only the new one is stored
    again = fleet.rows(["CHG-Q-1-01", "CHG-Q-1-02", "SUB-J-1-01"], start, minutes=90)
    extra = fleet.rows(["CHG-J-1-01"], start + timedelta(minutes=1), minutes=0.4)
    again.extend(extra)
    sink = ReadingsSink(sink_pool, mode=StorageMode.POSTGRES)
    sink.add(again)
    result = sink.flush()
    assert (result.inserted, result.duplicates) == (len(extra), len(batch))
    # a second redelivery in a row takes the staging path directly, still exact
    sink.add(fleet.rows(["CHG-Q-1-01"], start, minutes=10))
    assert sink.flush().inserted == 0
    refresh(db, now + timedelta(seconds=1))
    with connect(db) as conn:
        after = conn.execute(
            "SELECT sum(n), sum(avg * n) FROM readings_1h WHERE bucket >= %s", (start,)
        ).fetchone()
        live_after = conn.execute(
            "SELECT sum(extract(epoch FROM last_seen)) FROM device_liveness WHERE device_pk <> %s",
            (fleet.pk["CHG-J-1-01"],),
        ).fetchone()
    assert before is not None
    assert after is not None
    assert after[0] == before[0] + len(extra)
    assert after[1] == pytest.approx(before[1] + sum(extra.value))
    assert live_after == live_before
    assert scalar(db, "SELECT count(*) FROM readings") == len(batch) + len(extra)
    assert_rollups_equal_raw(db, start, hour(now) + timedelta(hours=1))


def test_rollups_equal_hand_computed_values(
    db: DatabaseSettings, fleet: Fleet, sink_pool: ConnectionPool
) -> None:
    start = hour(datetime.now(UTC)) - timedelta(hours=3)
    pk = fleet.pk["CHG-Q-1-03"]
    rows = Rows()
    for sec, value in ((5, 4.0), (50, 1.0), (20, 10.0), (65, 7.0)):  # out of order on purpose
        rows.device_pk.append(pk)
        rows.metric_id.append(fleet.metric["power_kw"])
        rows.ts_us.append(to_us(start + timedelta(seconds=sec)))
        rows.value.append(value)
        rows.quality.append(0)
    write(sink_pool, rows)
    refresh(db)
    with connect(db) as conn:
        m = conn.execute(
            "SELECT bucket, n, min, max, avg, last FROM readings_1m"
            " WHERE device_pk = %s ORDER BY bucket",
            (pk,),
        ).fetchall()
        h = conn.execute(
            "SELECT n, min, max, avg, last FROM readings_1h WHERE device_pk = %s", (pk,)
        ).fetchall()
        s = conn.execute(
            "SELECT devices_reporting, readings FROM site_liveness_1h"
            " WHERE site_id = 'CHG-Q-1' AND bucket = %s",
            (start,),
        ).fetchall()
    assert m == [
        (start, 3, 1.0, 10.0, 5.0, 1.0),  # 5 s: 4, 20 s: 10, 50 s: 1 -> last = 1
        (start + timedelta(minutes=1), 1, 7.0, 7.0, 7.0, 7.0),
    ]
    assert h == [(4, 1.0, 10.0, 5.5, 7.0)]
    assert s == [(1, 4)]


def test_ranged_rollup_reads_equal_the_views_and_plan_only_their_partitions(
    db: DatabaseSettings, fleet: Fleet, sink_pool: ConnectionPool
) -> None:
    """qilu_readings_1m/1h(from, to) (what the API reads) return the views' rows of the range,
    across the store and the live tail above the watermark, with unaligned bounds; and the
    planner keeps only the partitions of the range (the views keep every partition)."""
    now = datetime.now(UTC)
    start = hour(now) - timedelta(hours=5)
    devs = ["CHG-Q-1-01", "CHG-J-1-01"]
    write(sink_pool, fleet.rows(devs, start, minutes=5 * 60, step_s=30))
    refresh(db, start + timedelta(hours=2, minutes=30))  # store below, live tail above
    pk = fleet.pk["CHG-Q-1-01"]
    cases = [
        ("1m", start, start + timedelta(hours=5)),
        ("1m", start + timedelta(seconds=30), start + timedelta(hours=3, seconds=1)),
        ("1m", start + timedelta(hours=2, minutes=29), start + timedelta(hours=2, minutes=31)),
        ("1h", start, start + timedelta(hours=5)),
        ("1h", start + timedelta(minutes=1), start + timedelta(hours=4, minutes=59)),
    ]
    with connect(db) as conn:
        wm = conn.execute("SELECT min(watermark) FROM rollup_state").fetchone()
        assert wm is not None
        assert start < wm[0] < start + timedelta(hours=5)
        for res, lo, hi in cases:
            cols = "device_pk, metric_id, bucket, n, min, max, avg, last"
            view = conn.execute(
                f"SELECT {cols} FROM readings_{res}"  # noqa: S608 - fixed names
                " WHERE bucket >= %s AND bucket < %s ORDER BY 1, 2, 3",
                (lo, hi),
            ).fetchall()
            ranged = conn.execute(
                f"SELECT {cols} FROM qilu_readings_{res}(%s, %s) ORDER BY 1, 2, 3",  # noqa: S608
                (lo, hi),
            ).fetchall()
            assert view, (res, lo, hi)
            assert ranged == view, (res, lo, hi)
        # pruning: a 2-hour range plans 2-3 raw partitions (of the 53 that exist) and the
        # day's store partition; the view plans all of them
        n_raw = scalar(
            db, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'readings'::regclass"
        )
        assert n_raw >= 48

        def planned(query: str, params: tuple[object, ...]) -> list[str]:
            plan = conn.execute(("EXPLAIN (FORMAT JSON) " + query).encode(), params).fetchone()
            assert plan is not None
            names: list[str] = []

            def walk(node: dict[str, object]) -> None:
                if isinstance(node.get("Relation Name"), str):
                    names.append(str(node["Relation Name"]))
                for child in node.get("Plans", []):  # type: ignore[attr-defined]
                    walk(child)

            walk(plan[0][0]["Plan"])
            return names

        lo, hi = start + timedelta(hours=1), start + timedelta(hours=3)
        fn = planned("SELECT * FROM qilu_readings_1m(%s, %s) WHERE device_pk = %s", (lo, hi, pk))
        raw = [n for n in fn if n.startswith("readings_p")]
        assert 1 <= len(raw) <= 3, fn
        assert len([n for n in fn if n.startswith("readings_1m_store_p")]) <= 2, fn
        view_plan = planned(
            "SELECT * FROM readings_1m WHERE device_pk = %s AND bucket >= %s AND bucket < %s",
            (pk, lo, hi),
        )
        assert len([n for n in view_plan if n.startswith("readings_p")]) >= 48


def test_late_data_reaches_the_rollups_within_one_refresh(
    db: DatabaseSettings, fleet: Fleet, sink_pool: ConnectionPool
) -> None:
    now = datetime.now(UTC)
    lo = hour(now) - timedelta(days=7)
    hi = hour(now) + timedelta(hours=1)
    live = ["CHG-Q-1-01", "CHG-Q-1-02", "CHG-J-1-01", "SUB-J-1-01"]
    write(sink_pool, fleet.rows(live, now - timedelta(hours=3), minutes=170))
    first = refresh(db, now)
    assert first["watermark_1m"] is not None
    assert_rollups_equal_raw(db, lo, hi)

    # a device offline for almost 7 days uploads its backlog, another one 40 minutes
    backlog = fleet.rows(["CHG-Q-1-04"], now - timedelta(days=6, hours=23), minutes=180)
    backlog.extend(fleet.rows(["SUB-J-1-02"], now - timedelta(minutes=40), minutes=30))
    # ... partly redelivered, and interleaved with a duplicate of already stored live data
    backlog.extend(fleet.rows(["CHG-Q-1-01"], now - timedelta(hours=3), minutes=5))
    write(sink_pool, backlog)
    second = refresh(db, now + timedelta(seconds=5))
    # the late data was recomputed per device, not for every device of those hours
    assert second["ranges_one_device_1m"] >= 2
    assert second["ranges_all_devices_1m"] <= 1
    assert_rollups_equal_raw(db, lo, hi)
    with connect(db) as conn:
        got = conn.execute(
            "SELECT sum(n) FROM readings_1h WHERE device_pk = %s", (fleet.pk["CHG-Q-1-04"],)
        ).fetchone()
    assert got is not None
    assert got[0] == 180 * 3 * 2


def test_rows_committed_while_a_refresh_passes_them_are_picked_up_next_cycle(
    db: DatabaseSettings, fleet: Fleet, sink_pool: ConnectionPool
) -> None:
    """A writer's transaction is open while the refresher advances the watermark over its
    rows; the invalidation it recorded in the same transaction brings them in next time."""
    t0 = hour(datetime.now(UTC)) - timedelta(hours=1)
    write(sink_pool, fleet.rows(["CHG-Q-1-01"], t0, minutes=10))
    refresh(db, t0 + timedelta(minutes=10))  # watermark_1m = t0 + 9 min
    pk = fleet.pk["CHG-Q-1-02"]
    ts = t0 + timedelta(minutes=12)
    with connect(db) as writer:
        # what the sink does in one transaction: rows, then the invalidation it classified
        # as live (at or after the watermark)
        writer.execute("INSERT INTO readings VALUES (%s, 1, %s, 42, 0)", (pk, ts))
        writer.execute("INSERT INTO rollup_invalidations VALUES (NULL, %s, %s)", (ts, ts))
        refresh(db, t0 + timedelta(minutes=30))  # advances over ts without seeing the row
        writer.commit()
    with connect(db) as conn:
        early = verify.compare(conn, t0, t0 + timedelta(hours=1))
    assert not early.equal  # the store missed the row for one cycle ...
    refresh(db, t0 + timedelta(minutes=31))
    assert_rollups_equal_raw(db, t0, t0 + timedelta(hours=1))  # ... and has it now


def test_coverage_daily_is_a_series_one_row_per_target_city_and_day(
    db: DatabaseSettings, fleet: Fleet, sink_pool: ConnectionPool
) -> None:
    catalog = load_catalog()
    now = datetime.now(UTC)
    write(sink_pool, fleet.rows(["CHG-Q-1-01", "CHG-Q-1-02", "CHG-J-1-01"], now, minutes=0.5))
    tomorrow = now + timedelta(days=1)
    with connect(db) as conn:
        assert coverage.latest(conn, catalog) is None
        n1 = coverage.snapshot(conn, catalog, now)
        served = coverage.latest(conn, catalog)
        live = coverage.compute(conn, catalog, now)
        assert served is not None
        assert [(t.target.id, t.as_of, t.province, t.cities) for t in served] == [
            (t.target.id, t.as_of, t.province, t.cities) for t in live
        ]
        n1_again = coverage.snapshot(conn, catalog, now + timedelta(seconds=1))
        n2 = coverage.snapshot(conn, catalog, tomorrow)  # nothing reports by then
        # an older snapshot of a day does not overwrite a newer one
        coverage.snapshot(conn, catalog, tomorrow - timedelta(seconds=30))
        series = conn.execute(
            "SELECT day, numerator, denominator, value FROM coverage_daily"
            " WHERE target_id = 'charging-public-piles-2024' AND city_code = %s ORDER BY day",
            (QINGDAO,),
        ).fetchall()
        province = conn.execute(
            "SELECT numerator FROM coverage_daily WHERE target_id = 'charging-public-piles-2024'"
            " AND city_code = '370000' ORDER BY day"
        ).fetchall()
        rows = scalar(db, "SELECT count(*) FROM coverage_daily")
    per_day = len(catalog.targets) * (len(catalog.city_codes) + 1)
    assert n1 == n1_again == n2 == per_day
    assert rows == 2 * per_day
    assert [r[0] for r in series] == [
        coverage.province_day(now),
        coverage.province_day(tomorrow),
    ]
    assert [r[1:] for r in series] == [(2, 4, 2.0), (0, 4, 0.0)]
    assert [r[0] for r in province] == [3, 0]


def _as_ingest(conn: psycopg.Connection[psycopg.rows.TupleRow]) -> None:
    conn.execute("SET ROLE qilu_ingest")
    conn.commit()


def test_roles_have_least_privilege(db: DatabaseSettings, fleet: Fleet) -> None:
    def as_role(role: str) -> psycopg.Connection[psycopg.rows.TupleRow]:
        conn = connect(db, autocommit=True)
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        return conn

    def denied(conn: psycopg.Connection[psycopg.rows.TupleRow], query: str) -> bool:
        try:
            conn.execute(query.encode())
        except pgerrors.InsufficientPrivilege:
            return True
        return False

    # ingest: the real writer, connected as qilu_ingest, stores a batch (COPY path; liveness
    # coalesced per kind, logged by the sink itself) and a redelivery (staging path); it may
    # not read the registry's sites or delete anything
    ingest_pool = ConnectionPool(
        db.conninfo(),
        min_size=1,
        max_size=1,
        kwargs={"prepare_threshold": None},
        configure=_as_ingest,
        open=True,
    )
    try:
        batch = fleet.rows(["CHG-Q-1-01"], datetime.now(UTC) - timedelta(days=3), minutes=5)
        assert write(ingest_pool, batch, liveness_flush_s=30.0) == len(batch)
        assert write(ingest_pool, batch) == 0
        assert write(ingest_pool, batch, method=WriteMethod.UNNEST) == 0
    finally:
        ingest_pool.close()
    with as_role("qilu_ingest") as conn:
        assert denied(conn, "SELECT count(*) FROM sites")
        assert denied(conn, "DELETE FROM readings")
        assert denied(conn, "INSERT INTO coverage_daily VALUES (now(), 'x', '370000', 0, 0, 0)")
        assert denied(conn, "SELECT qilu_drop_partitions('readings', now())")
    with as_role("qilu_grafana") as conn:
        assert conn.execute("SELECT count(*) FROM readings_1m").fetchone() is not None
        assert conn.execute("SELECT count(*) FROM site_liveness_1h").fetchone() is not None
        assert denied(conn, "SELECT count(*) FROM readings")
        assert denied(conn, "SELECT count(*) FROM readings_1m_store")
        assert denied(
            conn, "SELECT count(*) FROM qilu_readings_1m(now() - interval '1 day', now())"
        )
    with as_role("qilu_api") as conn:
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (len(batch),)
        # the ranged rollup reads run with the caller's rights (migration 007)
        got = conn.execute(
            "SELECT sum(n) FROM qilu_readings_1m(now() - interval '4 days', now())"
        ).fetchone()
        assert got == (len(batch),)
        assert denied(conn, "INSERT INTO coverage_daily VALUES (now(), 'x', '370000', 0, 0, 0)")
        assert denied(conn, "SELECT qilu_refresh_rollups()")

    # a password set by the operator command lets the role log in (roles are per cluster)
    password = uuid.uuid4().hex
    done = subprocess.run(
        [sys.executable, "-m", "ops.cli", "storage", "set-password", "qilu_api"],
        input=password + "\n",
        capture_output=True,
        text=True,
        env={"QILU_DB__NAME": db.name, "PATH": "/usr/bin:/bin"},
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    api_db = db.model_copy(update={"user": "qilu_api", "password": SecretStr(password)})
    with connect(api_db) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("qilu_api",)


def test_saturated_database_raises_backpressure_and_keeps_the_batch(
    db: DatabaseSettings, fleet: Fleet, sink_pool: ConnectionPool
) -> None:
    from qilu.errors import BackpressureError

    batch = fleet.rows(["CHG-J-1-02"], datetime.now(UTC) - timedelta(minutes=30), minutes=5)
    sink = ReadingsSink(sink_pool, mode=StorageMode.POSTGRES, statement_timeout_ms=300)
    sink.add(batch)
    with connect(db) as locker:
        locker.execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(BackpressureError):
            sink.flush()
        assert sink.pending == len(batch)  # nothing dropped
        # every pooled connection busy: backpressure too, without waiting long
        small = ConnectionPool(
            db.conninfo(), min_size=1, max_size=1, kwargs={"prepare_threshold": None}, open=True
        )
        try:
            busy = ReadingsSink(small, mode=StorageMode.POSTGRES, pool_timeout_s=0.3)
            busy.add(batch)
            with small.connection():
                started = time.monotonic()
                with pytest.raises(BackpressureError):
                    busy.flush()
                assert time.monotonic() - started < 5
        finally:
            small.close()
        locker.rollback()
    assert sink.flush().inserted == len(batch)


@pytest.mark.timeout(600)
def test_pool_recovers_from_a_database_restart_by_itself(base_settings: Settings) -> None:
    """A private PostgreSQL is killed (like a crash) and restarted under the writer."""
    from qilu.errors import RetryableError

    state = REPO_ROOT / ".state" / "storage-itest"
    svc_settings = ServicesSettings(
        state_dir=state, postgres_port=free_port(), start_timeout_s=120.0
    )
    db = DatabaseSettings(port=svc_settings.postgres_port, name="qilu_restart")
    Services(svc_settings, db).down()
    shutil.rmtree(state, ignore_errors=True)
    svc = Services(svc_settings, db)
    sink_pool = None
    try:
        svc.up(["postgres"])
        with connect(db) as conn:
            from storage import migrate

            migrate.apply(conn)
        fleet = Fleet(db)
        sink_pool = ConnectionPool(
            db.conninfo(),
            min_size=1,
            max_size=2,
            kwargs={"prepare_threshold": None},
            check=ConnectionPool.check_connection,
            reconnect_timeout=300,
            open=True,
        )
        sink = ReadingsSink(sink_pool, mode=StorageMode.POSTGRES, pool_timeout_s=2)
        start = datetime.now(UTC) - timedelta(minutes=20)
        sink.add(fleet.rows(["CHG-Q-1-01"], start, minutes=5))
        first = sink.flush().inserted
        svc.kill("postgres")
        second = fleet.rows(["CHG-Q-1-02"], start, minutes=5)
        sink.add(second)
        with pytest.raises(RetryableError):
            sink.flush()
        assert sink.pending == len(second)
        restarter = threading.Thread(target=svc.start, args=("postgres",))
        restarter.start()
        stored = 0

        def flushed() -> bool:
            nonlocal stored
            try:
                stored = sink.flush().inserted
            except RetryableError:
                return False
            return True

        wait_for(flushed, timeout=120, what="the writer to succeed after the restart")
        restarter.join()
        assert stored == len(second)
        assert scalar(db, "SELECT count(*) FROM readings") == first + stored
    finally:
        if sink_pool is not None:
            sink_pool.close()
        svc.down()
        shutil.rmtree(state, ignore_errors=True)


def test_ingest_consumer_end_to_end_exactly_once(
    settings: Settings, fleet: Fleet, start_ingest: object
) -> None:
    """Envelopes through Kafka into the partitioned table; a full replay changes nothing and
    the refreshed rollups equal the raw readings."""
    from kafka import KafkaProducer

    now = datetime.now(UTC).replace(microsecond=0)
    envelopes = []
    for seq in range(30):
        env = Envelope("agent-s", "boot-s", seq, to_us(now))
        for dev in ("CHG-Q-1-01", "CHG-Q-1-02", "CHG-J-1-01"):
            for k, metric in enumerate(("power_kw", "energy_kwh")):
                t = now - timedelta(minutes=90) + timedelta(seconds=20 * seq)
                env.add(Reading.at(dev, metric, t, float(seq + k)))
        envelopes.append(env.encode())
    topic = readings_topic(settings.kafka, Sector.CHARGING)

    sign = signing_headers(settings, "agent-s")

    def produce() -> None:
        producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all")
        for value in envelopes:
            producer.send(topic, key=b"agent-s", value=value, headers=sign(value))
        producer.flush()
        producer.close()

    produce()
    start_ingest()  # type: ignore[operator]
    expected = 30 * 3 * 2
    wait_for(
        lambda: scalar(settings.db, "SELECT count(*) FROM readings") == expected,
        what="every reading stored",
    )
    produce()  # a full replay of the same envelopes

    def consumed() -> bool:
        from stream.topics import group_lag, readings_topics

        lag = group_lag(settings.kafka, settings.ingest.group_id, readings_topics(settings.kafka))
        return lag == 0

    wait_for(consumed, what="the replay to be consumed")
    assert scalar(settings.db, "SELECT count(*) FROM readings") == expected
    refresh(settings.db)
    assert_rollups_equal_raw(
        settings.db, hour(now) - timedelta(hours=2), hour(now) + timedelta(hours=1)
    )
    assert scalar(settings.db, "SELECT sum(n) FROM readings_1h") == expected


def run_qilu(db: DatabaseSettings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "QILU_DB__NAME": db.name},
        cwd=REPO_ROOT,
        timeout=120,
        check=False,
    )


def test_maintenance_commands_and_the_loop_in_a_thread(
    db: DatabaseSettings, fleet: Fleet, sink_pool: ConnectionPool
) -> None:
    now = datetime.now(UTC)
    write(
        sink_pool, fleet.rows(["CHG-Q-1-01", "SUB-J-1-01"], now - timedelta(minutes=20), minutes=18)
    )

    migrated = run_qilu(db, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "storage mode: postgres; migrations: up to date" in migrated.stderr
    once = run_qilu(db, "storage", "maintain")
    assert once.returncode == 0, once.stderr
    assert "coverage_daily: 221 rows for today" in once.stderr
    checked = run_qilu(db, "storage", "verify", "--hours", "2")
    assert checked.returncode == 0, checked.stderr + checked.stdout
    status = run_qilu(db, "storage", "status", "--json")
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert info["mode"] == "postgres"
    assert set(info["watermarks"]) == {"readings_1m", "readings_1h"}
    assert info["sizes"]["readings"].split()[0].isdigit()
    assert info["jobs"] == []  # background jobs are timescale mode's
    text = run_qilu(db, "storage", "status")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == "mode          postgres"
    assert lines[1].startswith("migrations    001, ")
    assert "051" in lines[1]
    assert [ln.split(":")[0] for ln in lines if ln.startswith("watermark")] == [
        "watermark     readings_1h",
        "watermark     readings_1m",
    ]
    assert any(ln.startswith("size          readings: ") for ln in lines)
    assert not any(ln.startswith("job ") for ln in lines)

    # a broken rollup store is found by verify (exit status 1), and repaired by a refresh
    # that recomputes the invalidated range
    with connect(db) as conn:
        conn.execute(
            "UPDATE readings_1m_store SET n = n + 1"
            " WHERE bucket = (SELECT min(bucket) FROM readings_1m_store)"
        )
        conn.commit()
    broken = run_qilu(db, "storage", "verify", "--hours", "2")
    assert broken.returncode == 1
    assert "buckets differ" in broken.stderr

    # the loop as ingest runs it: rollups and coverage on their schedules, until stopped
    storage = Settings().storage.model_copy(
        update={"refresh_interval_s": 0.2, "coverage_snapshot_interval_s": 0.2}
    )
    stop = threading.Event()
    worker = maintain.Maintainer(db, storage, StorageMode.POSTGRES, load_catalog(), stop)
    with connect(db) as conn:
        conn.execute("DELETE FROM coverage_daily")
        conn.execute("INSERT INTO rollup_invalidations SELECT NULL, min(ts), max(ts) FROM readings")
        conn.commit()
    worker.start()
    wait_for(lambda: worker.passes >= 3, timeout=60, what="three maintenance passes")
    stop.set()
    worker.join(timeout=30)
    assert scalar(db, "SELECT count(*) FROM coverage_daily") == 221
    assert_rollups_equal_raw(db, hour(now) - timedelta(hours=1), hour(now) + timedelta(hours=1))


def test_maintenance_prunes_the_dead_letter_summary_past_its_retention(
    db: DatabaseSettings,
) -> None:
    """deadletter_summary minutes older than storage.deadletter_retention_days go in each
    maintenance pass (one pass and the loop), younger ones stay."""
    now = datetime.now(UTC)

    def agents_with_dead_letters(db: DatabaseSettings) -> set[str]:
        with connect(db) as conn:
            return {r[0] for r in conn.execute("SELECT agent_id FROM deadletter_summary")}

    def minute(age: timedelta, agent: str) -> None:
        with connect(db) as conn:
            conn.execute(
                "INSERT INTO deadletter_summary VALUES"
                " (date_trunc('minute', %s::timestamptz), %s, 'unknown_device', 'X', 1, 1,"
                " 'qilu.readings.charging/0/1', 'no such device')",
                (now - age, agent),
            )
            conn.commit()

    minute(timedelta(days=31), "old")
    minute(timedelta(days=29), "young")
    minute(timedelta(0), "now")
    storage = Settings().storage
    assert storage.deadletter_retention_days == 30
    report = maintain.maintain_once(
        db, storage, StorageMode.POSTGRES, load_catalog(), now=now, coverage_snapshot=False
    )
    assert report.deadletters_pruned == 1
    assert report.not_allowed == []
    kept = agents_with_dead_letters(db)
    assert kept == {"young", "now"}

    # the loop as ingest runs it: its first pass does the housekeeping
    minute(timedelta(days=3), "three-days")
    short = storage.model_copy(update={"deadletter_retention_days": 2, "refresh_interval_s": 0.2})
    stop = threading.Event()
    worker = maintain.Maintainer(db, short, StorageMode.POSTGRES, load_catalog(), stop)
    worker.start()
    wait_for(lambda: worker.passes >= 1, timeout=60, what="one maintenance pass")
    stop.set()
    worker.join(timeout=30)
    kept = agents_with_dead_letters(db)
    assert kept == {"now"}
