"""One liveness rule (migration 066): coverage, the API's queries, the dashboards' panels and
the alert rules read the same definition, over the same registry (today's, in service), so
they agree, on the real PostgreSQL, at the rule's boundary and after a registry change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from dashboards import alerts, sectors
from dashboards.macros import expand_sql
from qilu.catalog import load_catalog
from qilu.contract import Sector
from qilu.devices import KINDS
from qilu.registry import Device, Registry, Site
from qilu.settings import DatabaseSettings
from storage import coverage, queries_api
from storage.coverage_incremental import IncrementalCoverage
from storage.db import connect
from storage.registry_store import load_registry
from tests.integration.test_dashboards_sql import _context

pytestmark = pytest.mark.integration

CATALOG = load_catalog()
TARGET = "substation-220kv-monitoring-2024"  # a site counts when all its devices are connected
CITY = "370100"


def _registry() -> Registry:
    """Two 220 kV substations of one city: A with a transformer and a bus meter, B with a
    transformer (no telecontrol gateway: its extra gate is another test's,
    tests/integration/test_iec104_coverage.py)."""
    reg = Registry()
    for name in ("A", "B"):
        reg.sites.append(Site(f"SUB-L-{name}", Sector.SUBSTATION, CITY, name, voltage_kv=220))
        reg.devices.append(Device(f"SUB-L-{name}-T", f"SUB-L-{name}", "transformer"))
    reg.devices.append(Device("SUB-L-A-BUS", "SUB-L-A", "bus_meter"))
    return reg


def _pk(conn: psycopg.Connection[tuple[object, ...]], device_id: str) -> int:
    row = conn.execute("SELECT device_pk FROM devices WHERE device_id = %s", (device_id,))
    (pk,) = row.fetchall()
    return int(str(pk[0]))


def _seen(conn: psycopg.Connection[tuple[object, ...]], device_id: str, at: datetime) -> None:
    conn.execute(
        "INSERT INTO device_liveness (device_pk, last_seen) VALUES (%s, %s)"
        " ON CONFLICT (device_pk) DO UPDATE SET last_seen = EXCLUDED.last_seen",
        (_pk(conn, device_id), at),
    )
    conn.commit()


def _coverage(db: DatabaseSettings) -> tuple[int, int]:
    with connect(db) as conn:
        figures = coverage.compute(conn, CATALOG, datetime.now(UTC))
    (tc,) = [t for t in figures if t.target.id == TARGET]
    (city,) = [c for c in tc.cities if c.city_code == CITY]
    return city.numerator, city.denominator


def _panel(db: DatabaseSettings) -> tuple[int, int]:
    """The substation board's figures of the target, expanded and run as Grafana runs them."""
    target = CATALOG.target(TARGET)
    assert target is not None
    query = expand_sql(sectors.target_figures(target.measure), _context(60))
    with connect(db) as conn:
        rows = conn.execute(query.encode()).fetchall()
    by_city = {str(r[0]): (int(str(r[1])), int(str(r[2]))) for r in rows}
    return by_city.get(CITY, (0, 0))


# What the substation board ran before migration 066 (its 220 kV+ monitoring gauge): the
# registry as it is now (``sites``, ``devices``, whatever their status), not the day's.
CURRENT_REGISTRY_PANEL = """SELECT count(*) FILTER (WHERE p.n > 0 AND p.live = p.n), count(*)
FROM (
  SELECT s.site_id, count(d.device_pk) AS n,
    count(d.device_pk) FILTER (WHERE l.last_seen > now() - k.expected_interval) AS live
  FROM sites s
  LEFT JOIN devices d ON d.site_id = s.site_id
  LEFT JOIN device_kinds k ON k.kind = d.kind
  LEFT JOIN device_liveness l ON l.device_pk = d.device_pk
  WHERE s.sector = 'substation' AND s.voltage_kv >= 220
  GROUP BY s.site_id) p"""


def test_the_target_panel_agrees_with_coverage_after_a_registry_change(
    db: DatabaseSettings,
) -> None:
    with connect(db) as conn:
        load_registry(conn, _registry())
        conn.commit()
        now = datetime.now(UTC)
        _seen(conn, "SUB-L-A-T", now)
        _seen(conn, "SUB-L-B-T", now)
    # A's bus meter never reported: A is not connected, B is
    assert _coverage(db) == _panel(db) == (1, 2)

    # the silent bus meter goes into maintenance today: out of today's registry in service
    with connect(db) as conn:
        conn.execute("UPDATE devices SET status = 'maintenance' WHERE device_id = 'SUB-L-A-BUS'")
        conn.commit()
        current = conn.execute(CURRENT_REGISTRY_PANEL).fetchone()
    assert _coverage(db) == (2, 2)
    assert _panel(db) == (2, 2)
    # the board's former query, on the current registry, still counts the meter: it disagreed
    assert current == (1, 2)


def test_every_reader_applies_the_rule_at_its_boundary(db: DatabaseSettings) -> None:
    """Seen exactly one expected interval ago: offline for all; a microsecond later: online."""
    interval = timedelta(seconds=KINDS["transformer"].expected_interval_s)
    with connect(db) as conn:
        load_registry(conn, _registry())
        conn.commit()
        now = datetime.now(UTC).replace(microsecond=0)
        _seen(conn, "SUB-L-B-T", now)
        incremental = IncrementalCoverage(CATALOG)
        for seen, online in ((now - interval, False), (now - interval + timedelta(0, 0, 1), True)):
            _seen(conn, "SUB-L-A-T", seen)
            _seen(conn, "SUB-L-A-BUS", now)
            rule = conn.execute(
                "SELECT qilu_seen_within(%s, make_interval(secs => %s), %s)",
                (seen, interval.total_seconds(), now),
            ).fetchone()
            view = conn.execute(
                "SELECT state, online FROM qilu_device_connected(%s) WHERE device_id = %s",
                (now, "SUB-L-A-T"),
            ).fetchone()
            conn.commit()
            (api,) = queries_api.list_devices(
                conn,
                now,
                queries_api.Area(),
                queries_api.AssetFilter(),
                after=None,
                limit=10,
                device_id="SUB-L-A-T",
            )
            conn.commit()
            figures = coverage.compute(conn, CATALOG, now)
            (tc,) = [t for t in figures if t.target.id == TARGET]
            kept = [t for t in incremental.compute(conn, now) if t.target.id == TARGET]
            conn.commit()
            want_state = "online" if online else "offline"
            assert rule == (online,)
            assert view == (want_state, online)
            assert api.state.value == want_state
            # site A counts only while its transformer is online (its bus meter is)
            assert tc.province.numerator == 1 + online
            assert kept[0].province == tc.province


def test_the_alert_rules_read_the_view(db: DatabaseSettings) -> None:
    with connect(db) as conn:
        load_registry(conn, _registry())
        conn.commit()
        now = datetime.now(UTC)
        _seen(conn, "SUB-L-A-T", now - timedelta(hours=1))  # silent: offline
        _seen(conn, "SUB-L-B-T", now)
        _seen(conn, "SUB-L-A-BUS", now)
        silent = alerts.DEVICES_SILENT
        rows = conn.execute(expand_sql(silent.sql, _context(60)).encode()).fetchall()
        assert "device_connected" in silent.sql
        got = [(c, s, float(str(v))) for c, s, v in rows]
        assert got == [(CITY, "substation", pytest.approx(100.0 / 3))]  # type: ignore[comparison-overlap]
        # the device leaves today's registry in service: no longer counted as silent
        conn.execute("UPDATE devices SET status = 'maintenance' WHERE device_id = 'SUB-L-A-T'")
        conn.commit()
        rows = conn.execute(expand_sql(silent.sql, _context(60)).encode()).fetchall()
        assert [(c, s, float(str(v))) for c, s, v in rows] == [(CITY, "substation", 0.0)]
