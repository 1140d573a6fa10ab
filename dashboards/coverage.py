"""Province coverage: every target against its threshold, the 16 cities, progress to the due date.

Reads ``coverage_daily`` (each target's value per city per day; ``370000`` is the province),
``cities`` (names and centres for the map) and ``simulated_registry`` (a simulated registry's
share of the province: count thresholds are scaled by it). The "trajectory" is the straight
line from a target's first recorded day to its threshold on its due date; a target below it
is behind. The plan path starts at the catalog's baseline from a document.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import bargauge, geomap, table
from grafana_foundation_sdk.builders import common as bcommon
from grafana_foundation_sdk.builders import dashboard as bdash
from grafana_foundation_sdk.models import common as gcommon
from grafana_foundation_sdk.models import dashboard as gdash

from api.judge import AT_RISK_TOLERANCE, ON_TRACK_TOLERANCE
from dashboards.board import Board, BuiltDashboard, thresholds
from dashboards.common import (
    CITY_VARIABLE_SQL,
    MET_SQL,
    PROVINCE,
    TRAJECTORY_CTES,
    D,
    N,
    S,
    T,
    city_variable,
    expected_sql,
    lit,
    sector_variable,
    targets_cte,
    ts_panel,
)
from dashboards.model import PG, SqlSpec
from qilu.catalog import Catalog, ReportedTarget
from qilu.contract import Sector

UID = "qilu-coverage"


# Days are counted in China Standard Time, the calendar of the due dates (as the API does).
TODAY_CST = "(now() AT TIME ZONE 'Asia/Shanghai')::date"


def target_variable_sql(catalog: Catalog) -> SqlSpec:
    return SqlSpec(
        f"WITH {targets_cte(catalog)}\n"
        "SELECT target_id AS __value, name || ' (' || target_id || ')' AS __text\n"
        "FROM targets WHERE sector IN (${sector}) OR sector = 'all'\nORDER BY due, target_id",
        (("__value", S), ("__text", S)),
    )


def targets_table_sql(catalog: Catalog) -> SqlSpec:
    sql = f"""WITH {targets_cte(catalog)},
{TRAJECTORY_CTES}
SELECT t.name AS "target", t.sector AS "sector", l.value AS "value",
  t.threshold AS "threshold", t.threshold_written AS "document threshold",
  100 * t.scale AS "scaled to", {expected_sql("l.day")} AS "trajectory",
  100 * l.value / t.threshold AS "progress", t.due AS "due", l.day AS "as of",
  'measured' AS "source kind", ({TODAY_CST} - l.day) AS "age (days)",
  CASE WHEN l.value IS NULL THEN 'no data'
       WHEN {MET_SQL} THEN 'met'
       WHEN l.day >= t.due THEN 'missed'
       WHEN l.value >= {expected_sql("l.day")} THEN 'on track'
       ELSE 'behind' END AS "status"
FROM targets t
LEFT JOIN latest l ON l.target_id = t.target_id
LEFT JOIN base b ON b.target_id = t.target_id
WHERE t.sector IN (${{sector}}) OR t.sector = 'all'
ORDER BY t.due, t.target_id"""
    cols = (
        ("target", S),
        ("sector", S),
        ("value", N),
        ("threshold", N),
        ("document threshold", N),
        ("scaled to", N),
        ("trajectory", N),
        ("progress", N),
        ("due", D),
        ("as of", D),
        ("source kind", S),
        ("age (days)", N),
        ("status", S),
    )
    return SqlSpec(sql, cols)


def reported_table_sql(catalog: Catalog) -> SqlSpec:
    """The reported targets (docs/reported.md) by the API's rules (api/reported_view.py,
    qilu/reported.py), one row for the province and one per selected city (``${city}``):

    - the province's figure: the newest of its own figures and, for a count reported per city,
      the sums of the days **every** city reported (its own on a tie); none from a day only
      some cities reported (the note says how many of the 16 did);
    - the status words of the API (met, on_track, at_risk, behind, no_data), the figure judged
      on the path at the day it is for, and past the due date by the newest figure at or before
      the due date; cities are judged for ratio targets only;
    - the source kind, day, age, freshness (stale past the reporting interval), reporter and
      source (a sum's: all of its parts'), simulated if any part is.

    tests/integration/test_reported.py checks this SQL and the API against the same figures."""
    cities = [c.code for c in catalog.cities]

    def row(t: ReportedTarget) -> str:
        b = t.baseline
        return (
            f"({lit(t.id)}, {lit(t.sector)}, {lit(t.name_en)}, {lit(t.kind.value)}, "
            f"{lit(t.comparator)}, {float(t.threshold)!r}::float8, "
            f"DATE {lit(t.due.isoformat())}, {t.interval_days}, {str(t.per_city).lower()}, "
            + (
                f"DATE {lit(b.day.isoformat())}, {float(b.value)!r}::float8)"
                if b is not None
                else "NULL::date, NULL::float8)"
            )
        )

    values = ",\n    ".join(row(t) for t in catalog.reported)
    codes = ", ".join(lit(c) for c in cities)
    measured_sectors = ", ".join(lit(s.value) for s in Sector)
    met = "(({c} = '>' AND {v} > rt.threshold) OR ({c} = '>=' AND {v} >= rt.threshold))".format(
        c="rt.comparator", v="{v}"
    )
    sql = f"""WITH rt(target_id, sector, name, kind, comparator, threshold, due, interval_days,
    per_city, b_day, b_value) AS (VALUES
    {values}),
cand AS (
  SELECT f.target_id, '{PROVINCE}'::text AS area, f.day, f.value, 'reported'::text AS basis,
    f.reporter, f.source, f.simulated, 1 AS pref
  FROM reported_figures f WHERE f.area = '{PROVINCE}'
  UNION ALL
  SELECT f.target_id, '{PROVINCE}', f.day, sum(f.value), 'sum_of_cities',
    string_agg(DISTINCT f.reporter COLLATE "C", '; ' ORDER BY f.reporter COLLATE "C"),
    string_agg(DISTINCT f.source COLLATE "C", '; ' ORDER BY f.source COLLATE "C"),
    bool_or(f.simulated), 0
  FROM reported_figures f JOIN rt USING (target_id)
  WHERE rt.kind = 'count' AND rt.per_city AND f.area IN ({codes})
  GROUP BY f.target_id, f.day HAVING count(*) = {len(cities)}
  UNION ALL
  SELECT f.target_id, f.area, f.day, f.value, 'reported', f.reporter, f.source, f.simulated, 1
  FROM reported_figures f WHERE f.area IN ({codes}) AND f.area IN (${{city}})),
areas AS (
  SELECT rt.target_id, '{PROVINCE}'::text AS area FROM rt
  UNION
  SELECT target_id, area FROM cand WHERE area <> '{PROVINCE}'),
newest AS (
  SELECT DISTINCT ON (target_id, area) * FROM cand ORDER BY target_id, area, day DESC, pref DESC),
at_due AS (
  SELECT DISTINCT ON (c.target_id, c.area) c.target_id, c.area, c.day, c.value
  FROM cand c JOIN rt USING (target_id) WHERE c.day <= rt.due
  ORDER BY c.target_id, c.area, c.day DESC, c.pref DESC),
firsts AS (
  SELECT DISTINCT ON (target_id, area) target_id, area, day, value
  FROM reported_figures ORDER BY target_id, area, day),
base AS (
  SELECT a.target_id, a.area,
    CASE WHEN a.area = '{PROVINCE}' AND rt.b_day IS NOT NULL THEN rt.b_day
         WHEN fi.day IS NOT NULL THEN fi.day
         WHEN a.area = '{PROVINCE}' AND rt.per_city AND rt.kind = 'count' THEN cf.day END AS day,
    CASE WHEN a.area = '{PROVINCE}' AND rt.b_day IS NOT NULL THEN rt.b_value
         WHEN fi.day IS NOT NULL THEN fi.value
         WHEN a.area = '{PROVINCE}' AND rt.per_city AND rt.kind = 'count' THEN cf.value END
      AS value
  FROM areas a JOIN rt USING (target_id)
  LEFT JOIN firsts fi ON fi.target_id = a.target_id AND fi.area = a.area
  LEFT JOIN (SELECT target_id, max(day) AS day, sum(value) AS value FROM firsts
             WHERE area <> '{PROVINCE}' GROUP BY target_id) cf ON cf.target_id = a.target_id),
judged AS (
  SELECT rt.*, a.area, n.day, n.value, n.basis, n.reporter, n.source, n.simulated,
    d.day AS due_day, d.value AS due_value,
    -- the path from the baseline (older than the figure's day, else the figure itself)
    CASE WHEN b.day < n.day THEN b.day ELSE n.day END AS b0_day,
    CASE WHEN b.day < n.day THEN b.value ELSE n.value END AS b0_value,
    (SELECT count(DISTINCT f.area) FROM reported_figures f
      WHERE f.target_id = rt.target_id AND f.area IN ({codes})) AS cities_reporting
  FROM areas a JOIN rt USING (target_id)
  LEFT JOIN newest n ON n.target_id = a.target_id AND n.area = a.area
  LEFT JOIN at_due d ON d.target_id = a.target_id AND d.area = a.area
  LEFT JOIN base b ON b.target_id = a.target_id AND b.area = a.area),
path AS (
  SELECT j.*,
    b0_value + (threshold - b0_value) * CASE WHEN due - b0_day > 0
      THEN (day - b0_day)::float8 / (due - b0_day) ELSE 1 END AS expected,
    threshold - b0_value AS span
  FROM judged j)
SELECT p.target_id AS "id", p.name AS "target", p.due AS "due", p.sector AS "sector",
  coalesce(c.name_en, 'Shandong') AS "area", p.area AS "code", 'reported' AS "source kind",
  p.value AS "value",
  p.comparator || ' ' || p.threshold::text AS "goal", p.threshold AS "threshold",
  p.day AS "as of", ({TODAY_CST} - p.day) AS "age (days)",
  CASE WHEN p.day IS NULL THEN 'no figure'
       WHEN {TODAY_CST} - p.day > p.interval_days THEN 'stale' ELSE 'current' END
    AS "freshness",
  coalesce(p.reporter, '') AS "reporter", coalesce(p.source, '') AS "source",
  concat_ws('; ',
    CASE WHEN p.simulated THEN 'simulated' END,
    CASE WHEN p.basis = 'sum_of_cities' THEN 'sum of the 16 cities' END,
    CASE WHEN p.value IS NULL AND p.area = '{PROVINCE}' AND p.kind = 'count' AND p.per_city
      AND p.cities_reporting > 0
      THEN p.cities_reporting || ' of {len(cities)} cities reported' END,
    CASE WHEN {TODAY_CST} > p.due AND p.due_day IS NOT NULL
      THEN 'judged by the figure for ' || p.due_day || ' (at or before the due date)' END)
    AS "note",
  CASE WHEN p.area <> '{PROVINCE}' AND p.kind <> 'ratio' THEN ''
       WHEN p.value IS NULL THEN 'no_data'
       WHEN {TODAY_CST} > p.due AND p.due_day IS NOT NULL THEN
         CASE WHEN {met.format(v="p.due_value")} THEN 'met' ELSE 'behind' END
       WHEN {met.format(v="p.value")} THEN 'met'
       WHEN p.day > p.due THEN 'behind'
       WHEN p.span <= 0 OR (p.expected - p.value) / p.span > {AT_RISK_TOLERANCE!r} THEN 'behind'
       WHEN (p.expected - p.value) / p.span > {ON_TRACK_TOLERANCE!r} THEN 'at_risk'
       ELSE 'on_track' END AS "status"
FROM path p JOIN rt USING (target_id)
LEFT JOIN cities c ON c.code = p.area AND p.area <> '{PROVINCE}'
WHERE p.sector IN (${{sector}}) OR p.sector NOT IN ({measured_sectors})
ORDER BY p.due, p.target_id, p.area <> '{PROVINCE}', p.area"""
    cols = (
        ("id", S),
        ("target", S),
        ("due", D),
        ("sector", S),
        ("area", S),
        ("code", S),
        ("source kind", S),
        ("value", N),
        ("goal", S),
        ("threshold", N),
        ("as of", D),
        ("age (days)", N),
        ("freshness", S),
        ("reporter", S),
        ("source", S),
        ("note", S),
        ("status", S),
    )
    return SqlSpec(sql, cols)


def progress_bars_sql(catalog: Catalog) -> SqlSpec:
    sql = f"""WITH {targets_cte(catalog)},
{TRAJECTORY_CTES}
SELECT t.name AS "target", coalesce(100 * l.value / t.threshold, 0) AS "progress"
FROM targets t LEFT JOIN latest l ON l.target_id = t.target_id
WHERE t.sector IN (${{sector}}) OR t.sector = 'all'
ORDER BY t.due, t.target_id"""
    return SqlSpec(sql, (("target", S), ("progress", N)))


CITY_TABLE = SqlSpec(
    """WITH last_day AS (
    SELECT max(day) AS day FROM coverage_daily WHERE target_id = '${target}')
SELECT c.name_en AS "city", c.name_zh AS "name", c.code AS "code",
  d.numerator AS "connected", d.denominator AS "registered", d.value AS "value",
  100.0 * d.numerator / NULLIF(p.numerator, 0) AS "share of province"
FROM coverage_daily d
JOIN last_day USING (day)
JOIN cities c ON c.code = d.city_code
LEFT JOIN coverage_daily p
  ON p.day = d.day AND p.target_id = d.target_id AND p.city_code = '370000'
WHERE d.target_id = '${target}' AND d.city_code IN (${city})
ORDER BY d.value DESC, c.code""",
    (
        ("city", S),
        ("name", S),
        ("code", S),
        ("connected", N),
        ("registered", N),
        ("value", N),
        ("share of province", N),
    ),
)

CITY_MAP = SqlSpec(
    """WITH last_day AS (
    SELECT max(day) AS day FROM coverage_daily WHERE target_id = '${target}')
SELECT c.name_en AS "city", c.lat AS "lat", c.lon AS "lon", d.value AS "value",
  d.numerator AS "connected", d.denominator AS "registered"
FROM coverage_daily d
JOIN last_day USING (day)
JOIN cities c ON c.code = d.city_code
WHERE d.target_id = '${target}' AND d.city_code IN (${city})""",
    (
        ("city", S),
        ("lat", N),
        ("lon", N),
        ("value", N),
        ("connected", N),
        ("registered", N),
    ),
)


def progress_sql(catalog: Catalog) -> tuple[SqlSpec, SqlSpec, SqlSpec]:
    """The trajectory chart: the province's values per day (measured, and the simulation's
    modelled history apart), the trajectory and threshold; the judgement's path (first
    recorded day -> threshold at the due date); the plan's own path (the document's baseline
    -> threshold at the due date). Thresholds and paths as compared (scaled when the
    registry is a simulated share of the province)."""
    actual = SqlSpec(
        f"""WITH {targets_cte(catalog)},
{TRAJECTORY_CTES}
SELECT s.day::timestamp AT TIME ZONE 'Asia/Shanghai' AS "time",
  CASE WHEN NOT s.synthetic THEN s.value END AS "value",
  CASE WHEN s.synthetic THEN s.value END AS "modelled history",
  {expected_sql("s.day")} AS "trajectory", t.threshold AS "threshold"
FROM series s
JOIN targets t ON t.target_id = s.target_id
JOIN base b ON b.target_id = s.target_id
WHERE s.target_id = '${{target}}' AND s.day BETWEEN
    ($__timeFrom()::timestamptz AT TIME ZONE 'Asia/Shanghai')::date
  AND ($__timeTo()::timestamptz AT TIME ZONE 'Asia/Shanghai')::date
ORDER BY 1""",
        (
            ("time", T),
            ("value", N),
            ("modelled history", N),
            ("trajectory", N),
            ("threshold", N),
        ),
        "time_series",
    )
    judged = SqlSpec(
        f"""WITH {targets_cte(catalog)},
{TRAJECTORY_CTES}
SELECT p.day::timestamp AT TIME ZONE 'Asia/Shanghai' AS "time", p.value AS "judgement path"
FROM targets t
JOIN base b ON b.target_id = t.target_id
CROSS JOIN LATERAL (VALUES (b.day0, b.v0), (t.due, t.threshold)) AS p(day, value)
WHERE t.target_id = '${{target}}' AND t.due > b.day0
ORDER BY 1""",
        (("time", T), ("judgement path", N)),
        "time_series",
    )
    plan = SqlSpec(
        f"""WITH {targets_cte(catalog)}
SELECT p.day::timestamp AT TIME ZONE 'Asia/Shanghai' AS "time", p.value AS "plan path"
FROM targets t
CROSS JOIN LATERAL (VALUES (t.plan_day, t.plan_value), (t.due, t.threshold)) AS p(day, value)
WHERE t.target_id = '${{target}}' AND t.plan_day IS NOT NULL
ORDER BY 1""",
        (("time", T), ("plan path", N)),
        "time_series",
    )
    return actual, judged, plan


def marks_sql(catalog: Catalog) -> SqlSpec:
    """The day since which the target has been met, or behind, without a break: one point
    (``met since`` or ``behind since``, at that day's value), the same day as the API's
    ``met_on`` / ``behind_since`` (api/judge.py ``trajectory``). Each day of the province
    series is judged as on that day (met; past due; else the shortfall against the linear path
    from the first observed value, behind beyond the at-risk tolerance), then the last island
    of equal statuses gives its first day. Over the whole series, not the time range."""
    behind = f"{AT_RISK_TOLERANCE!r}"
    sql = f"""WITH {targets_cte(catalog)},
pts AS (
    SELECT day, value FROM coverage_daily
    WHERE city_code = '370000' AND target_id = '${{target}}' AND value IS NOT NULL),
base AS (SELECT day AS day0, value AS v0 FROM pts ORDER BY day LIMIT 1),
judged AS (
    SELECT p.day, p.value,
      CASE WHEN (t.comparator = '>' AND p.value > t.threshold)
             OR (t.comparator = '>=' AND p.value >= t.threshold) THEN 'met'
           WHEN p.day > t.due THEN 'behind'
           WHEN p.day <= b.day0 THEN 'on track'
           WHEN t.threshold <= b.v0 THEN 'behind'
           WHEN (b.v0 + (t.threshold - b.v0) * ((p.day - b.day0)::float8 / (t.due - b.day0))
                 - p.value) / (t.threshold - b.v0) > {behind} THEN 'behind'
           ELSE 'other' END AS status
    FROM pts p CROSS JOIN base b JOIN targets t ON t.target_id = '${{target}}'),
islands AS (
    SELECT day, value, status,
      row_number() OVER (ORDER BY day)
        - row_number() OVER (PARTITION BY status ORDER BY day) AS island
    FROM judged)
SELECT i.day::timestamp AT TIME ZONE 'Asia/Shanghai' AS "time",
  CASE WHEN i.status = 'met' THEN i.value END AS "met since",
  CASE WHEN i.status = 'behind' THEN i.value END AS "behind since"
FROM islands i
JOIN (SELECT status, island FROM islands ORDER BY day DESC LIMIT 1) l USING (status, island)
WHERE i.status IN ('met', 'behind')
ORDER BY i.day
LIMIT 1"""
    return SqlSpec(sql, (("time", T), ("met since", N), ("behind since", N)), "time_series")


def _mark(name: str, colour: str) -> list[gdash.DynamicConfigValue]:
    """A marker series: one large point in a fixed colour, no line."""
    return [
        gdash.DynamicConfigValue(id_val="custom.drawStyle", value="points"),
        gdash.DynamicConfigValue(id_val="custom.showPoints", value="always"),
        gdash.DynamicConfigValue(id_val="custom.pointSize", value=14),
        gdash.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": colour}),
        gdash.DynamicConfigValue(id_val="displayName", value=name),
    ]


CITY_SERIES = SqlSpec(
    """SELECT d.day::timestamp AT TIME ZONE 'Asia/Shanghai' AS "time", c.name_en AS "metric",
  d.value AS "value"
FROM coverage_daily d JOIN cities c ON c.code = d.city_code
WHERE d.target_id = '${target}' AND d.city_code IN (${city}) AND d.day BETWEEN
    ($__timeFrom()::timestamptz AT TIME ZONE 'Asia/Shanghai')::date
  AND ($__timeTo()::timestamptz AT TIME ZONE 'Asia/Shanghai')::date
ORDER BY 1, 2""",
    (("time", T), ("metric", S), ("value", N)),
    "time_series",
)

PROGRESS_STEPS = ((None, "red"), (80.0, "orange"), (100.0, "green"))


def build(catalog: Catalog) -> BuiltDashboard:
    target_var = target_variable_sql(catalog)
    first = catalog.targets[0].id
    board = (
        Board(
            UID,
            "Qilu — Province coverage",
            description=(
                "Shandong's digital-economy coverage targets: each target against its threshold, "
                "the 16 cities, and progress towards the due date (from coverage_daily)."
            ),
            tags=["coverage"],
            time_from="now-1y",
            refresh="5m",
        )
        .variable(sector_variable())
        .variable(city_variable(), CITY_VARIABLE_SQL)
        .variable(
            bdash.QueryVariable("target")
            .label("Target")
            .description("The target shown in the city breakdown and the progress chart")
            .datasource(PG)
            .query(target_var.sql)
            .refresh(gdash.VariableRefresh.ON_DASHBOARD_LOAD)
            .current(gdash.VariableOption(selected=True, text=first, value=first)),
            target_var,
        )
    )

    board.row("Targets")
    board.sql(
        table.Panel()
        .show_header(True)
        .title("Targets against their thresholds")
        .description(
            "Latest province value of each target, its threshold, the trajectory value "
            "(straight line from the first recorded day to the threshold on the due date), "
            "and the status: met, on track, behind, or missed (due date passed). With a "
            "simulated registry, a count threshold is the document's scaled to the simulated "
            "share of the province ('scaled to', %); empty there = as written."
        )
        .span(16)
        .height(10)
        .override_by_name(
            "progress",
            [
                gdash.DynamicConfigValue(id_val="unit", value="percent"),
                gdash.DynamicConfigValue(
                    id_val="custom.cellOptions", value={"type": "color-background"}
                ),
                gdash.DynamicConfigValue(
                    id_val="thresholds", value=thresholds(*PROGRESS_STEPS).build()
                ),
            ],
        ),
        targets_table_sql(catalog),
    )
    board.sql(
        bargauge.Panel()
        .title("Progress towards each threshold")
        .unit("percent")
        .min(0)
        .max(100)
        .thresholds(thresholds(*PROGRESS_STEPS))
        .display_mode(gcommon.BarGaugeDisplayMode.LCD)
        .orientation(gcommon.VizOrientation.HORIZONTAL)
        .reduce_options(bcommon.ReduceDataOptions().values(True).calcs(["lastNotNull"]))
        .span(8)
        .height(10),
        progress_bars_sql(catalog),
    )

    board.row("Reported figures")
    board.sql(
        table.Panel()
        .show_header(True)
        .title("Reported targets: the newest figures other bodies report")
        .description(
            "Targets whose values are statistics reported by other bodies (telecom operators, "
            "provincial departments), not telemetry (docs/reported.md): the province's newest "
            "figure (its own, or the sum of the cities' for a count reported per city), the day "
            "it is for and its age, 'stale' once older than the reporting interval (never shown "
            "as current), who reported it and from which document. 'simulated' marks the "
            "simulation's made-up figures. One row for the province (its own figure, or the "
            "sum of a day all 16 cities reported) and one per selected city. Status as the API "
            "judges it: met, on_track, at_risk, behind (the figure on the plan's path at the "
            "day it is for; past the due date, the figure at or before the due date decides), "
            "no_data; a count's cities are not judged."
        )
        .span(24)
        .height(12)
        .override_by_name(
            "freshness",
            [
                gdash.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-text"}),
                gdash.DynamicConfigValue(
                    id_val="mappings",
                    value=[
                        {
                            "type": "value",
                            "options": {
                                "stale": {"color": "red", "index": 0},
                                "current": {"color": "green", "index": 1},
                            },
                        }
                    ],
                ),
            ],
        ),
        reported_table_sql(catalog),
    )

    board.row("Cities")
    board.sql(
        table.Panel()
        .show_header(True)
        .title("${target}: the 16 cities")
        .description("Latest day of the selected target per city; share of the province total.")
        .span(12)
        .height(12)
        .override_by_name(
            "share of province", [gdash.DynamicConfigValue(id_val="unit", value="percent")]
        ),
        CITY_TABLE,
    )
    board.sql(
        geomap.Panel()
        .title("${target}: map")
        .description("City centres from the cities table; marker size and colour = value.")
        .span(12)
        .height(12)
        .view(geomap.MapViewConfig().id("coords").lat(36).lon(118).zoom(6))
        .basemap(bcommon.MapLayerOptions().type("default").name("Basemap"))
        .layers(
            [
                bcommon.MapLayerOptions()
                .type("markers")
                .name("Cities")
                .location(
                    bcommon.FrameGeometrySource()
                    .mode(gcommon.FrameGeometrySourceMode.COORDS)
                    .latitude("lat")
                    .longitude("lon")
                )
                .config(
                    {
                        "showLegend": True,
                        "style": {
                            "size": {"field": "value", "fixed": 5, "min": 6, "max": 30},
                            "color": {"field": "value"},
                            "text": {"field": "city", "mode": "field"},
                            "textConfig": {"fontSize": 11, "offsetY": -16},
                        },
                    }
                )
                .tooltip(True)
            ]
        )
        .thresholds(thresholds((None, "red"), (0.5, "orange"), (1.0, "green"))),
        CITY_MAP,
    )

    board.row("Progress")
    actual, judged, plan = progress_sql(catalog)
    board.sql(
        ts_panel(
            "${target}: progress towards the due date",
            "short",
            description=(
                "Province value per day (measured; 'modelled history' = days the simulation "
                "backfilled before the platform ran), the trajectory and the threshold. The "
                "judgement path runs from the first recorded day to the threshold on the due "
                "date (when that day is before the due date); the plan path from the "
                "document's baseline (e.g. the five-year plan's 2020 figure) to the threshold. "
                "With a simulated registry, count thresholds and paths are scaled to its "
                "share of the province (docs/targets.md). A green point marks the day since "
                "which the target has been met without a break, a red one the day since which "
                "it has been behind (as GET /v1/trajectories' met_on / behind_since and the "
                "status page)."
            ),
            span=24,
            height=9,
            interval="1d",
        )
        .override_by_name("met since", _mark("met since", "green"))
        .override_by_name("behind since", _mark("behind since", "red")),
        actual,
        judged,
        plan,
        marks_sql(catalog),
    )
    board.sql(
        ts_panel("${target} by city", "short", span=24, height=9, interval="1d"),
        CITY_SERIES,
    )
    return board.build()
