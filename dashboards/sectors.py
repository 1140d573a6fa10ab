"""One dashboard per sector, built from data: the sector's device kinds (qilu/devices.py) and its
coverage targets (qilu/catalog.py, qilu/data/targets.toml). No metric key, device kind or
target id is written here; adding a kind, a metric with a :class:`~qilu.devices.Chart` or a
target adds its panels.

Each board, in order:

* **Targets**: each measured target of the sector, its value now and by city, counted as
  coverage counts it (the registry of today's province day, in service, and the liveness rule
  of migration 066, through the ``device_connected`` and ``sites_in_service`` views; a
  telecontrol gateway also needs its latest report to say interrogated), and its daily series
  from ``coverage_daily``;
* per device kind: how many are online now (the same views) and the share by city; a STATE
  metric with named states: the states now and over time; each metric's chart (a series per
  city from the minute or hour rollup, or one figure now); its ALARM metrics: devices in alarm
  over time and now; with ``rank_by``: the devices highest in that metric;
* the sector's devices reporting per hour (``site_liveness_1h``).

Series read the ``readings_1m`` / ``readings_1h`` rollups; nothing scans ``readings``
(ADR 0002).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from grafana_foundation_sdk.builders import bargauge, gauge, piechart, stat, table
from grafana_foundation_sdk.builders import common as bcommon
from grafana_foundation_sdk.models import common as gcommon
from grafana_foundation_sdk.models import dashboard as gdash

from dashboards.board import Board, BuiltDashboard, thresholds
from dashboards.common import (
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
from qilu.catalog import SITE_ATTRIBUTES, Catalog, Measure, Target, TargetKind, load_catalog
from qilu.contract import Sector
from qilu.devices import (
    DEVICE_KINDS,
    Aggregate,
    Chart,
    DeviceKind,
    MetricKind,
    MetricSpec,
    Steps,
)
from storage.coverage import GATED_KIND, GATEWAYS_INTERROGATED_TEMPLATE

WEIGHTED_AVG = "sum(r.avg * r.n) / nullif(sum(r.n), 0)"


@dataclass(frozen=True, slots=True)
class SectorBoard:
    uid: str
    title: str
    description: str


BOARDS: dict[Sector, SectorBoard] = {
    Sector.CHARGING: SectorBoard(
        "qilu-charging",
        "Qilu — Charging",
        "Public charging piles: targets, piles online by city, connector states, faults, "
        "energy delivered.",
    ),
    Sector.SUBSTATION: SectorBoard(
        "qilu-substations",
        "Qilu — Substations",
        "Substations: centralized-monitoring targets, telecontrol links, transformer "
        "temperatures, SF6 and partial-discharge alarms.",
    ),
    Sector.RANCH: SectorBoard(
        "qilu-ranches",
        "Qilu — Ranches",
        "Smart ranches: collars reporting, barn climate, water and feed.",
    ),
}

# Grafana's unit for a metric's unit (qilu/devices.py); any other is shown as a suffix
_UNITS = {
    "degC": "celsius",
    "kW": "kwatt",
    "kWh": "kwatth",
    "kV": "kvolt",
    "Hz": "hertz",
    "%": "percent",
    "ppm": "ppm",
    "kg": "masskg",
    "": "short",
}


def grafana_unit(unit: str) -> str:
    return _UNITS.get(unit, f"suffix: {unit}")


# --- liveness: the views of migration 066 ------------------------------------------------------
# the telecontrol gateways whose latest report says link up and GI complete, read from the
# minute rollup holding it (its ``last`` is the value at last_seen): dashboards read no raw
# readings (ADR 0002)
_GATEWAYS_OK = GATEWAYS_INTERROGATED_TEMPLATE.format(
    now="now()",
    relation="readings_1m",
    at="r.bucket = date_bin(interval '1 minute', lv.last_seen, '2000-01-01 00:00+00')",
    value="r.last",
)


def live(alias: str = "c") -> str:
    """Whether the ``device_connected`` row ``alias`` is connected now, as coverage counts it:
    online by the liveness rule, and for a telecontrol gateway its latest report passes."""
    return (
        f"({alias}.online AND ({alias}.kind <> {lit(GATED_KIND)}"
        f" OR {alias}.device_pk IN ({_GATEWAYS_OK})))"
    )


def city_in(alias: str) -> str:
    """``city_code IN (${city})``: the city variable is multi-value with "All"."""
    return f"{alias}.city_code IN (${{city}})"


CITY_IN = city_in("s")


def online_now(kind: DeviceKind, label: str = "online") -> SqlSpec:
    """Devices of one kind connected now / in service today, for the selected cities."""
    return SqlSpec(
        f"""SELECT count(*) FILTER (WHERE {live()}) AS "{label}",
  count(*) AS "registered"
FROM device_connected c
WHERE c.kind = {lit(kind.key)} AND {city_in("c")}""",
        ((label, N), ("registered", N)),
    )


def online_by_city(kind: DeviceKind) -> SqlSpec:
    return SqlSpec(
        f"""SELECT ci.name_en AS "city",
  100.0 * count(*) FILTER (WHERE {live()})
    / nullif(count(*), 0) AS "online"
FROM device_connected c
JOIN cities ci ON ci.code = c.city_code
WHERE c.kind = {lit(kind.key)} AND {city_in("c")}
GROUP BY ci.code, ci.name_en
ORDER BY ci.code""",
        (("city", S), ("online", N)),
    )


# --- targets -----------------------------------------------------------------------------------
def _value(v: bool | int) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(int(v))


def _site_conditions(attrs: Mapping[str, bool | int], op: str) -> list[str]:
    out = []
    for name, value in sorted(attrs.items()):
        if name not in SITE_ATTRIBUTES:  # the catalog checks it too; never SQL from elsewhere
            raise ValueError(f"unknown site attribute {name!r}")
        out.append(f's."{name}" {op} {_value(value)}')
    return out


def _and(parts: Sequence[str]) -> str:
    return " AND ".join(parts) if parts else "true"


def target_figures(m: Measure) -> str:
    """SQL returning (city_code, numerator, denominator) of a measure now, for the selected
    cities: :func:`storage.coverage.build_query` over the views of migration 066 (today's
    registry in service, the liveness rule, the gateways' gate). A T/CEC 102 operator's quiet
    piles, which coverage also counts while their operator's link is healthy, are counted
    here only by their readings (their rule reads raw readings, ADR 0002)."""
    site = [
        *_site_conditions(m.where, "="),
        *_site_conditions(m.min, ">="),
        *([f"s.sector = {lit(m.sector.value)}"] if m.sector is not None else []),
        CITY_IN,
    ]
    numer = _and(_site_conditions(m.numerator, "="))
    if m.unit == "device":
        kind = f"c.kind = {lit(m.device_kind)}" if m.device_kind is not None else "true"
        cond = f"{numer} AND {live()}" if m.connected else numer
        return f"""SELECT s.city_code, count(*) FILTER (WHERE {cond}) AS numerator,
  count(*) AS denominator
FROM device_connected c
JOIN sites_in_service s ON s.site_id = c.site_id
WHERE {kind} AND {_and(site)}
GROUP BY s.city_code"""
    kind = f" AND c.kind = {lit(m.device_kind)}" if m.device_kind is not None else ""
    rule = "n_conn > 0" if m.site_rule == "any" else "n_dev > 0 AND n_conn = n_dev"
    cond = f"num_ok AND {rule}" if m.connected else "num_ok"
    return f"""WITH per_site AS (
  SELECT s.site_id, s.city_code, bool_and({numer}) AS num_ok, count(c.device_pk) AS n_dev,
    count(c.device_pk) FILTER (WHERE {live()}) AS n_conn
  FROM sites_in_service s
  LEFT JOIN device_connected c ON c.site_id = s.site_id{kind}
  WHERE {_and(site)}
  GROUP BY s.site_id, s.city_code)
SELECT city_code, count(*) FILTER (WHERE {cond}) AS numerator, count(*) AS denominator
FROM per_site
GROUP BY city_code"""


def _figure(t: Target, num: str, den: str) -> str:
    if t.kind is TargetKind.COUNT:
        return f"{num}::float8"
    return f"{num}::float8 / nullif({den}, 0)"


def target_now(t: Target) -> SqlSpec:
    return SqlSpec(
        f"""SELECT coalesce({_figure(t, "sum(f.numerator)", "sum(f.denominator)")}, 0) AS "value"
FROM ({target_figures(t.measure)}) f""",
        (("value", N),),
    )


def target_by_city(t: Target) -> SqlSpec:
    return SqlSpec(
        f"""SELECT ci.name_en AS "city", {_figure(t, "f.numerator", "f.denominator")} AS "value"
FROM ({target_figures(t.measure)}) f
JOIN cities ci ON ci.code = f.city_code
ORDER BY ci.code""",
        (("city", S), ("value", N)),
    )


def target_per_day(t: Target) -> SqlSpec:
    return SqlSpec(
        f"""SELECT d.day::timestamp AT TIME ZONE 'Asia/Shanghai' AS "time",
  c.name_en AS "metric", d.value AS "value"
FROM coverage_daily d JOIN cities c ON c.code = d.city_code
WHERE d.target_id = {lit(t.id)} AND d.city_code IN (${{city}})
  AND d.day BETWEEN
    ($__timeFrom()::timestamptz AT TIME ZONE 'Asia/Shanghai')::date
  AND ($__timeTo()::timestamptz AT TIME ZONE 'Asia/Shanghai')::date
ORDER BY 1, 2""",
        (("time", T), ("metric", S), ("value", N)),
        "time_series",
    )


def target_title(t: Target) -> str:
    """A target's panel title: its name and due year (two targets may share a name)."""
    return f"{t.name_en} (due {t.due.year})"


def _target_panels(board: Board, t: Target) -> None:
    ratio = t.kind is TargetKind.RATIO
    unit = "percentunit" if ratio else "short"
    steps: Steps = ((None, "red"), (float(t.threshold), "green"))
    about = (
        f"{t.name_zh}. Due {t.due.isoformat()}: {t.comparator} {t.threshold:g}"
        f"{' (a share)' if ratio else ''}. Counted now as coverage counts it (today's registry "
        "in service, the liveness rule of migration 066)."
    )
    now_panel: gauge.Panel | stat.Panel
    if ratio:
        now_panel = gauge.Panel().show_threshold_markers(True).min(0).max(1)
    else:
        now_panel = (
            stat.Panel()
            .graph_mode(gcommon.BigValueGraphMode.NONE)
            .reduce_options(bcommon.ReduceDataOptions().calcs(["lastNotNull"]))
        )
    title = target_title(t)
    now_panel.title(title).description(about).unit(unit).thresholds(thresholds(*steps))
    board.sql(now_panel.span(6).height(8), target_now(t))
    bars = _bars(f"{title}: by city", unit, steps if ratio else ((None, "blue"),), span=8)
    if ratio:
        bars.min(0).max(1)
    board.sql(bars, target_by_city(t))
    board.sql(
        ts_panel(
            f"{title}: per day",
            unit,
            description="The day's last coverage snapshot (coverage_daily).",
            steps=steps,
            span=10,
            height=8,
            interval="1d",
        ),
        target_per_day(t),
    )


# --- device kinds ------------------------------------------------------------------------------
def _bars(title: str, unit: str, steps: Steps, span: int = 10) -> bargauge.Panel:
    return (
        bargauge.Panel()
        .title(title)
        .unit(unit)
        .thresholds(thresholds(*steps))
        .display_mode(gcommon.BarGaugeDisplayMode.GRADIENT)
        .orientation(gcommon.VizOrientation.HORIZONTAL)
        .reduce_options(bcommon.ReduceDataOptions().values(True).calcs(["lastNotNull"]))
        .span(span)
        .height(8)
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


_ROLLUP_FOLD = {
    Aggregate.MAX: "max(r.max)",
    Aggregate.MIN: "min(r.min)",
    Aggregate.MEAN: WEIGHTED_AVG,
    Aggregate.RISE: "sum(greatest(r.max - r.min, 0))",
}


def metric_series(kind: DeviceKind, m: MetricSpec, chart: Chart) -> SqlSpec:
    """A metric's chart: a series per city from the minute (or hour) rollup."""
    relation = "readings_1h" if chart.hourly else "readings_1m"
    if chart.aggregate is Aggregate.SUM:  # per bucket the devices' sum, then its mean
        return SqlSpec(
            f"""SELECT $__timeGroupAlias(p.bucket, $__interval), p.city AS "metric",
  avg(p.total) AS "{m.short}"
FROM (
  SELECT r.bucket, c.name_en AS city, sum(r.avg) AS total
  FROM {relation} r
  JOIN metrics m ON m.metric_id = r.metric_id
  JOIN devices d ON d.device_pk = r.device_pk
  JOIN sites s ON s.site_id = d.site_id
  JOIN cities c ON c.code = s.city_code
  WHERE m.key = {lit(m.key)} AND d.kind = {lit(kind.key)} AND {CITY_IN}
    AND $__timeFilter(r.bucket)
  GROUP BY r.bucket, c.name_en) p
GROUP BY 1, 2
ORDER BY 1""",
            (("time", T), ("metric", S), (m.short, N)),
            "time_series",
        )
    return series_by_city(
        relation=relation,
        kind=kind.key,
        metric=m.key,
        aggregate=_ROLLUP_FOLD[chart.aggregate],
        label=m.short,
    )


def total_now(kind: DeviceKind, m: MetricSpec) -> SqlSpec:
    """The sum of each device's latest value (newest hour bucket of the last day)."""
    return SqlSpec(
        f"""SELECT coalesce(sum(n.last), 0) AS "{m.short}"
FROM (
  SELECT DISTINCT ON (r.device_pk) r.device_pk, r.last
  FROM readings_1h r
  JOIN metrics m ON m.metric_id = r.metric_id
  JOIN devices d ON d.device_pk = r.device_pk
  JOIN sites s ON s.site_id = d.site_id
  WHERE d.kind = {lit(kind.key)} AND m.key = {lit(m.key)} AND {CITY_IN}
    AND r.bucket > now() - interval '1 day'
  ORDER BY r.device_pk, r.bucket DESC) n""",
        ((m.short, N),),
    )


def _states_cte(m: MetricSpec) -> str:
    return ", ".join(f"({i}, {lit(name)})" for i, name in enumerate(m.states))


def states_now(kind: DeviceKind, m: MetricSpec) -> SqlSpec:
    return SqlSpec(
        f"""WITH states(code, state) AS (VALUES {_states_cte(m)}),
newest AS (
  SELECT DISTINCT ON (r.device_pk) r.device_pk, r.last
  FROM readings_1m r
  JOIN metrics m ON m.metric_id = r.metric_id
  JOIN devices d ON d.device_pk = r.device_pk
  JOIN sites s ON s.site_id = d.site_id
  WHERE m.key = {lit(m.key)} AND d.kind = {lit(kind.key)} AND {CITY_IN}
    AND r.bucket > now() - interval '15 minutes'
  ORDER BY r.device_pk, r.bucket DESC)
SELECT st.state AS "state", count(n.device_pk) AS "devices"
FROM states st LEFT JOIN newest n ON round(n.last) = st.code
GROUP BY st.code, st.state
ORDER BY st.code""",
        (("state", S), ("devices", N)),
    )


def states_over_time(kind: DeviceKind, m: MetricSpec) -> SqlSpec:
    return SqlSpec(
        f"""WITH states(code, state) AS (VALUES {_states_cte(m)})
SELECT $__timeGroupAlias(r.bucket, $__interval), st.state AS "metric",
  count(DISTINCT r.device_pk) AS "devices"
FROM readings_1m r
JOIN metrics m ON m.metric_id = r.metric_id
JOIN devices d ON d.device_pk = r.device_pk
JOIN sites s ON s.site_id = d.site_id
JOIN states st ON st.code = round(r.last)
WHERE m.key = {lit(m.key)} AND d.kind = {lit(kind.key)} AND {CITY_IN}
  AND $__timeFilter(r.bucket)
GROUP BY 1, 2
ORDER BY 1""",
        (("time", T), ("metric", S), ("devices", N)),
        "time_series",
    )


def _alarms_cte(alarms: Sequence[MetricSpec]) -> str:
    return ", ".join(f"({lit(m.key)}, {lit(m.short)})" for m in alarms)


def alarms_over_time(kind: DeviceKind, alarms: Sequence[MetricSpec]) -> SqlSpec:
    """Devices that reported each alarm at least once in the interval."""
    return SqlSpec(
        f"""WITH alarm(key, name) AS (VALUES {_alarms_cte(alarms)})
SELECT $__timeGroupAlias(r.bucket, $__interval), a.name AS "metric",
  count(DISTINCT r.device_pk) FILTER (WHERE r.max >= 1) AS "devices"
FROM readings_1m r
JOIN metrics m ON m.metric_id = r.metric_id
JOIN alarm a ON a.key = m.key
JOIN devices d ON d.device_pk = r.device_pk
JOIN sites s ON s.site_id = d.site_id
WHERE d.kind = {lit(kind.key)} AND {CITY_IN} AND $__timeFilter(r.bucket)
GROUP BY 1, 2
ORDER BY 1""",
        (("time", T), ("metric", S), ("devices", N)),
        "time_series",
    )


def alarms_now(kind: DeviceKind, alarms: Sequence[MetricSpec]) -> SqlSpec:
    """Devices whose newest 1-minute bucket of an alarm metric (last 15 min) is in alarm."""
    return SqlSpec(
        f"""WITH alarm(key, name) AS (VALUES {_alarms_cte(alarms)}),
newest AS (
  SELECT DISTINCT ON (r.device_pk, r.metric_id) r.device_pk, r.metric_id, r.bucket, r.last
  FROM readings_1m r
  WHERE r.metric_id IN (SELECT m.metric_id FROM metrics m JOIN alarm a ON a.key = m.key)
    AND r.bucket > now() - interval '15 minutes'
  ORDER BY r.device_pk, r.metric_id, r.bucket DESC)
SELECT d.device_id AS "device", s.name AS "site", c.name_en AS "city", a.name AS "alarm",
  n.bucket AS "last seen in alarm"
FROM newest n
JOIN metrics m ON m.metric_id = n.metric_id
JOIN alarm a ON a.key = m.key
JOIN devices d ON d.device_pk = n.device_pk
JOIN sites s ON s.site_id = d.site_id
JOIN cities c ON c.code = s.city_code
WHERE n.last >= 1 AND d.kind = {lit(kind.key)} AND {CITY_IN}
ORDER BY n.bucket DESC
LIMIT 200""",
        (("device", S), ("site", S), ("city", S), ("alarm", S), ("last seen in alarm", T)),
    )


def _column(m: MetricSpec) -> str:
    return m.short


def ranked(kind: DeviceKind, by: MetricSpec) -> SqlSpec:
    """The 20 devices highest in ``by`` over the last 15 minutes, with their other gauges."""
    gauges = [m for m in kind.metrics if m.kind is MetricKind.GAUGE]
    cols = ",\n  ".join(
        f'max(r.max) FILTER (WHERE m.key = {lit(m.key)}) AS "{_column(m)}"' for m in gauges
    )
    order = 4 + gauges.index(by)
    return SqlSpec(
        f"""SELECT d.device_id AS "device", s.name AS "site", c.name_en AS "city",
  {cols}
FROM readings_1m r
JOIN metrics m ON m.metric_id = r.metric_id
JOIN devices d ON d.device_pk = r.device_pk
JOIN sites s ON s.site_id = d.site_id
JOIN cities c ON c.code = s.city_code
WHERE d.kind = {lit(kind.key)} AND {CITY_IN} AND r.bucket > now() - interval '15 minutes'
GROUP BY d.device_id, s.name, c.name_en
ORDER BY {order} DESC NULLS LAST
LIMIT 20""",
        (("device", S), ("site", S), ("city", S), *((_column(m), N) for m in gauges)),
    )


def reporting_per_hour(sector: Sector) -> SqlSpec:
    """Devices reporting per hour by city, from the per-site liveness rollup."""
    return SqlSpec(
        f"""SELECT h.bucket AS "time", c.name_en AS "metric", sum(h.devices_reporting) AS "devices"
FROM site_liveness_1h h
JOIN sites s ON s.site_id = h.site_id
JOIN cities c ON c.code = s.city_code
WHERE s.sector = {lit(sector.value)} AND {CITY_IN} AND $__timeFilter(h.bucket)
GROUP BY 1, 2
ORDER BY 1""",
        (("time", T), ("metric", S), ("devices", N)),
        "time_series",
    )


def _unit_override(unit: str) -> gdash.DynamicConfigValue:
    return gdash.DynamicConfigValue(id_val="unit", value=unit)


def _kind_panels(board: Board, kind: DeviceKind) -> None:
    board.row(kind.plural)
    board.sql(
        _stat(f"{kind.plural} online now").description(
            f"{kind.plural} of today's registry in service whose newest valid reading is "
            f"within the kind's expected interval ({kind.expected_interval_s:g} s; the rule "
            "of migration 066, the view device_connected), as coverage counts them."
        ),
        online_now(kind),
    )
    board.sql(
        _bars(
            f"{kind.plural} online by city",
            "percent",
            ((None, "red"), (80.0, "orange"), (95.0, "green")),
        )
        .min(0)
        .max(100),
        online_by_city(kind),
    )
    for m in kind.metrics:
        chart = m.chart
        if chart is None:
            continue
        if m.states:
            board.sql(
                piechart.Panel()
                .title(f"{chart.title} now")
                .description(chart.description)
                .span(8)
                .height(9)
                .reduce_options(bcommon.ReduceDataOptions().values(True).calcs(["lastNotNull"]))
                .hide_from(bcommon.HideSeriesConfig().legend(False).tooltip(False).viz(False)),
                states_now(kind, m),
            )
            board.sql(
                ts_panel(f"{chart.title} over time", "short", span=16, height=9, stacked=True),
                states_over_time(kind, m),
            )
        elif chart.aggregate is Aggregate.TOTAL_NOW:
            board.sql(
                _stat(chart.title, grafana_unit(m.unit), span=6).description(chart.description),
                total_now(kind, m),
            )
        else:
            board.sql(
                ts_panel(
                    chart.title,
                    grafana_unit(m.unit),
                    description=chart.description,
                    steps=chart.steps,
                    interval="1h" if chart.hourly else None,
                    stacked=chart.aggregate in (Aggregate.RISE, Aggregate.SUM),
                ),
                metric_series(kind, m, chart),
            )
    alarms = [m for m in kind.metrics if m.kind is MetricKind.ALARM]
    if alarms:
        names = ", ".join(m.short for m in alarms)
        board.sql(
            ts_panel(
                f"{kind.plural} in alarm",
                "short",
                description=f"{kind.plural} that reported {names} at least once in the interval.",
                steps=((None, "green"), (1.0, "red")),
                stacked=True,
            ),
            alarms_over_time(kind, alarms),
        )
        board.sql(
            table.Panel().show_header(True).title(f"{kind.plural} in alarm now").span(12).height(8),
            alarms_now(kind, alarms),
        )
    by = kind.metric(kind.rank_by) if kind.rank_by else None
    if by is not None:
        panel = (
            table.Panel()
            .show_header(True)
            .title(f"{kind.plural} by {by.description} (last 15 minutes)")
            .span(24)
            .height(8)
        )
        for m in kind.metrics:
            if m.kind is MetricKind.GAUGE:
                panel.override_by_name(_column(m), [_unit_override(grafana_unit(m.unit))])
        board.sql(panel, ranked(kind, by))


def build(
    sector: Sector, catalog: Catalog, kinds: Sequence[DeviceKind] = DEVICE_KINDS
) -> BuiltDashboard:
    """The sector's dashboard from its targets in ``catalog`` and its ``kinds``."""
    meta = BOARDS[sector]
    board = Board(
        meta.uid, meta.title, description=meta.description, tags=[sector.value], time_from="now-6h"
    ).variable(city_variable(), CITY_VARIABLE_SQL)
    targets = [t for t in catalog.targets if t.sector == sector.value]
    if targets:
        board.row("Targets")
        for t in targets:
            _target_panels(board, t)
    for kind in kinds:
        if kind.sector is sector:
            _kind_panels(board, kind)
    board.row("Reporting")
    board.sql(
        ts_panel(
            f"{sector.value.capitalize()} devices reporting per hour",
            "short",
            span=12,
            height=8,
            interval="1h",
        ),
        reporting_per_hour(sector),
    )
    return board.build()


def build_all(catalog: Catalog, kinds: Sequence[DeviceKind] = DEVICE_KINDS) -> list[BuiltDashboard]:
    return [build(sector, catalog, kinds) for sector in BOARDS]


def charging() -> BuiltDashboard:
    return build(Sector.CHARGING, load_catalog())


def substations() -> BuiltDashboard:
    return build(Sector.SUBSTATION, load_catalog())


def ranches() -> BuiltDashboard:
    return build(Sector.RANCH, load_catalog())
