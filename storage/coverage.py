"""Coverage: each target's current value, province-wide and per city, from registry + liveness.

An asset counts when it matches the target's measure (qilu/data/targets.toml); it is connected
when its latest valid reading is younger than its device kind's expected interval (the rule
of migration 066, ``qilu_seen_within``, read by every reader of liveness; for a
substation's telecontrol gateway: and that latest report says link up and general interrogation
complete, :data:`GATEWAYS_INTERROGATED`), or, for a pile of a T/CEC 102 operator, while its
operator's link is healthy and its last status is not offline, and for a pulled operator its
last reading is within twice the pull interval (:data:`_OPERATOR_LIVE`). The
registry counted is the registry as it was on the province day of ``now`` (the versions of migration
041 valid that day, in service: not in maintenance, not decommissioned), so a later change
never alters an earlier day's figure (docs/adr/0009-temporal-registry.md). SQL is built
from the catalog's closed vocabulary (attribute names are checked against SITE_ATTRIBUTES and
quoted as identifiers; values are parameters).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from qilu.catalog import SITE_ATTRIBUTES, Catalog, Measure, Target, TargetKind

PROVINCE_CODE = "370000"
# The province's calendar day (China Standard Time, no daylight saving) dates coverage_daily.
PROVINCE_TZ = timezone(timedelta(hours=8), "UTC+08:00")


@dataclass(frozen=True, slots=True)
class CityFigure:
    city_code: str
    numerator: int
    denominator: int

    def value(self, kind: TargetKind) -> float | None:
        if kind is TargetKind.COUNT:
            return float(self.numerator)
        return self.numerator / self.denominator if self.denominator else None


@dataclass(frozen=True, slots=True)
class TargetCoverage:
    target: Target
    as_of: datetime
    province: CityFigure  # city_code "370000"
    cities: tuple[CityFigure, ...]

    @property
    def value(self) -> float | None:
        return self.province.value(self.target.kind)

    @property
    def met(self) -> bool:
        v = self.value
        return v is not None and self.target.met(v)


def _attr_filters(
    attrs: dict[str, bool | int], op: str, params: dict[str, Any], tag: str
) -> list[sql.Composable]:
    out: list[sql.Composable] = []
    for name, value in sorted(attrs.items()):
        if name not in SITE_ATTRIBUTES:
            raise ValueError(f"unknown site attribute {name!r}")
        key = f"{tag}_{name}"
        params[key] = value
        out.append(
            sql.SQL("s.{} {} {}").format(sql.Identifier(name), sql.SQL(op), sql.Placeholder(key))
        )
    return out


def _and(parts: list[sql.Composable]) -> sql.Composable:
    return sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")


# The registry as it was on %(day)s, in service that day (aliases as the tables' names).
_DEVICES_ON = sql.SQL(
    "(SELECT device_pk, site_id, kind FROM device_versions WHERE valid_from <= %(day)s"
    " AND (valid_to IS NULL OR valid_to > %(day)s) AND status = 'active')"
)
_SITES_ON = sql.SQL(
    "(SELECT * FROM site_versions WHERE valid_from <= %(day)s"
    " AND (valid_to IS NULL OR valid_to > %(day)s) AND status = 'active')"
)


# Piles of a charging operator connected over T/CEC 102 (docs/adr/0015-tcec102.md) push their
# status only on change, so a quiet pile sends nothing for hours: such a pile is connected
# while its operator's link is healthy (an accepted push or a successful pull within twice
# the link's pull interval: one late pull is not an outage) and its last known status is not
# offline (connector_status 7, Unavailable, is what T/CEC 102's status 0 becomes): the status
# stored with its latest reading (device_liveness.last_seen), read by time. A pulled operator
# (one with an endpoint_url) refreshes every pile it still reports on each pull, so its pile
# also needs a reading within twice the pull interval: a station the operator dropped gets
# no answer and stops counting. A push-only operator sends a quiet pile's status only on
# change, so its piles have no such age limit (ADR 0015, "Liveness"). One uncorrelated
# subquery: PostgreSQL computes it once per query and probes it as a hash.
# OPERATOR_LINK_HEALTHY is the link rule's text for other readers (storage/operators.py,
# dashboards/pipeline.py): {now} the instant, o operators, l operator_links.
OPERATOR_LINK_HEALTHY = (
    "greatest({l}.last_push, {l}.last_pull) > {now} - 2 * {o}.pull_interval_s * interval '1 second'"
)
OPERATOR_LIVE_PILES = sql.SQL(
    "SELECT dv.device_pk FROM operator_connectors oc"
    " JOIN operators o ON o.operator_id = oc.operator_id AND o.revoked_at IS NULL"
    " JOIN operator_links ol ON ol.operator_id = o.operator_id"
    " JOIN devices dv ON dv.device_id = oc.device_id"
    " JOIN device_liveness lv ON lv.device_pk = dv.device_pk"
    " WHERE {} AND (o.endpoint_url = ''"
    "  OR qilu_seen_within(lv.last_seen, 2 * o.pull_interval_s * interval '1 second', %(now)s))"
    # the status stored with the pile's latest reading: one probe of one partition (the
    # time is known), not a search through every partition for the latest status
    " AND (SELECT r.value FROM readings r WHERE r.device_pk = lv.device_pk"
    "  AND r.ts = lv.last_seen"
    "  AND r.metric_id = (SELECT metric_id FROM metrics WHERE key = 'connector_status')"
    "  LIMIT 1) <> 7"
).format(sql.SQL(OPERATOR_LINK_HEALTHY.format(l="ol", o="o", now="%(now)s")))
_OPERATOR_LIVE = sql.SQL("d.device_pk IN ({})").format(OPERATOR_LIVE_PILES)
# A substation's telecontrol gateway (its IEC 104 link, collectors/iec104) reports link_up and
# gi_complete together, on every change and every 60 s while healthy; a link that connects
# but never finishes a general interrogation, or goes down, reports 0 at once. So the gateway
# is connected only while its latest report (the readings stored with device_liveness's
# last_seen) says link_up = 1 and gi_complete = 1: any report, whatever its values, is not
# enough. The gateways that pass, in one uncorrelated subquery (computed once, probed as a
# hash), with one probe of one partition each. GATEWAYS_INTERROGATED_TEMPLATE is its text for
# another reader: dashboards/sectors.py, which reads no raw readings (ADR 0002), fills it with
# now() and the newest readings_1m bucket, whose ``last`` is the value at last_seen.
GATED_KIND = "telecontrol_gateway"  # the kind GATEWAYS_INTERROGATED_TEMPLATE is about
GATEWAYS_INTERROGATED_TEMPLATE = (
    "SELECT lv.device_pk FROM device_liveness lv"
    " JOIN devices dv ON dv.device_pk = lv.device_pk AND dv.kind = 'telecontrol_gateway'"
    " WHERE qilu_seen_within(lv.last_seen,"
    "  (SELECT expected_interval FROM device_kinds WHERE kind = 'telecontrol_gateway'), {now})"
    " AND (SELECT count(*) FROM {relation} r WHERE r.device_pk = lv.device_pk"
    "  AND {at} AND {value} = 1 AND r.metric_id IN"
    "  (SELECT metric_id FROM metrics WHERE key IN ('link_up', 'gi_complete'))) = 2"
)
GATEWAYS_INTERROGATED = sql.SQL(
    GATEWAYS_INTERROGATED_TEMPLATE.format(
        now="%(now)s", relation="readings", at="r.ts = lv.last_seen", value="r.value"
    )
)
# The liveness rule itself (a valid reading within the kind's expected interval) is the SQL
# function qilu_seen_within of migration 066, the one definition every reader uses (coverage,
# the API's queries, the device_connected view the dashboards and alert rules read); the
# planner inlines it. SEEN_WITHIN is its call: device ``d``'s liveness ``l``, kind ``k``.
SEEN_WITHIN = "qilu_seen_within(l.last_seen, k.expected_interval, {now})"
_LIVE_READINGS = sql.SQL("({} AND (d.kind <> {} OR d.device_pk IN ({})))").format(
    sql.SQL(SEEN_WITHIN.format(now="%(now)s")), sql.Literal(GATED_KIND), GATEWAYS_INTERROGATED
)
_LIVE = sql.SQL("({} OR {})").format(_LIVE_READINGS, _OPERATOR_LIVE)


def live_condition(conn: psycopg.Connection[TupleRow]) -> sql.Composable:
    """The connected condition this database can evaluate: without the operator tables
    (migrated before 056) the readings' liveness alone."""
    row = conn.execute("SELECT to_regclass('operator_links') IS NOT NULL").fetchone()
    return _LIVE if row and row[0] else _LIVE_READINGS


def _measure_parts(
    m: Measure, params: dict[str, Any]
) -> tuple[sql.Composable, sql.Composable, sql.Composable]:
    """(site filter, numerator condition, device kind filter) of a measure; fills ``params``."""
    site_where = _attr_filters(m.where, "=", params, "w") + _attr_filters(m.min, ">=", params, "m")
    if m.sector is not None:
        params["sector"] = m.sector.value
        site_where.append(sql.SQL("s.sector = %(sector)s"))
    numer = _and(_attr_filters(m.numerator, "=", params, "n"))
    kind_filter: sql.Composable = sql.SQL("true")
    if m.device_kind is not None:
        params["kind"] = m.device_kind
        kind_filter = sql.SQL("d.kind = %(kind)s")
    return _and(site_where), numer, kind_filter


def build_query(
    m: Measure, now: datetime, live: sql.Composable = _LIVE
) -> tuple[sql.Composed, dict[str, Any]]:
    """SQL returning (city_code, denominator, numerator) for one measure.

    ``live`` is the condition a device ``d`` must meet to count as connected (by default: a
    valid reading within its kind's expected interval; the simulation's backfill passes its
    own, :mod:`storage.trajectories`)."""
    params: dict[str, Any] = {"now": now, "day": province_day(now)}
    site, numer, kind_filter = _measure_parts(m, params)

    if m.unit == "device":
        cond = sql.SQL("{} AND {}").format(numer, live) if m.connected else numer
        query = sql.SQL(
            "SELECT s.city_code, count(*), count(*) FILTER (WHERE {cond})"
            " FROM {devices} d JOIN {sites} s ON s.site_id = d.site_id"
            " JOIN device_kinds k ON k.kind = d.kind"
            " LEFT JOIN device_liveness l ON l.device_pk = d.device_pk"
            " WHERE {kind} AND {site} GROUP BY s.city_code"
        ).format(cond=cond, kind=kind_filter, site=site, devices=_DEVICES_ON, sites=_SITES_ON)
        return query, params

    site_conn = {
        "any": sql.SQL("n_conn > 0"),
        "all": sql.SQL("n_dev > 0 AND n_conn = n_dev"),
    }[m.site_rule]
    cond = sql.SQL("num_ok AND {}").format(site_conn) if m.connected else sql.SQL("num_ok")
    query = sql.SQL(
        "WITH per_site AS ("
        " SELECT s.site_id, s.city_code, bool_and({numer}) AS num_ok,"
        "  count(d.device_pk) AS n_dev, count(*) FILTER (WHERE {live}) AS n_conn"
        " FROM {sites} s LEFT JOIN {devices} d ON d.site_id = s.site_id AND {kind}"
        " LEFT JOIN device_kinds k ON k.kind = d.kind"
        " LEFT JOIN device_liveness l ON l.device_pk = d.device_pk"
        " WHERE {site} GROUP BY s.site_id, s.city_code)"
        " SELECT city_code, count(*), count(*) FILTER (WHERE {cond})"
        " FROM per_site GROUP BY city_code"
    ).format(
        numer=numer,
        live=live,
        kind=kind_filter,
        site=site,
        cond=cond,
        devices=_DEVICES_ON,
        sites=_SITES_ON,
    )
    return query, params


def membership_query(m: Measure, day: date) -> tuple[sql.Composed, dict[str, Any]]:
    """What a measure counts on ``day``, without liveness (storage/coverage_incremental.py).

    A device measure: one row per counted device, (device_pk, city_code, numerator condition
    met). A site measure: one row per counted site, (site_id, city_code, numerator condition
    met, the site's devices of the measure's kind). A condition on a NULL attribute is not
    met, as in :func:`build_query`."""
    params: dict[str, Any] = {"day": day}
    site, numer, kind_filter = _measure_parts(m, params)
    if m.unit == "device":
        query = sql.SQL(
            "SELECT d.device_pk, s.city_code, coalesce({numer}, false)"
            " FROM {devices} d JOIN {sites} s ON s.site_id = d.site_id"
            " JOIN device_kinds k ON k.kind = d.kind"
            " WHERE {kind} AND {site}"
        )
    else:
        query = sql.SQL(
            "SELECT s.site_id, s.city_code, coalesce(bool_and({numer}), false),"
            " array_remove(array_agg(d.device_pk), NULL)"
            " FROM {sites} s LEFT JOIN {devices} d ON d.site_id = s.site_id AND {kind}"
            " WHERE {site} GROUP BY s.site_id, s.city_code"
        )
    return query.format(
        numer=numer, kind=kind_filter, site=site, devices=_DEVICES_ON, sites=_SITES_ON
    ), params


def compute(
    conn: psycopg.Connection[TupleRow], catalog: Catalog, now: datetime
) -> list[TargetCoverage]:
    """Every target's coverage as of ``now``, read in one consistent snapshot.

    O(devices): at province scale (~270,000 devices) this takes hundreds of milliseconds, so
    readers that need an answer at once use :func:`latest` (the newest recorded snapshot) and
    the maintenance loop records one every ``storage.coverage_snapshot_interval_s``.
    """
    result: list[TargetCoverage] = []
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        live = live_condition(conn)
        for target in catalog.targets:
            province, cities = figures(conn, catalog, build_query(target.measure, now, live))
            result.append(TargetCoverage(target, now, province, cities))
    return result


def figures(
    conn: psycopg.Connection[TupleRow],
    catalog: Catalog,
    query: tuple[sql.Composed, dict[str, Any]],
) -> tuple[CityFigure, tuple[CityFigure, ...]]:
    """The province's and each city's figure from a :func:`build_query` query."""
    by_city = {r[0]: (int(r[1]), int(r[2])) for r in conn.execute(*query)}
    cities = tuple(
        CityFigure(code, by_city.get(code, (0, 0))[1], by_city.get(code, (0, 0))[0])
        for code in catalog.city_codes
    )
    province = CityFigure(
        PROVINCE_CODE, sum(c.numerator for c in cities), sum(c.denominator for c in cities)
    )
    return province, cities


def province_day(now: datetime) -> date:
    """The calendar day in the province at ``now`` (the day of a coverage_daily row)."""
    return now.astimezone(PROVINCE_TZ).date()


# One statement for the whole day (arrays, not a statement per row): ~200 rows, a few KB.
_UPSERT_DAILY = (
    "INSERT INTO coverage_daily"
    " (day, target_id, city_code, numerator, denominator, value, computed_at)"
    " SELECT %s::date, t, c, n, d, v, %s::timestamptz"
    " FROM unnest(%s::text[], %s::text[], %s::int4[], %s::int4[], %s::float8[]) AS u(t, c, n, d, v)"
    " ON CONFLICT (target_id, city_code, day) DO UPDATE SET numerator = EXCLUDED.numerator,"
    " denominator = EXCLUDED.denominator, value = EXCLUDED.value,"
    " computed_at = EXCLUDED.computed_at"
    " WHERE coverage_daily.computed_at <= EXCLUDED.computed_at"
)


def snapshot(conn: psycopg.Connection[TupleRow], catalog: Catalog, now: datetime) -> int:
    """Record every target's value as of ``now`` as the row of that day in coverage_daily.

    Idempotent per day: a later snapshot of the same day replaces the row, an earlier one
    (a late or repeated run) leaves it alone; so the series keeps each day's last value.
    Returns the number of rows written (targets x (16 cities + province)).
    """
    return record(conn, compute(conn, catalog, now), now)


def record(conn: psycopg.Connection[TupleRow], figures: list[TargetCoverage], now: datetime) -> int:
    """Record ``figures``, computed as of ``now``, as the rows of that day in coverage_daily
    (as :func:`snapshot` does; for a caller that keeps the figures itself, like the
    maintenance loop with :class:`storage.coverage_incremental.IncrementalCoverage`)."""
    rows = [
        (tc.target.id, fig.city_code, fig.numerator, fig.denominator, fig.value(tc.target.kind))
        for tc in figures
        for fig in (tc.province, *tc.cities)
    ]
    columns = [list(col) for col in zip(*rows, strict=True)] if rows else [[]] * 5
    with conn.transaction():
        conn.execute(_UPSERT_DAILY, (province_day(now), now, *columns))
    return len(rows)


def latest(conn: psycopg.Connection[TupleRow], catalog: Catalog) -> list[TargetCoverage] | None:
    """The newest recorded snapshot (:func:`snapshot`), as of the time it was computed; None
    if there is none. One indexed read of a few hundred rows: what a reader that must answer
    at once (an API request, a dashboard) uses at province scale."""
    with conn.transaction():
        rows = conn.execute(
            "SELECT target_id, city_code, numerator, denominator, computed_at FROM coverage_daily"
            " WHERE day = (SELECT max(day) FROM coverage_daily)"
        ).fetchall()
    if not rows:
        return None
    as_of = max(r[4] for r in rows)
    figures: dict[tuple[str, str], tuple[int, int]] = {(r[0], r[1]): (r[2], r[3]) for r in rows}
    result = []
    for target in catalog.targets:
        cities = tuple(
            CityFigure(code, *figures.get((target.id, code), (0, 0))) for code in catalog.city_codes
        )
        province = CityFigure(PROVINCE_CODE, *figures.get((target.id, PROVINCE_CODE), (0, 0)))
        result.append(TargetCoverage(target, as_of, province, cities))
    return result
