"""Storage in timescale mode on the TimescaleDB engine (PGlite + TimescaleDB 2.23): the
hypertable, compression, policies, continuous aggregates equal to a recomputation, redelivery
and late data into compressed chunks, the coverage series and the roles.

The engine serves ONE connection at a time and its background jobs never run. So every test
here opens at most one connection at a time (the writer uses a pool without idle connections),
runs the policy jobs itself (``CALL run_job``: the refresh, compression and retention policies
exactly as registered), and works in a schema of its own that it drops afterwards; nobody else
uses the engine.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Self

import psycopg
import pytest
from prometheus_client import REGISTRY
from psycopg import errors as pgerrors
from psycopg import pq, sql
from psycopg.abc import Params
from psycopg.rows import TupleRow
from psycopg_pool import NullConnectionPool
from pydantic import SecretStr

import storage.cli as storage_cli
from ops.cli import main as qilu_main
from ops.services import Services
from ops.services.timescale import PASSWORD, USER
from qilu.catalog import load_catalog
from qilu.registry import Registry
from qilu.settings import DatabaseSettings, Settings, StorageMode, StorageSettings
from storage import coverage, jobs, maintain, migrate, verify
from storage import mode as modes
from storage.db import connect
from storage.registry_store import load_device_index
from storage.rows import Rows
from storage.writer import ReadingsSink, WriteMethod
from tests.integration.test_storage_postgres import LOGICAL, Fleet, hour, registry

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
CAGGS = ("readings_1m", "readings_1h", "site_liveness_1h")


class Engine:
    """The engine, one schema of it, and connections that always land in that schema."""

    def __init__(self, db: DatabaseSettings, schema: str) -> None:
        self.db, self.schema = db, schema

    def _enter(self, conn: psycopg.Connection[TupleRow]) -> None:
        conn.execute(sql.SQL("SET search_path = {}, public").format(sql.Identifier(self.schema)))

    def connect(self, *, autocommit: bool = False) -> psycopg.Connection[TupleRow]:
        conn = connect(self.db, autocommit=True)
        self._enter(conn)
        conn.autocommit = autocommit
        return conn

    def pool(self, cursor_factory: type[psycopg.Cursor[Any]] | None = None) -> NullConnectionPool:
        """Opens a connection per request and closes it after: never two at once."""
        kwargs: dict[str, Any] = {"prepare_threshold": None, "autocommit": False}
        if cursor_factory is not None:
            kwargs["cursor_factory"] = cursor_factory
        return NullConnectionPool(
            self.db.conninfo(),
            max_size=1,
            kwargs=kwargs,
            configure=self._configure,
            open=True,
        )

    def _configure(self, conn: psycopg.Connection[TupleRow]) -> None:
        self._enter(conn)
        conn.commit()


@pytest.fixture
def engine(base_settings: Settings) -> Iterator[Engine]:
    Services(base_settings.services, base_settings.db).up(["timescale"])
    db = DatabaseSettings(
        host=base_settings.services.host,
        port=base_settings.services.timescale_port,
        name="postgres",
        user=USER,
        password=SecretStr(PASSWORD),
        mode=StorageMode.TIMESCALE,
        max_rows_per_statement=500,
    )
    eng = Engine(db, f"qilu_t_{uuid.uuid4().hex[:10]}")
    with connect(db, autocommit=True) as conn:
        if modes.probe_features(conn) is not None:
            # The engine loads TimescaleDB's community module only when the extension is
            # created in its running process, so after a restart on an existing data dir it
            # lacks compression and continuous aggregates. The engine is this suite's alone
            # and holds nothing but test schemas: re-create the extension.
            conn.execute("DROP EXTENSION timescaledb CASCADE")
            conn.execute("CREATE EXTENSION timescaledb")
            reason = modes.probe_features(conn)
            if reason is not None:
                pytest.fail(f"the TimescaleDB engine lacks community features: {reason}")
        # schemas left behind by a run that died half-way (ours by their prefix)
        for (stale,) in conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'qilu\\_t\\_%'"
        ).fetchall():
            drop_schema(conn, stale)
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(eng.schema)))
    with eng.connect() as conn:
        migrate.apply(conn, StorageMode.TIMESCALE)
    yield eng
    with eng.connect(autocommit=True) as conn:
        drop_schema(conn, eng.schema)
        conn.execute("RESET search_path")


def drop_schema(conn: psycopg.Connection[TupleRow], schema: str) -> None:
    """Continuous aggregates first (their materialization lives in another schema), then the
    schema with everything in it; the hypertables' policies go with them."""
    for (cagg,) in conn.execute(
        "SELECT view_name FROM timescaledb_information.continuous_aggregates"
        " WHERE view_schema = %s ORDER BY view_name DESC",
        (schema,),
    ).fetchall():
        conn.execute(
            sql.SQL("DROP MATERIALIZED VIEW IF EXISTS {}.{} CASCADE").format(
                sql.Identifier(schema), sql.Identifier(cagg)
            )
        )
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def load_small_registry(eng: Engine, reg: Registry) -> None:
    """Row by row: the engine has no COPY (storage.registry_store.load_registry uses it)."""
    with eng.connect() as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO sites (site_id, sector, city_code, name, public, networked,"
            " voltage_kv) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    s.site_id,
                    s.sector.value,
                    s.city_code,
                    s.name,
                    s.public,
                    s.networked,
                    s.voltage_kv,
                )
                for s in reg.sites
            ],
        )
        cur.executemany(
            "INSERT INTO devices (device_id, site_id, kind) VALUES (%s, %s, %s)",
            [(d.device_id, d.site_id, d.kind) for d in reg.devices],
        )


class EngineFleet(Fleet):
    def __init__(self, eng: Engine) -> None:
        load_small_registry(eng, registry())
        with eng.connect() as conn:
            idx = load_device_index(conn)
        self.pk = {dev: pk for dev, (pk, _kind) in idx.devices.items()}
        self.metric = idx.metrics


def write(eng: Engine, rows: Rows) -> int:
    pool = eng.pool()
    try:
        sink = ReadingsSink(pool, mode=StorageMode.TIMESCALE, max_rows_per_statement=500)
        assert sink.method is WriteMethod.UNNEST
        sink.add(rows)
        return sink.flush().inserted
    finally:
        pool.close()


def compare(eng: Engine, lo: datetime, hi: datetime) -> verify.Comparison:
    with eng.connect() as conn:
        return verify.compare(conn, lo, hi)


def assert_equal_to_recomputation(eng: Engine, lo: datetime, hi: datetime) -> verify.Comparison:
    """The aggregates between ``lo`` and ``hi`` equal a recomputation from the readings."""
    got = compare(eng, lo, hi)
    assert got.equal, "\n".join(map(str, got.mismatches[:10]))
    return got


def devices_reporting(eng: Engine, site_id: str, bucket: datetime) -> tuple[int] | None:
    """``site_liveness_1h.devices_reporting`` of one site's hour, None when there is no row."""
    with eng.connect() as conn:
        row = conn.execute(
            "SELECT devices_reporting FROM site_liveness_1h WHERE site_id = %s AND bucket = %s",
            (site_id, bucket),
        ).fetchone()
    return None if row is None else (int(row[0]),)


def run_policy_jobs(eng: Engine) -> list[str]:
    """One refresh cycle as the server would run it: every policy job of our relations."""
    with eng.connect(autocommit=True) as conn:
        return maintain.run_jobs(conn)


def test_schema_mode_and_registered_policies(engine: Engine) -> None:
    with engine.connect() as conn:
        assert modes.recorded(conn) is StorageMode.TIMESCALE
        got: dict[str, dict[str, str]] = {}
        for table, column, dtype in conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ANY(%s)",
            (list(LOGICAL),),
        ):
            got.setdefault(table, {})[column] = dtype
        dims = conn.execute(
            "SELECT column_name, time_interval FROM timescaledb_information.dimensions"
            " WHERE hypertable_schema = current_schema() AND hypertable_name = 'readings'"
        ).fetchall()
        compression = conn.execute(
            "SELECT attname, segmentby_column_index, orderby_column_index, orderby_asc"
            " FROM timescaledb_information.compression_settings"
            " WHERE hypertable_schema = current_schema() AND hypertable_name = 'readings'"
            " ORDER BY attname"
        ).fetchall()
        caggs = conn.execute(
            "SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates"
            " WHERE view_schema = current_schema() ORDER BY view_name"
        ).fetchall()
        policies = {(rel, proc): cfg for _id, rel, proc, cfg in maintain.policy_jobs(conn)}
    assert {t: {c: got.get(t, {}).get(c) for c in cols} for t, cols in LOGICAL.items()} == LOGICAL
    assert dims == [("ts", timedelta(hours=1))]
    assert compression == [
        ("device_pk", 1, None, None),
        ("metric_id", 2, None, None),
        ("ts", None, 1, False),
    ]
    assert caggs == [(c, False) for c in sorted(CAGGS)]  # real-time aggregates
    assert policies[("readings", "policy_compression")]["compress_after"] == "03:00:00"
    assert policies[("readings", "policy_retention")]["drop_after"] == "30 days"
    # one job refreshes the rollups in dependency order (051), no policy per aggregate
    refresh = policies[("rollups", jobs.REFRESH_JOB)]
    assert [r["name"].split(".")[-1] for r in refresh["rollups"]] == list(CAGGS)
    assert {r["start_offset"] for r in refresh["rollups"]} == {"8 days"}  # late data, 7 days
    assert all(r["name"].startswith(f"{engine.schema}.") for r in refresh["rollups"])
    for cagg in CAGGS:
        assert (cagg, "policy_refresh_continuous_aggregate") not in policies
        assert (cagg, "policy_retention") in policies
    assert ("readings_1m", "policy_compression") in policies

    # the retention follows the settings
    storage = Settings().storage.model_copy(update={"raw_retention_days": 12})
    with engine.connect() as conn:
        assert maintain.align_retention_policies(conn, storage) == ["readings", "rollups"]
        assert maintain.align_retention_policies(conn, storage) == []
        after = {(rel, proc): cfg for _id, rel, proc, cfg in maintain.policy_jobs(conn)}
    assert after[("readings", "policy_retention")]["drop_after"] == "12 days"
    # and the refresh window with it: late readings are accepted that far back
    refreshed = after[("rollups", jobs.REFRESH_JOB)]["rollups"]
    assert {r["start_offset"] for r in refreshed} == {"12 days"}


def test_aggregates_equal_recomputation_through_compression_redelivery_and_late_data(
    engine: Engine,
) -> None:
    fleet = EngineFleet(engine)
    now = datetime.now(UTC)
    lo, hi = hour(now) - timedelta(days=3), hour(now) + timedelta(hours=1)
    old_start = hour(now) - timedelta(days=2)
    old = fleet.rows(["CHG-Q-1-01", "SUB-J-1-01"], old_start, minutes=90, step_s=30)
    recent = fleet.rows(["CHG-Q-1-01", "CHG-J-1-01"], now - timedelta(minutes=50), minutes=45)
    assert write(engine, old) == len(old)
    assert write(engine, recent) == len(recent)

    ran = run_policy_jobs(engine)  # refresh 1m -> 1h -> sites, then compression, retention
    assert "policy_compression on readings" in ran
    with engine.connect() as conn:
        chunks = dict(
            conn.execute(
                "SELECT range_start, is_compressed FROM timescaledb_information.chunks"
                " WHERE hypertable_schema = current_schema() AND hypertable_name = 'readings'"
            ).fetchall()
        )
    # chunks that ended more than 3 hours ago are compressed by the policy, recent ones not
    assert chunks[old_start] is True
    assert chunks[old_start + timedelta(hours=1)] is True
    recent_chunks = [c for start, c in chunks.items() if start >= hour(now) - timedelta(hours=2)]
    assert recent_chunks
    assert not any(recent_chunks)
    first = assert_equal_to_recomputation(engine, lo, hi)
    assert first.buckets["readings_1m"] > 100

    # redelivery into the compressed chunks: every row is refused by the key
    assert write(engine, fleet.rows(["CHG-Q-1-01"], old_start, minutes=30, step_s=30)) == 0
    # late data into the compressed chunks: a device silent for two days uploads, and an
    # existing series gets readings it had missed (between its stored ones)
    late = fleet.rows(["CHG-Q-1-02"], old_start + timedelta(minutes=10), minutes=60, step_s=30)
    missed = fleet.rows(
        ["SUB-J-1-01"], old_start + timedelta(seconds=15), minutes=20, step_s=30, value0=1000
    )
    assert write(engine, late) == len(late)
    assert write(engine, missed) == len(missed)
    stale = compare(engine, lo, hi)
    assert not stale.equal  # the materialized buckets do not have them yet ...
    run_policy_jobs(engine)  # ... one refresh cycle later they do
    assert_equal_to_recomputation(engine, lo, hi)
    with engine.connect() as conn:
        n = conn.execute(
            "SELECT sum(n) FROM readings_1h WHERE device_pk = %s AND bucket >= %s AND bucket < %s",
            (fleet.pk["SUB-J-1-01"], old_start, old_start + timedelta(hours=2)),
        ).fetchone()
        site = conn.execute(
            "SELECT devices_reporting FROM site_liveness_1h WHERE site_id = 'CHG-Q-1'"
            " AND bucket = %s",
            (old_start,),
        ).fetchone()
        stored = conn.execute("SELECT count(*) FROM readings").fetchone()
    assert n == (len(old) // 2 + len(missed),)  # SUB-J-1-01 is half of `old`
    assert site == (2,)  # CHG-Q-1-01 and the late CHG-Q-1-02
    assert stored == (len(old) + len(recent) + len(late) + len(missed),)


def test_migrating_again_gets_no_error_from_the_server(engine: Engine) -> None:
    """Every `qilu migrate` resolves the mode and checks TimescaleDB's community features;
    none of it may provoke an ERROR (it would land in the server log on every run). The
    client's protocol trace shows each answer of the server."""
    with engine.connect() as conn, tempfile.TemporaryFile("w+") as trace:
        conn.pgconn.trace(trace.fileno())
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            result = migrate.run(conn, StorageMode.TIMESCALE)
        finally:
            conn.pgconn.untrace()
        trace.seek(0)
        answers = [line.split("\t")[2] for line in trace if line.startswith("B\t")]
    assert result.applied == []
    assert "CommandComplete" in answers
    assert "ErrorResponse" not in answers


def run_refresh_job(eng: Engine) -> None:
    """One run of the rollup refresh job of migration 051, as the server starts it."""
    with eng.connect(autocommit=True) as conn:
        (job_id,) = [j for j, rel, proc, _ in maintain.policy_jobs(conn) if rel == "rollups"]
        conn.execute("CALL run_job(%s)", (job_id,))


def test_one_run_of_the_refresh_job_carries_late_data_through_every_level(
    engine: Engine,
) -> None:
    """The hourly rollups read the minute rollup: one run refreshes it first, so late data
    is in readings_1h and site_liveness_1h after one cycle, not two."""
    fleet = EngineFleet(engine)
    now = datetime.now(UTC)
    lo, hi = hour(now) - timedelta(days=2), hour(now) + timedelta(hours=1)
    start = hour(now) - timedelta(days=1)
    write(engine, fleet.rows(["CHG-Q-1-01"], start, minutes=30, step_s=60))
    run_refresh_job(engine)
    assert compare(engine, lo, hi).equal
    late = fleet.rows(["CHG-Q-1-02"], start + timedelta(minutes=5), minutes=20, step_s=60)
    assert write(engine, late) == len(late)
    assert not compare(engine, lo, hi).equal
    run_refresh_job(engine)
    assert_equal_to_recomputation(engine, lo, hi)
    assert devices_reporting(engine, "CHG-Q-1", start) == (2,)


def record_runs(conn: psycopg.Connection[TupleRow], now: datetime) -> dict[str, int]:
    """Rows as a native server's scheduler records them (the engine runs no jobs): the
    refresh job failed its last five runs and backs off, the raw retention ran fine."""
    ids = {
        rel if rel == "rollups" else f"{rel}:{proc}": job
        for job, rel, proc, _ in maintain.policy_jobs(conn)
    }
    refresh, retention = ids["rollups"], ids["readings:policy_retention"]
    forget_runs(conn, {"refresh": refresh, "retention": retention})  # the engine's own rows
    conn.execute(
        "INSERT INTO _timescaledb_internal.bgw_job_stat (job_id, last_start, last_finish,"
        " next_start, last_successful_finish, last_run_success, total_runs, total_duration,"
        " total_duration_failures, total_successes, total_failures, total_crashes,"
        " consecutive_failures, consecutive_crashes, flags) VALUES"
        " (%s, %s, %s, %s, %s, false, 70, '70 s', '5 s', 65, 5, 0, 5, 0, 0),"
        " (%s, %s, %s, %s, %s, true, 3, '3 s', '0 s', 3, 0, 0, 0, 0, 0)",
        (
            refresh,
            now - timedelta(minutes=10),
            now - timedelta(minutes=10) + timedelta(seconds=1),
            now + timedelta(minutes=50),
            now - timedelta(hours=1),
            retention,
            now - timedelta(hours=2),
            now - timedelta(hours=2) + timedelta(seconds=1),
            now + timedelta(hours=22),
            now - timedelta(hours=2) + timedelta(seconds=1),
        ),
    )
    conn.execute(
        "INSERT INTO _timescaledb_internal.bgw_job_stat_history"
        " (job_id, pid, execution_start, execution_finish, succeeded, data) VALUES"
        " (%s, 4242, %s, %s, false, %s::jsonb), (%s, 4242, %s, %s, false, %s::jsonb)",
        (
            refresh,
            now - timedelta(hours=1),
            now - timedelta(hours=1),
            '{"error_data": {"message": "an older failure", "sqlerrcode": "XX000"}}',
            refresh,
            now - timedelta(minutes=10),
            now - timedelta(minutes=10),
            '{"error_data": {"message": "canceling statement due to statement timeout",'
            ' "sqlerrcode": "57014"}}',
        ),
    )
    conn.commit()
    return {"refresh": refresh, "retention": retention}


def forget_runs(conn: psycopg.Connection[TupleRow], ids: dict[str, int]) -> None:
    for table in ("bgw_job_stat", "bgw_job_stat_history"):
        conn.execute(
            sql.SQL("DELETE FROM _timescaledb_internal.{} WHERE job_id = ANY(%s)").format(
                sql.Identifier(table)
            ),
            (list(ids.values()),),
        )
    conn.commit()


def test_status_metric_and_log_surface_a_failing_job_from_recorded_runs(
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    with engine.connect() as conn:
        ids = record_runs(conn, now)
    try:
        # `qilu storage status`, the whole command, on this schema of the engine
        monkeypatch.setattr(storage_cli, "connect", lambda _db, **kw: engine.connect(**kw))
        capsys.readouterr()
        assert qilu_main(["storage", "status"]) == 1  # a failing job fails the status
        out = capsys.readouterr().out
        assert "mode          timescale" in out
        assert "051" in out
        assert "size          readings: " in out
        assert " chunks, " in out
        lines = [ln for ln in out.splitlines() if ln.startswith("job           rollups:")]
        assert len(lines) == 1, out
        refresh_line = lines[0]
        assert refresh_line.startswith(
            f"job           rollups: qilu_refresh_rollups_job (job {ids['refresh']}, every"
            " 0:01:00): FAILING, 5 of 70 runs failed,"
        )
        assert "(backing off 0:59:00)" in refresh_line
        assert refresh_line.endswith(": canceling statement due to statement timeout")
        job_lines = [ln for ln in out.splitlines() if ln.startswith("job ")]
        (retention_line,) = [ln for ln in job_lines if "readings: policy_retention" in ln]
        assert ": ok, last success " in retention_line
        assert qilu_main(["storage", "status", "--json"]) == 1
        info = json.loads(capsys.readouterr().out)
        by_job = {j["job_id"]: j for j in info["jobs"]}
        assert by_job[ids["refresh"]]["failing"] is True
        assert by_job[ids["refresh"]]["backoff_s"] == 59 * 60
        assert by_job[ids["retention"]]["failing"] is False

        # the metric, as the maintenance loop publishes it, and one log line per change
        maintainer = maintain.Maintainer(
            engine.db, Settings().storage, StorageMode.TIMESCALE, load_catalog(), threading.Event()
        )
        with engine.connect() as conn, caplog.at_level(logging.WARNING, "storage.maintain"):
            assert maintainer._watch_jobs(conn) == 1
            assert maintainer._watch_jobs(conn) == 1
            failing = {"relation": "rollups", "policy": jobs.REFRESH_JOB}
            assert REGISTRY.get_sample_value("qilu_storage_job_failing", failing) == 1.0
            assert REGISTRY.get_sample_value("qilu_storage_job_backoff_seconds", failing) == 3540
            ok = {"relation": "readings", "policy": "policy_retention"}
            assert REGISTRY.get_sample_value("qilu_storage_job_failing", ok) == 0.0
            conn.execute(
                "UPDATE _timescaledb_internal.bgw_job_stat SET last_run_success = true"
                " WHERE job_id = %s",
                (ids["refresh"],),
            )
            conn.commit()
            assert maintainer._watch_jobs(conn) == 0
            assert REGISTRY.get_sample_value("qilu_storage_job_failing", failing) == 0.0
        logged = [r.getMessage() for r in caplog.records if r.name == "storage.maintain"]
        assert len(logged) == 2
        assert logged[0].startswith("TimescaleDB job failing: rollups: qilu_refresh_rollups_job")
        assert logged[1] == "TimescaleDB job qilu_refresh_rollups_job on rollups works again"
    finally:
        with engine.connect() as conn:
            forget_runs(conn, ids)


def test_coverage_series_and_roles(engine: Engine) -> None:
    fleet = EngineFleet(engine)
    now = datetime.now(UTC)
    write(engine, fleet.rows(["CHG-Q-1-01", "CHG-J-1-01"], now, minutes=0.4))
    catalog = load_catalog()
    with engine.connect() as conn:
        written = coverage.snapshot(conn, catalog, now)
        coverage.snapshot(conn, catalog, now + timedelta(days=1))
        series = conn.execute(
            "SELECT day, numerator FROM coverage_daily WHERE city_code = '370000'"
            " AND target_id = 'charging-public-piles-2024' ORDER BY day"
        ).fetchall()
    assert written == len(catalog.targets) * 17
    assert series == [
        (coverage.province_day(now), 2),
        (coverage.province_day(now + timedelta(days=1)), 0),
    ]

    def denied(conn: psycopg.Connection[TupleRow], query: str) -> bool:
        try:
            with conn.transaction():
                conn.execute(query.encode())
        except pgerrors.InsufficientPrivilege:
            return True
        return False

    with engine.connect() as conn:
        try:
            conn.execute("SET ROLE qilu_grafana")
            assert conn.execute("SELECT count(*) FROM readings_1m").fetchone() is not None
            assert conn.execute("SELECT count(*) FROM site_liveness_1h").fetchone() is not None
            assert denied(conn, "SELECT count(*) FROM readings")
            conn.execute("SET ROLE qilu_ingest")
            assert denied(conn, "SELECT count(*) FROM sites")
            assert denied(conn, "DELETE FROM readings")
            conn.execute(
                "INSERT INTO readings VALUES (%s, 1, now(), 1, 0)", (fleet.pk["CHG-J-1-02"],)
            )
        finally:
            conn.rollback()
            conn.execute("RESET ROLE")
            conn.commit()


class OneStatementPerFetch(psycopg.Cursor[TupleRow]):
    """A cursor that refuses to read a result while two or more of its statements are in
    flight in a pipeline.

    In pipeline mode psycopg resets a cursor when it executes a statement, and sets each
    answer on its cursor when the answer arrives, also while a later statement of the same
    cursor is being sent. So a fetch after two statements may read the first one's answer.
    The engine answers every statement at once (PostgreSQL holds the answers until the
    pipeline's sync or flush), and the sink's dead-letter summary failed at random there
    ("the last operation didn't produce records (command status: INSERT 0 0)"); this cursor
    turns that race into a certain failure."""

    in_flight = 0

    def execute(
        self,
        query: Any,  # psycopg's overloads: a query and its parameters, or a template
        params: Params | None = None,
        *,
        prepare: bool | None = None,
        binary: bool | None = None,
    ) -> Self:
        piped = self.connection.pgconn.pipeline_status != pq.PipelineStatus.OFF
        self.in_flight = self.in_flight + 1 if piped else 0
        return super().execute(query, params, prepare=prepare, binary=binary)

    def _may_read(self) -> None:
        assert self.in_flight < 2, (
            f"a result read from a cursor with {self.in_flight} statements in the pipeline:"
            " it may be an earlier statement's"
        )
        self.in_flight = 0

    def fetchone(self) -> TupleRow | None:
        self._may_read()
        return super().fetchone()

    def fetchmany(self, size: int = 0) -> list[TupleRow]:
        self._may_read()
        return super().fetchmany(size)

    def fetchall(self) -> list[TupleRow]:
        self._may_read()
        return super().fetchall()


def test_deadletter_summary_in_the_batch_transaction_counted_once(engine: Engine) -> None:
    """The dead-letter summary (storage/deadletters.py, ADR 0012) on the engine: a batch of
    nothing but refusals still gets its transaction, more summary rows than one statement
    takes are chunked, and the same records written again (a batch read again) add nothing.
    The sink's parts read no result from the cursor its pipeline shares
    (:class:`OneStatementPerFetch`), so the summary is written whenever the answers come."""
    from qilu.errors import Rejection
    from storage.deadletter_tally import DeadLetterTally
    from storage.deadletters import SummaryWriter, summary
    from storage.offsets import OffsetMarks, stored_offsets

    now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    devices = [f"NO-SUCH-{i}" for i in range(700)]

    def batch(tally: DeadLetterTally) -> None:
        tally.add_envelope(("r", 0, 4), now_us, "agent-t", "malformed", "not a map")
        rejected = [Rejection(i, "unknown_device", repr(d)) for i, d in enumerate(devices)]
        tally.add_readings(("r", 1, 9), now_us, "agent-t", devices, rejected)

    pool = engine.pool(cursor_factory=OneStatementPerFetch)
    try:
        for _ in range(2):
            tally = DeadLetterTally()
            part = SummaryWriter(tally, max_rows_per_statement=500)
            offsets = OffsetMarks()  # the ingest's sink writes the offsets after the summary
            sink = ReadingsSink(
                pool,
                mode=StorageMode.TIMESCALE,
                max_rows_per_statement=500,
                parts=(part, offsets),
            )
            batch(tally)
            offsets.note("r", 0, 5)
            offsets.note("r", 1, 10)
            assert sink.flush().offered == 0
            assert tally.pending == 0
    finally:
        pool.close()
    with engine.connect() as conn:
        got = summary(
            conn,
            start=datetime.now(UTC) - timedelta(hours=1),
            end=datetime.now(UTC) + timedelta(minutes=1),
        )
        assert stored_offsets(conn, ["r"]) == {("r", 0): 5, ("r", 1): 10}
    assert [(r.reason, r.records, r.readings) for r in got] == [
        ("unknown_device", 700, 700),
        ("malformed", 1, 0),
    ]


def test_late_data_older_than_a_week_reaches_the_rollups_within_the_raw_retention(
    engine: Engine,
) -> None:
    """The ingest accepts readings up to the raw retention (30 days) old. With the refresh
    job's first window (8 days) a reading 20 days late, below the aggregates' watermark, never
    reached the rollups; the maintenance widens the window to the raw retention, and the next
    run of the job rolls it up."""
    fleet = EngineFleet(engine)
    now = datetime.now(UTC)
    recent = hour(now) - timedelta(hours=2)
    write(engine, fleet.rows(["CHG-Q-1-01"], recent, minutes=30, step_s=60))
    run_refresh_job(engine)  # the watermark moves past the day the late data belongs to
    start = hour(now) - timedelta(days=20)
    lo, hi = start - timedelta(hours=1), start + timedelta(hours=2)
    late = fleet.rows(["CHG-Q-1-01", "CHG-Q-1-02"], start, minutes=30, step_s=60)
    assert write(engine, late) == len(late)
    assert not compare(engine, lo, hi).equal
    run_refresh_job(engine)
    assert not compare(engine, lo, hi).equal, "the migration's 8-day window reaches it?"

    with engine.connect() as conn:
        changed = maintain.align_retention_policies(conn, StorageSettings())
        (config,) = [
            c for _j, _rel, proc, c in maintain.policy_jobs(conn) if proc == jobs.REFRESH_JOB
        ]
    assert changed == ["rollups"]
    assert {r["start_offset"] for r in config["rollups"]} == {"30 days"}
    with engine.connect() as conn:  # the second pass changes nothing
        assert maintain.align_retention_policies(conn, StorageSettings()) == []
    run_refresh_job(engine)
    assert_equal_to_recomputation(engine, lo, hi)
    assert devices_reporting(engine, "CHG-Q-1", start) == (2,)
    # the minute rollup of that day is compressed (after 10 days); more late data still counts
    run_policy_jobs(engine)
    with engine.connect() as conn:
        compressed = conn.execute(
            "SELECT count(*) FROM timescaledb_information.chunks c"
            " JOIN timescaledb_information.continuous_aggregates a"
            "  ON a.materialization_hypertable_name = c.hypertable_name"
            " WHERE a.view_name = 'readings_1m' AND a.view_schema = current_schema()"
            "  AND c.is_compressed AND c.range_start <= %s AND c.range_end > %s",
            (start, start),
        ).fetchone()
    assert compressed == (1,)
    later = fleet.rows(["CHG-Q-1-03"], start + timedelta(minutes=10), minutes=10, step_s=60)
    assert write(engine, later) == len(later)
    run_refresh_job(engine)
    assert_equal_to_recomputation(engine, lo, hi)


def test_liveness_coalesced_per_kind_and_self_logged_on_the_engine(engine: Engine) -> None:
    """Liveness on the engine's row-limited path (storage/writer.py, migrations 067/068):
    each device's period from its kind (a lookup of its own, one connection at a time), the
    change log written by the sink's own statement, the triggers of migration 062 out of it."""
    fleet = EngineFleet(engine)
    pile, transformer = fleet.pk["CHG-Q-1-01"], fleet.pk["SUB-J-1-01"]
    clock = [1000.0]
    devices = ["CHG-Q-1-01", "SUB-J-1-01"]
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    pool = engine.pool()
    try:
        sink = ReadingsSink(
            pool,
            mode=StorageMode.TIMESCALE,
            max_rows_per_statement=500,
            liveness_flush_s=30.0,
            clock=lambda: clock[0],
        )
        sink.add(fleet.rows(devices, t0, minutes=1))
        sink.flush()
        clock[0] += 5.0  # past the transformer's 3.75 s, within the pile's 15 s
        sink.add(fleet.rows(devices, t0 + timedelta(minutes=1), minutes=1))
        sink.flush()
        clock[0] += 5.0  # late data of the transformer: nothing moves, the sink logs it anyway
        sink.add(fleet.rows(devices[1:], t0 - timedelta(minutes=1), minutes=1))
        sink.flush()
    finally:
        pool.close()
    with engine.connect() as conn:
        live: dict[int, datetime] = dict(
            conn.execute("SELECT device_pk, last_seen FROM device_liveness").fetchall()
        )
        newest: dict[int, datetime] = dict(
            conn.execute("SELECT device_pk, max(ts) FROM readings GROUP BY 1").fetchall()
        )
        log = [r[0] for r in conn.execute("SELECT devices FROM liveness_changes ORDER BY at")]
    assert live[transformer] == newest[transformer]
    assert live[pile] < newest[pile]  # held within its period
    assert log == [sorted([pile, transformer]), [transformer], [transformer]]
