"""One dashboard per sector: charging, substations, ranches.

"Now" panels read the registry and ``device_liveness`` (small tables; a device is online when
its newest valid reading is younger than its kind's expected interval). Series read the
``readings_1m`` / ``readings_1h`` rollups and ``site_liveness_1h``; nothing scans ``readings``.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import bargauge, gauge, piechart, stat, table
from grafana_foundation_sdk.builders import common as bcommon
from grafana_foundation_sdk.models import common as gcommon
from grafana_foundation_sdk.models import dashboard as gdash

from dashboards.board import Board, BuiltDashboard, thresholds
from dashboards.common import (
    CITY_IN,
    CITY_VARIABLE_SQL,
    N,
    S,
    T,
    city_variable,
    lit,
    series_by_city,
    ts_panel,
)
from dashboards.model import SqlSpec
from qilu.devices import CONNECTOR_STATES
from storage.coverage import GATEWAYS_INTERROGATED_TEMPLATE

WEIGHTED_AVG = "sum(r.avg * r.n) / nullif(sum(r.n), 0)"


def _board(uid: str, title: str, description: str, tag: str) -> Board:
    return Board(uid, title, description=description, tags=[tag], time_from="now-6h").variable(
        city_variable(), CITY_VARIABLE_SQL
    )


_FRESH = "l.last_seen > now() - k.expected_interval"
# the telecontrol gateways whose latest report says link up and GI complete, read from the
# minute rollup holding it (its ``last`` is the value at last_seen): dashboards read no raw
# readings (ADR 0002)
_GATEWAYS_OK = GATEWAYS_INTERROGATED_TEMPLATE.format(
    now="now()",
    relation="readings_1m",
    at="r.bucket = date_bin(interval '1 minute', lv.last_seen, '2000-01-01 00:00+00')",
    value="r.last",
)
# device ``d`` (liveness ``l``, kind ``k``) connected now, of any kind: the coverage rule
# (storage/coverage.py)
LIVE_NOW = f"{_FRESH} AND (d.kind <> 'telecontrol_gateway' OR d.device_pk IN ({_GATEWAYS_OK}))"


def live_now(kind: str) -> str:
    """Whether device ``d`` of ``kind`` is connected now (:data:`LIVE_NOW`, for one kind)."""
    return (
        f"{_FRESH} AND d.device_pk IN ({_GATEWAYS_OK})" if kind == "telecontrol_gateway" else _FRESH
    )


def online_now(kind: str, label: str) -> SqlSpec:
    """Devices of one kind online now / registered, for the selected cities."""
    return SqlSpec(
        f"""SELECT count(*) FILTER (WHERE {live_now(kind)}) AS "{label}",
  count(*) AS "registered"
FROM devices d
JOIN sites s ON s.site_id = d.site_id
JOIN device_kinds k ON k.kind = d.kind
LEFT JOIN device_liveness l ON l.device_pk = d.device_pk
WHERE d.kind = {lit(kind)} AND {CITY_IN}""",
        ((label, N), ("registered", N)),
    )


def online_by_city(kind: str) -> SqlSpec:
    return SqlSpec(
        f"""SELECT c.name_en AS "city",
  100.0 * count(*) FILTER (WHERE {live_now(kind)})
    / nullif(count(*), 0) AS "online"
FROM devices d
JOIN sites s ON s.site_id = d.site_id
JOIN cities c ON c.code = s.city_code
JOIN device_kinds k ON k.kind = d.kind
LEFT JOIN device_liveness l ON l.device_pk = d.device_pk
WHERE d.kind = {lit(kind)} AND {CITY_IN}
GROUP BY c.code, c.name_en
ORDER BY c.code""",
        (("city", S), ("online", N)),
    )


def reporting_per_hour(sector: str, label: str) -> SqlSpec:
    """Devices reporting per hour by city, from the per-site liveness rollup."""
    return SqlSpec(
        f"""SELECT h.bucket AS "time", c.name_en AS "metric", sum(h.devices_reporting) AS "{label}"
FROM site_liveness_1h h
JOIN sites s ON s.site_id = h.site_id
JOIN cities c ON c.code = s.city_code
WHERE s.sector = {lit(sector)} AND {CITY_IN} AND $__timeFilter(h.bucket)
GROUP BY 1, 2
ORDER BY 1""",
        (("time", T), ("metric", S), (label, N)),
        "time_series",
    )


def latest_alarms(keys: dict[str, str], kind: str, what: str) -> SqlSpec:
    """Devices whose newest 1-minute bucket of an alarm metric (last 15 min) is in alarm."""
    names = ", ".join(f"({lit(k)}, {lit(v)})" for k, v in keys.items())
    return SqlSpec(
        f"""WITH alarm(key, name) AS (VALUES {names}),
newest AS (
  SELECT DISTINCT ON (r.device_pk, r.metric_id) r.device_pk, r.metric_id, r.bucket, r.last
  FROM readings_1m r
  WHERE r.metric_id IN (SELECT m.metric_id FROM metrics m JOIN alarm a ON a.key = m.key)
    AND r.bucket > now() - interval '15 minutes'
  ORDER BY r.device_pk, r.metric_id, r.bucket DESC)
SELECT d.device_id AS "{what}", s.name AS "site", c.name_en AS "city", a.name AS "alarm",
  n.bucket AS "last seen in alarm"
FROM newest n
JOIN metrics m ON m.metric_id = n.metric_id
JOIN alarm a ON a.key = m.key
JOIN devices d ON d.device_pk = n.device_pk
JOIN sites s ON s.site_id = d.site_id
JOIN cities c ON c.code = s.city_code
WHERE n.last >= 1 AND d.kind = {lit(kind)} AND {CITY_IN}
ORDER BY n.bucket DESC
LIMIT 200""",
        ((what, S), ("site", S), ("city", S), ("alarm", S), ("last seen in alarm", T)),
    )


def _pct_bars(title: str) -> bargauge.Panel:
    return (
        bargauge.Panel()
        .title(title)
        .unit("percent")
        .min(0)
        .max(100)
        .thresholds(thresholds((None, "red"), (80.0, "orange"), (95.0, "green")))
        .display_mode(gcommon.BarGaugeDisplayMode.GRADIENT)
        .orientation(gcommon.VizOrientation.HORIZONTAL)
        .reduce_options(bcommon.ReduceDataOptions().values(True).calcs(["lastNotNull"]))
        .span(10)
        .height(9)
    )


def _stat(title: str, unit: str = "short", span: int = 4) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .unit(unit)
        .span(span)
        .height(5)
        .reduce_options(bcommon.ReduceDataOptions().calcs(["lastNotNull"]))
        .graph_mode(gcommon.BigValueGraphMode.NONE)
        .thresholds(thresholds((None, "blue")))
    )


# ----------------------------------------------------------------------------------- charging


def charging() -> BuiltDashboard:
    states = ", ".join(f"({i}, {lit(name)})" for i, name in enumerate(CONNECTOR_STATES))
    board = _board(
        "qilu-charging",
        "Qilu — Charging",
        "Public charging piles: online by city, OCPP connector states, faults, energy delivered.",
        "charging",
    )
    board.row("Piles online")
    board.sql(
        _stat("Piles online now").description(
            "Piles whose newest valid reading is within the kind's expected interval (2 min)."
        ),
        online_now("charging_pile", "online"),
    )
    board.sql(_pct_bars("Piles online by city"), online_by_city("charging_pile"))
    board.sql(
        ts_panel("Piles reporting per hour", "short", span=10, height=9, interval="1h"),
        reporting_per_hour("charging", "piles reporting"),
    )

    board.row("Connectors and faults")
    board.sql(
        piechart.Panel()
        .title("Connector states now")
        .description("OCPP 1.6 status of each pile's newest 1-minute bucket (last 15 minutes).")
        .span(8)
        .height(9)
        .reduce_options(bcommon.ReduceDataOptions().values(True).calcs(["lastNotNull"]))
        .hide_from(bcommon.HideSeriesConfig().legend(False).tooltip(False).viz(False)),
        SqlSpec(
            f"""WITH states(code, state) AS (VALUES {states}),
newest AS (
  SELECT DISTINCT ON (r.device_pk) r.device_pk, r.last
  FROM readings_1m r
  JOIN metrics m ON m.metric_id = r.metric_id
  JOIN devices d ON d.device_pk = r.device_pk
  JOIN sites s ON s.site_id = d.site_id
  WHERE m.key = 'connector_status' AND {CITY_IN} AND r.bucket > now() - interval '15 minutes'
  ORDER BY r.device_pk, r.bucket DESC)
SELECT st.state AS "state", count(n.device_pk) AS "piles"
FROM states st LEFT JOIN newest n ON round(n.last) = st.code
GROUP BY st.code, st.state
ORDER BY st.code""",
            (("state", S), ("piles", N)),
        ),
    )
    board.sql(
        ts_panel("Connector states over time", "short", span=16, height=9, stacked=True),
        SqlSpec(
            f"""WITH states(code, state) AS (VALUES {states})
SELECT $__timeGroupAlias(r.bucket, $__interval), st.state AS "metric",
  count(DISTINCT r.device_pk) AS "piles"
FROM readings_1m r
JOIN metrics m ON m.metric_id = r.metric_id
JOIN devices d ON d.device_pk = r.device_pk
JOIN sites s ON s.site_id = d.site_id
JOIN states st ON st.code = round(r.last)
WHERE m.key = 'connector_status' AND {CITY_IN} AND $__timeFilter(r.bucket)
GROUP BY 1, 2
ORDER BY 1""",
            (("time", T), ("metric", S), ("piles", N)),
            "time_series",
        ),
    )
    board.sql(
        ts_panel(
            "Piles with a fault",
            "short",
            description="Piles that reported fault = 1 at least once in the interval.",
            steps=((None, "green"), (1.0, "red")),
        ),
        SqlSpec(
            f"""SELECT $__timeGroupAlias(r.bucket, $__interval), c.name_en AS "metric",
  count(DISTINCT r.device_pk) FILTER (WHERE r.max >= 1) AS "faulted piles"
FROM readings_1m r
JOIN metrics m ON m.metric_id = r.metric_id
JOIN devices d ON d.device_pk = r.device_pk
JOIN sites s ON s.site_id = d.site_id
JOIN cities c ON c.code = s.city_code
WHERE m.key = 'fault' AND {CITY_IN} AND $__timeFilter(r.bucket)
GROUP BY 1, 2
ORDER BY 1""",
            (("time", T), ("metric", S), ("faulted piles", N)),
            "time_series",
        ),
    )
    board.sql(
        table.Panel().show_header(True).title("Piles in fault now").span(12).height(8),
        latest_alarms({"fault": "fault"}, "charging_pile", "pile"),
    )

    board.row("Energy")
    board.sql(
        ts_panel(
            "Energy delivered per hour",
            "kwatth",
            description=(
                "Per pile and hour, the rise of the energy register (max - min of the hour), "
                "summed by city. The rise between two hours' last and first reading (one "
                "reporting interval) is not counted."
            ),
            interval="1h",
            stacked=True,
        ),
        series_by_city(
            relation="readings_1h",
            kind="charging_pile",
            metric="energy_kwh",
            aggregate="sum(greatest(r.max - r.min, 0))",
            label="energy",
        ),
    )
    board.sql(
        ts_panel("Charging power", "kwatt", description="Sum of the piles' mean power."),
        SqlSpec(
            f"""SELECT $__timeGroupAlias(p.bucket, $__interval), p.city AS "metric",
  avg(p.kw) AS "power"
FROM (
  SELECT r.bucket, c.name_en AS city, sum(r.avg) AS kw
  FROM readings_1m r
  JOIN metrics m ON m.metric_id = r.metric_id
  JOIN devices d ON d.device_pk = r.device_pk
  JOIN sites s ON s.site_id = d.site_id
  JOIN cities c ON c.code = s.city_code
  WHERE m.key = 'power_kw' AND {CITY_IN} AND $__timeFilter(r.bucket)
  GROUP BY r.bucket, c.name_en) p
GROUP BY 1, 2
ORDER BY 1""",
            (("time", T), ("metric", S), ("power", N)),
            "time_series",
        ),
    )
    return board.build()


# --------------------------------------------------------------------------------- substations

MONITORING_PER_SITE = f"""WITH per_site AS (
  SELECT s.site_id, s.city_code, count(d.device_pk) AS n,
    count(d.device_pk) FILTER (WHERE {LIVE_NOW}) AS live
  FROM sites s
  LEFT JOIN devices d ON d.site_id = s.site_id
  LEFT JOIN device_kinds k ON k.kind = d.kind
  LEFT JOIN device_liveness l ON l.device_pk = d.device_pk
  WHERE s.sector = 'substation' AND s.voltage_kv >= 220 AND {CITY_IN}
  GROUP BY s.site_id, s.city_code)"""
CONNECTED = "CASE WHEN p.n > 0 AND p.live = p.n THEN 1.0 ELSE 0.0 END"


def substations() -> BuiltDashboard:
    board = _board(
        "qilu-substations",
        "Qilu — Substations",
        "220 kV+ substations: centralized-monitoring connection ratio, transformer "
        "temperatures, SF6 and partial-discharge alarms.",
        "substation",
    )
    board.row("Centralized monitoring")
    board.sql(
        gauge.Panel()
        .show_threshold_markers(True)
        .title("220 kV+ substations under centralized monitoring")
        .description(
            "A substation counts when every one of its devices is connected now (its "
            "telecontrol link: up and interrogated), as the coverage target counts it."
        )
        .unit("percentunit")
        .min(0)
        .max(1)
        .thresholds(thresholds((None, "red"), (0.9, "orange"), (1.0, "green")))
        .span(6)
        .height(8),
        SqlSpec(
            MONITORING_PER_SITE
            + f"""
SELECT coalesce(avg({CONNECTED}), 0) AS "connected ratio" FROM per_site p""",
            (("connected ratio", N),),
        ),
    )
    board.sql(
        bargauge.Panel()
        .title("Connection ratio by city")
        .unit("percentunit")
        .min(0)
        .max(1)
        .thresholds(thresholds((None, "red"), (0.9, "orange"), (1.0, "green")))
        .display_mode(gcommon.BarGaugeDisplayMode.GRADIENT)
        .orientation(gcommon.VizOrientation.HORIZONTAL)
        .reduce_options(bcommon.ReduceDataOptions().values(True).calcs(["lastNotNull"]))
        .span(8)
        .height(8),
        SqlSpec(
            MONITORING_PER_SITE
            + f"""
SELECT c.name_en AS "city", avg({CONNECTED}) AS "connected ratio"
FROM per_site p JOIN cities c ON c.code = p.city_code
GROUP BY c.code, c.name_en
ORDER BY c.code""",
            (("city", S), ("connected ratio", N)),
        ),
    )
    board.sql(
        ts_panel(
            "Connection ratio per day",
            "percentunit",
            steps=((None, "red"), (1.0, "green")),
            span=10,
            height=8,
            interval="1d",
        ),
        SqlSpec(
            """SELECT d.day::timestamp AT TIME ZONE 'Asia/Shanghai' AS "time",
  c.name_en AS "metric", d.value AS "ratio"
FROM coverage_daily d JOIN cities c ON c.code = d.city_code
WHERE d.target_id = 'substation-220kv-monitoring-2024' AND d.city_code IN (${city})
  AND d.day BETWEEN
    ($__timeFrom()::timestamptz AT TIME ZONE 'Asia/Shanghai')::date
  AND ($__timeTo()::timestamptz AT TIME ZONE 'Asia/Shanghai')::date
ORDER BY 1, 2""",
            (("time", T), ("metric", S), ("ratio", N)),
            "time_series",
        ),
    )

    board.row("Telecontrol links (IEC 104)")
    board.sql(
        _stat("Telecontrol links connected now", span=6).description(
            "Substation telecontrol gateways whose latest report (collectors/iec104, every "
            "60 s while healthy, at once on a change) says link up and general interrogation "
            "complete, within 180 s: the coverage rule (storage/coverage.py). A link that "
            "connects but never completes a GI, or goes down, is not connected."
        ),
        online_now("telecontrol_gateway", "links"),
    )
    board.sql(
        _pct_bars("Telecontrol links connected by city"), online_by_city("telecontrol_gateway")
    )

    board.row("Transformers")
    board.sql(
        ts_panel(
            "Top-oil temperature (hottest transformer)",
            "celsius",
            steps=((None, "green"), (85.0, "orange"), (95.0, "red")),
        ),
        series_by_city(
            relation="readings_1m",
            kind="transformer",
            metric="oil_temp_c",
            aggregate="max(r.max)",
            label="oil",
        ),
    )
    board.sql(
        ts_panel(
            "Winding hot-spot temperature (hottest transformer)",
            "celsius",
            steps=((None, "green"), (98.0, "orange"), (120.0, "red")),
        ),
        series_by_city(
            relation="readings_1m",
            kind="transformer",
            metric="winding_temp_c",
            aggregate="max(r.max)",
            label="winding",
        ),
    )
    board.sql(
        table.Panel()
        .show_header(True)
        .title("Hottest transformers (last 15 minutes)")
        .span(24)
        .height(8)
        .override_by_name(
            "oil °C", [_unit("celsius"), _thresholds_override(((None, "green"), (85, "red")))]
        )
        .override_by_name("winding °C", [_unit("celsius")])
        .override_by_name("load", [_unit("percent")]),
        SqlSpec(
            f"""SELECT d.device_id AS "transformer", s.name AS "substation", c.name_en AS "city",
  max(r.max) FILTER (WHERE m.key = 'oil_temp_c') AS "oil °C",
  max(r.max) FILTER (WHERE m.key = 'winding_temp_c') AS "winding °C",
  max(r.max) FILTER (WHERE m.key = 'load_pct') AS "load"
FROM readings_1m r
JOIN metrics m ON m.metric_id = r.metric_id
JOIN devices d ON d.device_pk = r.device_pk
JOIN sites s ON s.site_id = d.site_id
JOIN cities c ON c.code = s.city_code
WHERE d.kind = 'transformer' AND {CITY_IN} AND r.bucket > now() - interval '15 minutes'
GROUP BY d.device_id, s.name, c.name_en
ORDER BY 4 DESC NULLS LAST
LIMIT 20""",
            (
                ("transformer", S),
                ("substation", S),
                ("city", S),
                ("oil °C", N),
                ("winding °C", N),
                ("load", N),
            ),
        ),
    )

    board.row("GIS: SF6 and partial discharge")
    board.sql(
        ts_panel(
            "GIS monitors in alarm",
            "short",
            steps=((None, "green"), (1.0, "red")),
            stacked=True,
        ),
        SqlSpec(
            f"""SELECT $__timeGroupAlias(r.bucket, $__interval),
  count(DISTINCT r.device_pk) FILTER (WHERE m.key = 'sf6_alarm' AND r.max >= 1) AS "SF6 alarm",
  count(DISTINCT r.device_pk) FILTER (WHERE m.key = 'pd_alarm' AND r.max >= 1)
    AS "partial discharge alarm"
FROM readings_1m r
JOIN metrics m ON m.metric_id = r.metric_id
JOIN devices d ON d.device_pk = r.device_pk
JOIN sites s ON s.site_id = d.site_id
WHERE m.key IN ('sf6_alarm', 'pd_alarm') AND {CITY_IN} AND $__timeFilter(r.bucket)
GROUP BY 1
ORDER BY 1""",
            (("time", T), ("SF6 alarm", N), ("partial discharge alarm", N)),
            "time_series",
        ),
    )
    board.sql(
        table.Panel()
        .show_header(True)
        .title("Active SF6 and partial-discharge alarms")
        .span(12)
        .height(8),
        latest_alarms(
            {"sf6_alarm": "SF6 low pressure", "pd_alarm": "partial discharge"},
            "gis_monitor",
            "monitor",
        ),
    )
    board.sql(
        ts_panel(
            "SF6 gas density (lowest)",
            "suffix: MPa",
            steps=((None, "red"), (0.45, "orange"), (0.5, "green")),
        ),
        series_by_city(
            relation="readings_1m",
            kind="gis_monitor",
            metric="sf6_pressure_mpa",
            aggregate="min(r.min)",
            label="SF6",
        ),
    )
    board.sql(
        ts_panel(
            "Partial discharge (highest)",
            "suffix: pC",
            steps=((None, "green"), (500.0, "orange"), (1000.0, "red")),
        ),
        series_by_city(
            relation="readings_1m",
            kind="gis_monitor",
            metric="pd_pc",
            aggregate="max(r.max)",
            label="PD",
        ),
    )
    return board.build()


def _unit(unit: str) -> gdash.DynamicConfigValue:
    return gdash.DynamicConfigValue(id_val="unit", value=unit)


def _thresholds_override(
    steps: tuple[tuple[float | None, str], ...],
) -> gdash.DynamicConfigValue:
    return gdash.DynamicConfigValue(id_val="thresholds", value=thresholds(*steps).build())


# ------------------------------------------------------------------------------------- ranches


def ranches() -> BuiltDashboard:
    board = _board(
        "qilu-ranches",
        "Qilu — Ranches",
        "Smart ranches: collars reporting, barn climate, water and feed.",
        "ranch",
    )
    board.row("Collars")
    board.sql(_stat("Collars online now"), online_now("collar", "online"))
    board.sql(_pct_bars("Collars online by city"), online_by_city("collar"))
    board.sql(
        ts_panel("Collars reporting per hour", "short", span=10, height=9, interval="1h"),
        SqlSpec(
            f"""SELECT $__timeGroupAlias(r.bucket, $__interval), c.name_en AS "metric",
  count(DISTINCT r.device_pk) AS "collars"
FROM readings_1h r
JOIN metrics m ON m.metric_id = r.metric_id
JOIN devices d ON d.device_pk = r.device_pk
JOIN sites s ON s.site_id = d.site_id
JOIN cities c ON c.code = s.city_code
WHERE d.kind = 'collar' AND m.key = 'body_temp_c' AND {CITY_IN} AND $__timeFilter(r.bucket)
GROUP BY 1, 2
ORDER BY 1""",
            (("time", T), ("metric", S), ("collars", N)),
            "time_series",
        ),
    )
    board.sql(
        ts_panel(
            "Ranch devices reporting per hour (all kinds)",
            "short",
            span=12,
            height=8,
            interval="1h",
        ),
        reporting_per_hour("ranch", "devices reporting"),
    )
    board.sql(
        ts_panel(
            "Cattle body temperature (highest)",
            "celsius",
            steps=((None, "blue"), (38.0, "green"), (39.5, "orange"), (40.5, "red")),
        ),
        series_by_city(
            relation="readings_1m",
            kind="collar",
            metric="body_temp_c",
            aggregate="max(r.max)",
            label="body",
        ),
    )

    board.row("Barn climate")
    for title, metric, agg, unit, steps, label in (
        (
            "Barn temperature (mean)",
            "temp_c",
            WEIGHTED_AVG,
            "celsius",
            ((None, "blue"), (5.0, "green"), (25.0, "orange"), (30.0, "red")),
            "temperature",
        ),
        (
            "Barn humidity (mean)",
            "humidity_pct",
            WEIGHTED_AVG,
            "humidity",
            ((None, "orange"), (40.0, "green"), (80.0, "orange")),
            "humidity",
        ),
        (
            "Ammonia (highest)",
            "nh3_ppm",
            "max(r.max)",
            "ppm",
            ((None, "green"), (15.0, "orange"), (25.0, "red")),
            "NH3",
        ),
        (
            "Carbon dioxide (highest)",
            "co2_ppm",
            "max(r.max)",
            "ppm",
            ((None, "green"), (2500.0, "orange"), (3000.0, "red")),
            "CO2",
        ),
    ):
        board.sql(
            ts_panel(title, unit, steps=steps, span=6),
            series_by_city(
                relation="readings_1m",
                kind="barn_climate",
                metric=metric,
                aggregate=agg,
                label=label,
            ),
        )

    board.row("Water and feed")
    board.sql(
        ts_panel(
            "Water trough level (lowest)",
            "percent",
            steps=((None, "red"), (20.0, "orange"), (40.0, "green")),
            span=8,
        ),
        series_by_city(
            relation="readings_1m",
            kind="water_trough",
            metric="level_pct",
            aggregate="min(r.min)",
            label="level",
        ),
    )
    board.sql(
        ts_panel("Water inflow (mean per trough)", "suffix: L/min", span=8),
        series_by_city(
            relation="readings_1m",
            kind="water_trough",
            metric="flow_l_min",
            aggregate=WEIGHTED_AVG,
            label="inflow",
        ),
    )
    board.sql(
        ts_panel(
            "Feed silo level (lowest)",
            "percent",
            steps=((None, "red"), (15.0, "orange"), (30.0, "green")),
            span=8,
            interval="5m",
        ),
        series_by_city(
            relation="readings_1m",
            kind="feed_silo",
            metric="level_pct",
            aggregate="min(r.min)",
            label="level",
        ),
    )
    board.sql(
        _stat("Feed in silos now", "masskg", span=6),
        SqlSpec(
            f"""SELECT coalesce(sum(n.last), 0) AS "feed"
FROM (
  SELECT DISTINCT ON (r.device_pk) r.device_pk, r.last
  FROM readings_1h r
  JOIN metrics m ON m.metric_id = r.metric_id
  JOIN devices d ON d.device_pk = r.device_pk
  JOIN sites s ON s.site_id = d.site_id
  WHERE d.kind = 'feed_silo' AND m.key = 'feed_kg' AND {CITY_IN}
    AND r.bucket > now() - interval '1 day'
  ORDER BY r.device_pk, r.bucket DESC) n""",
            (("feed", N),),
        ),
    )
    return board.build()
