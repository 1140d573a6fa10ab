"""Coverage: each target's current value, province-wide and per city, from registry + liveness.

An asset counts when it matches the target's measure (qilu/data/targets.toml); it is connected
when its latest valid reading is younger than its device kind's expected interval. SQL is built
from the catalog's closed vocabulary (attribute names are checked against SITE_ATTRIBUTES and
quoted as identifiers; values are parameters).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from qilu.catalog import SITE_ATTRIBUTES, Catalog, Measure, Target, TargetKind


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


def build_query(m: Measure, now: datetime) -> tuple[sql.Composed, dict[str, Any]]:
    """SQL returning (city_code, denominator, numerator) for one measure."""
    params: dict[str, Any] = {"now": now}
    site_where = _attr_filters(m.where, "=", params, "w") + _attr_filters(m.min, ">=", params, "m")
    if m.sector is not None:
        params["sector"] = m.sector.value
        site_where.append(sql.SQL("s.sector = %(sector)s"))
    numer = _and(_attr_filters(m.numerator, "=", params, "n"))
    live = sql.SQL("l.last_seen > %(now)s - k.expected_interval")
    kind_filter = sql.SQL("true")
    if m.device_kind is not None:
        params["kind"] = m.device_kind
        kind_filter = sql.SQL("d.kind = %(kind)s")

    if m.unit == "device":
        cond = sql.SQL("{} AND {}").format(numer, live) if m.connected else numer
        query = sql.SQL(
            "SELECT s.city_code, count(*), count(*) FILTER (WHERE {cond})"
            " FROM devices d JOIN sites s ON s.site_id = d.site_id"
            " JOIN device_kinds k ON k.kind = d.kind"
            " LEFT JOIN device_liveness l ON l.device_pk = d.device_pk"
            " WHERE {kind} AND {site} GROUP BY s.city_code"
        ).format(cond=cond, kind=kind_filter, site=_and(site_where))
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
        " FROM sites s LEFT JOIN devices d ON d.site_id = s.site_id AND {kind}"
        " LEFT JOIN device_kinds k ON k.kind = d.kind"
        " LEFT JOIN device_liveness l ON l.device_pk = d.device_pk"
        " WHERE {site} GROUP BY s.site_id, s.city_code)"
        " SELECT city_code, count(*), count(*) FILTER (WHERE {cond})"
        " FROM per_site GROUP BY city_code"
    ).format(numer=numer, live=live, kind=kind_filter, site=_and(site_where), cond=cond)
    return query, params


def compute(
    conn: psycopg.Connection[TupleRow], catalog: Catalog, now: datetime
) -> list[TargetCoverage]:
    """Every target's coverage as of ``now``, read in one consistent snapshot."""
    result: list[TargetCoverage] = []
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        for target in catalog.targets:
            query, params = build_query(target.measure, now)
            by_city = {r[0]: (int(r[1]), int(r[2])) for r in conn.execute(query, params)}
            cities = tuple(
                CityFigure(code, by_city.get(code, (0, 0))[1], by_city.get(code, (0, 0))[0])
                for code in catalog.city_codes
            )
            province = CityFigure(
                "370000", sum(c.numerator for c in cities), sum(c.denominator for c in cities)
            )
            result.append(TargetCoverage(target, now, province, cities))
    return result
