"""Every panel's and alert's SQL, run against a database filled by the real pipeline.

Registry -> simulated agents -> Kafka -> ingest -> PostgreSQL (migrated with whatever migrations
storage/migrations holds), then each query is expanded like Grafana would (dashboards/macros.py)
and run as the read-only role ``qilu_grafana`` (``SET ROLE``: the grants are tested too). Each
result must have exactly the declared columns, in order, with the declared types.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from dashboards import alerts, provisioning
from dashboards.macros import Context, Variable, expand_sql, parse_duration
from dashboards.model import ColType, SqlSpec
from qilu.catalog import load_catalog
from qilu.contract import Sector
from qilu.devices import DEVICE_KINDS, MetricKind
from qilu.ports import free_port
from qilu.registry import generate
from qilu.settings import Settings
from storage.db import connect
from storage.registry_store import load_registry
from tests.helpers import scalar, wait_for

pytestmark = pytest.mark.integration

CATALOG = load_catalog()
GRAFANA_ROLE = provisioning.GRAFANA_ROLE
TARGET = "charging-public-piles-2024"
TYPES = {
    ColType.TIME: {"timestamptz", "timestamp"},
    ColType.NUMBER: {"int2", "int4", "int8", "float4", "float8", "numeric"},
    ColType.TEXT: {"text", "varchar", "name", "bpchar"},
    ColType.DATE: {"date"},
}
# Grafana reads a numeric column named "time" as Unix epoch seconds ($__timeGroup without
# TimescaleDB returns floor(extract(epoch ...)/N)*N).
EPOCH_TIME = TYPES[ColType.NUMBER]
# Queries that may legitimately return no row after a few seconds of a simulated province:
# alarms and faults are rare.
MAY_BE_EMPTY = {
    # T/CEC 102 operators: none unless added (`qilu operators add`)
    "Operator links",
    # each kind's devices in alarm now (dashboards/sectors.py): alarms and faults are rare
    *(
        f"{k.plural} in alarm now"
        for k in DEVICE_KINDS
        if any(m.kind is MetricKind.ALARM for m in k.metrics)
    ),
    # only a line when the due date lies after the first recorded day (none of today's targets)
    "${target}: progress towards the due date/B",
    # the plan's path needs a baseline in the catalog; the tested target has none
    "${target}: progress towards the due date/C",
    # what the ingest refused: a simulated province may send nothing it refuses
    "Refused by reason",
    "Refused by agent and reason (time range)",
}


SEED, SCALE = 7, 0.002  # ~110 sites, ~840 devices of every kind


def platform_env(settings: Settings) -> dict[str, str]:
    """Environment for `qilu ...` child processes pointing at this test's topics and database."""
    return {
        **os.environ,
        "QILU_KAFKA__BOOTSTRAP": settings.kafka.bootstrap,
        "QILU_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
        "QILU_DB__NAME": settings.db.name,
        "QILU_INGEST__GROUP_ID": settings.ingest.group_id,
        "QILU_LOG_LEVEL": "WARNING",
    }


@contextlib.contextmanager
def qilu_process(
    args: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A real `qilu` command as a child process, stopped with SIGTERM (SIGKILL after 20 s)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ops.cli", *args], env=env, stdout=out, stderr=out
        )
        try:
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def province_args(state_dir: Path, metrics_port: int) -> list[str]:
    return [
        "agent",
        "province",
        "--seed",
        str(SEED),
        "--scale",
        str(SCALE),
        "--silence",
        "none",
        "--state-dir",
        str(state_dir),
        "--metrics-port",
        str(metrics_port),
    ]


@pytest.fixture
def filled(settings: Settings, start_ingest: Callable[[], object], tmp_path: Path) -> Settings:
    """A generated province streamed by the real agent process and stored by the real ingest."""
    reg = generate(SEED, SCALE)
    with connect(settings.db) as conn:
        load_registry(conn, reg)
    start_ingest()
    env = platform_env(settings)
    with qilu_process(province_args(tmp_path / "agents", free_port()), env, tmp_path / "a.log"):
        wait_for(
            lambda: scalar(settings.db, "SELECT count(*) FROM device_liveness") == len(reg.devices),
            timeout=90,
            what="every device of the province to be seen",
        )
    with connect(settings.db, autocommit=True) as conn:
        if _exists(conn, "function", "qilu_refresh_rollups"):
            conn.execute("SELECT qilu_refresh_rollups()")
    _coverage_snapshot(settings)
    return settings


def _exists(conn: psycopg.Connection[tuple[object, ...]], kind: str, name: str) -> bool:
    query = {
        "function": "SELECT count(*) FROM pg_proc WHERE proname = %s",
        "relation": "SELECT count(*) FROM pg_class WHERE relname = %s",
    }[kind]
    row = conn.execute(query.encode(), (name,)).fetchone()
    return bool(row and row[0])


def _coverage_snapshot(settings: Settings) -> None:
    """Today's coverage_daily rows, written by the platform's coverage snapshot."""
    from storage.coverage import snapshot

    with connect(settings.db) as conn:
        assert snapshot(conn, CATALOG, datetime.now(UTC)) > 0
        conn.commit()


@contextlib.contextmanager
def as_grafana(settings: Settings) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with connect(settings.db) as conn:
        conn.execute(f"SET ROLE {GRAFANA_ROLE}".encode())
        conn.execute(b"SET statement_timeout = '10s'")
        yield conn
        conn.rollback()


def _context(interval_s: float) -> Context:
    now = datetime.now(UTC)
    codes = tuple(c.code for c in CATALOG.cities)
    return Context(
        start=now - timedelta(days=2),
        end=now + timedelta(minutes=1),
        interval_s=interval_s,
        variables={
            "city": Variable("city", codes),
            "sector": Variable("sector", tuple(s.value for s in Sector)),
            "target": Variable("target", (TARGET,), multi=False, include_all=False),
        },
    )


def _check(
    conn: psycopg.Connection[tuple[object, ...]], spec: SqlSpec, ctx: Context
) -> list[tuple[object, ...]]:
    sql = expand_sql(spec.sql, ctx)
    with conn.cursor() as cur:
        cur.execute(sql.encode())
        assert cur.description is not None
        got = []
        for col in cur.description:
            info = conn.adapters.types.get(col.type_code)
            got.append((col.name, info.name if info else str(col.type_code)))
        rows = cur.fetchall()
    assert [n for n, _ in got] == list(spec.column_names), sql
    for (name, pg_type), (_, want) in zip(got, spec.columns, strict=True):
        allowed = TYPES[want] | (EPOCH_TIME if want is ColType.TIME and name == "time" else set())
        assert pg_type in allowed, f"column {name!r} is {pg_type}, panel needs {want}\n{sql}"
    return rows


def test_every_panel_query_returns_the_columns_its_panel_expects(filled: Settings) -> None:
    built = provisioning.all_dashboards(CATALOG)
    checked, empty = 0, []
    with as_grafana(filled) as conn:
        for dash in built:
            for q in dash.sql:
                assert isinstance(q.query, SqlSpec)
                panel = next(
                    (p for p in dash.model.panels or [] if getattr(p, "title", None) == q.panel),
                    None,
                )
                interval = getattr(panel, "interval", None)
                ctx = _context(max(60.0, parse_duration(interval) if interval else 60.0))
                rows = _check(conn, q.query, ctx)
                checked += 1
                key = q.panel if q.ref_id in ("A", "query") else f"{q.panel}/{q.ref_id}"
                if not rows:
                    empty.append(key)
                if q.query.format == "time_series" and rows:
                    times = [r[0] for r in rows]
                    assert times == sorted(times), f"{q.panel}: time series not ordered by time"
    assert checked == sum(len(d.sql) for d in built) > 40
    assert set(empty) <= MAY_BE_EMPTY, f"unexpectedly empty: {sorted(set(empty) - MAY_BE_EMPTY)}"


def test_values_agree_with_the_registry(filled: Settings) -> None:
    """Panels whose answers are known (every device reported): they read the right relations."""
    from dashboards import coverage, sectors

    reg = generate(SEED, SCALE)
    piles = [d for d in reg.devices if d.kind == "charging_pile"]
    charging = sectors.charging()
    online = next(q.query for q in charging.sql if q.panel == "Piles online now")
    assert isinstance(online, SqlSpec)
    site_city = {s.site_id: s.city_code for s in reg.sites}
    with as_grafana(filled) as conn:
        ((n_online, registered),) = _check(conn, online, _context(60))
        assert (n_online, registered) == (len(piles), len(piles))
        city_rows = _check(conn, coverage.CITY_TABLE, _context(86400))
        assert len(city_rows) == 16
        target = CATALOG.target(TARGET)
        assert target is not None
        public = {s.site_id for s in reg.sites if s.public and s.networked}
        for row in city_rows:
            want = sum(1 for d in piles if d.site_id in public and site_city[d.site_id] == row[2])
            assert (row[3], row[4]) == (want, want), row
        geo = _check(conn, coverage.CITY_MAP, _context(86400))
        assert all(34 < float(r[1]) < 39 and 114 < float(r[2]) < 123 for r in geo)  # type: ignore[arg-type]


def test_every_sql_alert_returns_one_value_per_label_set(filled: Settings) -> None:
    specs = [s for s in alerts.all_specs(CATALOG) if isinstance(s.query, SqlSpec)]
    assert len(specs) == 4
    with as_grafana(filled) as conn:
        for spec in specs:
            assert isinstance(spec.query, SqlSpec)
            rows = _check(conn, spec.query, _context(60))
            assert rows, spec.uid
            texts = [i for i, (_, t) in enumerate(spec.query.columns) if t is ColType.TEXT]
            labels = [tuple(r[i] for i in texts) for r in rows]
            assert len(labels) == len(set(labels)), f"{spec.uid}: duplicate label sets"
            by_label = dict(zip(labels, rows, strict=True))
            if spec.uid == "qilu-target-behind":
                # a few hundred piles connected of a threshold above 180,000: far behind
                row = by_label[(TARGET, "charging")]
                assert float(row[-1]) > 99.0  # type: ignore[arg-type]
            if spec.uid == "qilu-wal-archive-stalled":
                # the shared cluster does not archive: nothing can stall (docs/operations.md)
                assert rows == [(0.0,)]
            if spec.uid == "qilu-devices-silent":
                # every device seen reported within the last seconds: none silent yet
                assert all(float(r[-1]) == 0.0 for r in rows)  # type: ignore[arg-type]
