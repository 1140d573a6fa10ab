"""Template variables, SQL fragments and panel helpers shared by the dashboards.

SQL reads only the logical relations of docs/adr/0002 (registry tables, ``device_liveness``,
``readings_1m``, ``readings_1h``, ``site_liveness_1h``, ``coverage_daily``), never ``readings``.
Target thresholds and due dates are not in the database: they come from the catalog
(qilu/data/targets.toml) and are written into the SQL as a ``VALUES`` list when the
dashboards are built, so the panels always match the catalog they were built from; only a
simulated registry's share of the province (``simulated_registry``), which scales count
thresholds, is read from the database.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as bcommon
from grafana_foundation_sdk.builders import dashboard as bdash
from grafana_foundation_sdk.builders import table, timeseries
from grafana_foundation_sdk.models import common as gcommon
from grafana_foundation_sdk.models import dashboard as gdash

from dashboards.board import thresholds
from dashboards.model import PG, ColType, SqlSpec
from qilu.catalog import Catalog, Target
from qilu.contract import Sector

PROVINCE = "370000"
T, N, S, D = ColType.TIME, ColType.NUMBER, ColType.TEXT, ColType.DATE

# `city_code IN (${city})`: the city variable is multi-value with "All", so Grafana renders
# the selection as a quoted, comma-separated list.
CITY_IN = "s.city_code IN (${city})"

CITY_VARIABLE_SQL = SqlSpec(
    "SELECT code AS __value, name_en || ' ' || name_zh AS __text FROM cities ORDER BY code",
    (("__value", S), ("__text", S)),
)


def lit(value: str) -> str:
    """A SQL string literal (catalog text is ours, but quote it properly anyway)."""
    return "'" + value.replace("'", "''") + "'"


def city_variable() -> bdash.QueryVariable:
    return (
        bdash.QueryVariable("city")
        .label("City")
        .description("Shandong's 16 prefecture-level cities (GB/T 2260)")
        .datasource(PG)
        .query(CITY_VARIABLE_SQL.sql)
        .multi(True)
        .include_all(True)
        .refresh(gdash.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(gdash.VariableSort.ALPHABETICAL_ASC)
        .current(gdash.VariableOption(selected=True, text=["All"], value=["$__all"]))
    )


def sector_variable() -> bdash.CustomVariable:
    values = ",".join(s.value for s in Sector)
    return (
        bdash.CustomVariable("sector")
        .label("Sector")
        .description("charging, substation, ranch")
        .values(values)
        .multi(True)
        .include_all(True)
        .current(gdash.VariableOption(selected=True, text=["All"], value=["$__all"]))
    )


def targets_cte(catalog: Catalog) -> str:
    """``targets(target_id, sector, name, kind, comparator, threshold, due, threshold_written,
    scale, plan_day, plan_value)`` from the catalog.

    ``threshold`` is the one values are compared with: when the registry is a simulated share
    of the province (``simulated_registry``, migration 052), a count target's threshold scaled
    by that share and rounded to 6 decimals (``scale``; NULL when not scaled), as the API does
    (docs/adr/0013-scaled-thresholds.md). ``threshold_written`` is the document's.
    ``plan_day``/``plan_value``: the catalog's baseline from a document (scaled likewise), the
    start of the plan's own path; NULL without one."""

    def row(t: Target) -> str:
        b = t.baseline
        plan = (
            f"DATE {lit(b.day.isoformat())}, {float(b.value)!r}::float8"
            if b is not None
            else "NULL::date, NULL::float8"
        )
        return (
            f"({lit(t.id)}, {lit(t.sector)}, {lit(t.name_en)}, {lit(t.kind.value)}, "
            f"{lit(t.comparator)}, {float(t.threshold)!r}::float8, "
            f"DATE {lit(t.due.isoformat())}, {plan})"
        )

    rows = ",\n    ".join(row(t) for t in catalog.targets)
    return (
        "targets_written(target_id, sector, name, kind, comparator, threshold, due, plan_day,"
        " plan_value) AS (VALUES\n    " + rows + "),\n"
        "targets AS (\n"
        "    SELECT w.target_id, w.sector, w.name, w.kind, w.comparator,\n"
        "      round((w.threshold * coalesce(s.fraction, 1))::numeric, 6)::float8 AS threshold,\n"
        "      w.due,\n"
        "      w.threshold AS threshold_written, s.fraction AS scale,\n"
        "      w.plan_day, w.plan_value * coalesce(s.fraction, 1) AS plan_value\n"
        "    FROM targets_written w LEFT JOIN simulated_registry s\n"
        "      ON s.sector = w.sector AND w.kind = 'count' AND s.fraction <> 1)"
    )


# Each target's province series, its first day (the baseline of the trajectory) and its latest
# value; the trajectory runs linearly from the baseline to the threshold at the due date.
TRAJECTORY_CTES = """series AS (
    SELECT target_id, day, value, synthetic FROM coverage_daily WHERE city_code = '370000'),
base AS (
    SELECT DISTINCT ON (target_id) target_id, day AS day0, value AS v0
    FROM series ORDER BY target_id, day),
latest AS (
    SELECT DISTINCT ON (target_id) target_id, day, value
    FROM series ORDER BY target_id, day DESC)"""


def expected_sql(day: str) -> str:
    """The trajectory's value on ``day`` (needs ``t`` = targets and ``b`` = base in scope)."""
    return (
        f"CASE WHEN {day} >= t.due OR t.due <= b.day0 THEN t.threshold "
        f"ELSE b.v0 + (t.threshold - b.v0) * ({day} - b.day0)::float8 / (t.due - b.day0) END"
    )


MET_SQL = (
    "((t.comparator = '>' AND l.value > t.threshold) "
    "OR (t.comparator = '>=' AND l.value >= t.threshold))"
)


def series_by_city(
    *,
    relation: str,
    kind: str,
    metric: str,
    aggregate: str,
    label: str,
) -> SqlSpec:
    """One metric of one device kind as a time series per city from a rollup.

    ``aggregate`` is an SQL expression over the rollup row ``r`` (e.g. ``max(r.max)``, or the
    reading-weighted mean ``sum(r.avg * r.n) / sum(r.n)``).
    """
    sql = f"""SELECT $__timeGroupAlias(r.bucket, $__interval), c.name_en AS "metric",
  {aggregate} AS "{label}"
FROM {relation} r
JOIN metrics m ON m.metric_id = r.metric_id
JOIN devices d ON d.device_pk = r.device_pk
JOIN sites s ON s.site_id = d.site_id
JOIN cities c ON c.code = s.city_code
WHERE m.key = {lit(metric)} AND d.kind = {lit(kind)} AND {CITY_IN}
  AND $__timeFilter(r.bucket)
GROUP BY 1, 2
ORDER BY 1"""
    return SqlSpec(sql, (("time", T), ("metric", S), (label, N)), "time_series")


def ts_panel(
    title: str,
    unit: str,
    *,
    description: str = "",
    steps: tuple[tuple[float | None, str], ...] = ((None, "green"),),
    span: int = 12,
    height: int = 8,
    interval: str | None = None,
    stacked: bool = False,
    min_val: float | None = None,
) -> timeseries.Panel:
    """A time-series panel with unit and thresholds (drawn as lines when there is more than one)."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .thresholds(thresholds(*steps))
        .span(span)
        .height(height)
        .line_width(1)
        .fill_opacity(10)
        .show_points(gcommon.VisibilityMode.NEVER)
        .legend(
            bcommon.VizLegendOptions()
            .display_mode(gcommon.LegendDisplayMode.LIST)
            .placement(gcommon.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(
            bcommon.VizTooltipOptions()
            .mode(gcommon.TooltipDisplayMode.MULTI)
            .sort(gcommon.SortOrder.DESCENDING)
        )
    )
    if len(steps) > 1:
        panel.thresholds_style(
            bcommon.GraphThresholdsStyleConfig().mode(gcommon.GraphTresholdsStyleMode.LINE)
        )
    if interval:
        panel.interval(interval)
    if stacked:
        panel.stacking(bcommon.StackingConfig().mode(gcommon.StackingMode.NORMAL))
    if min_val is not None:
        panel.min(min_val)
    return panel


def table_panel(title: str, *, span: int = 12, height: int = 8) -> table.Panel:
    """A table panel (options set explicitly: the SDK cannot read ``"options": null`` back)."""
    return table.Panel().title(title).span(span).height(height).show_header(True)
