"""Check the rollups against a recomputation from the raw readings, in either mode.

``readings_1m``, ``readings_1h`` and ``site_liveness_1h`` must equal what the raw rows of
``readings`` give when aggregated again (ADR 0002), and so must the ranged reads
``qilu_readings_1m(lo, hi)`` / ``qilu_readings_1h(lo, hi)`` the API uses. :func:`compare`
recomputes a time window with plain SQL (no TimescaleDB function, so the same check runs in
both modes) and lists every bucket that differs: missing, extra, or with a different count,
min, max, average (relative tolerance 1e-9: an hourly average is combined from minute
averages) or last value.
``qilu storage verify`` runs it; the tests use it after late and redelivered data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import TupleRow

_ORIGIN = "TIMESTAMPTZ '2000-01-01 00:00+00'"
_RAW_SERIES = (
    "SELECT device_pk, metric_id, date_bin(INTERVAL '{width}', ts, {origin}) AS bucket,"
    " count(*), min(value), max(value), avg(value), (array_agg(value ORDER BY ts DESC))[1]"
    " FROM readings WHERE ts >= %(lo)s AND ts < %(hi)s GROUP BY 1, 2, 3"
)
_VIEW_SERIES = (
    "SELECT device_pk, metric_id, bucket, n, min, max, avg, last FROM {view}"
    " WHERE bucket >= %(lo)s AND bucket < %(hi)s"
)
_RAW_SITES = (
    "SELECT d.site_id, date_bin(INTERVAL '1 hour', r.ts, {origin}) AS bucket,"
    " count(DISTINCT r.device_pk), count(*)"
    " FROM readings r JOIN devices d ON d.device_pk = r.device_pk"
    " WHERE r.ts >= %(lo)s AND r.ts < %(hi)s GROUP BY 1, 2"
)
_VIEW_SITES = (
    "SELECT site_id, bucket, devices_reporting, readings FROM site_liveness_1h"
    " WHERE bucket >= %(lo)s AND bucket < %(hi)s"
)


@dataclass(frozen=True, slots=True)
class Mismatch:
    relation: str
    key: tuple[Any, ...]
    rollup: tuple[Any, ...] | None  # None: the bucket is missing from the rollup
    recomputed: tuple[Any, ...] | None  # None: the rollup has a bucket the raw rows lack

    def __str__(self) -> str:
        return f"{self.relation} {self.key}: rollup {self.rollup} != recomputed {self.recomputed}"


@dataclass(frozen=True, slots=True)
class Comparison:
    buckets: dict[str, int]  # relation -> buckets compared
    mismatches: list[Mismatch]

    @property
    def equal(self) -> bool:
        return not self.mismatches


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    for x, y in zip(a, b, strict=True):
        if isinstance(x, float) or isinstance(y, float):
            if not math.isclose(float(x), float(y), rel_tol=1e-9, abs_tol=1e-12):
                return False
        elif x != y:
            return False
    return True


def _diff(
    relation: str,
    got: dict[tuple[Any, ...], tuple[Any, ...]],
    want: dict[tuple[Any, ...], tuple[Any, ...]],
) -> list[Mismatch]:
    out = []
    for key in sorted(set(got) | set(want), key=repr):
        g, w = got.get(key), want.get(key)
        if g is None or w is None or not _same(g, w):
            out.append(Mismatch(relation, key, g, w))
    return out


def _fetch(
    conn: psycopg.Connection[TupleRow], query: str, params: dict[str, Any], key_len: int
) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    return {tuple(r[:key_len]): tuple(r[key_len:]) for r in conn.execute(query.encode(), params)}


def compare(conn: psycopg.Connection[TupleRow], lo: datetime, hi: datetime) -> Comparison:
    """Compare the rollups with a recomputation over [lo, hi) (whole hours are best: an hour
    cut by the window is compared against part of its readings)."""
    params = {"lo": lo, "hi": hi}
    buckets: dict[str, int] = {}
    mismatches: list[Mismatch] = []
    for view, width in (("readings_1m", "1 minute"), ("readings_1h", "1 hour")):
        want = _fetch(conn, _RAW_SERIES.format(width=width, origin=_ORIGIN), params, 3)
        got = _fetch(conn, _VIEW_SERIES.format(view=view), params, 3)
        buckets[view] = len(want)
        mismatches += _diff(view, got, want)
        # the same rows over a range, as the API reads them (migration 007)
        ranged = f"qilu_{view}(%(lo)s, %(hi)s)"
        got = _fetch(conn, _VIEW_SERIES.format(view=ranged), params, 3)
        mismatches += _diff(ranged.replace("%(lo)s, %(hi)s", "lo, hi"), got, want)
    want = _fetch(conn, _RAW_SITES.format(origin=_ORIGIN), params, 2)
    got = _fetch(conn, _VIEW_SITES, params, 2)
    buckets["site_liveness_1h"] = len(want)
    mismatches += _diff("site_liveness_1h", got, want)
    return Comparison(buckets, mismatches)
