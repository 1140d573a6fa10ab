"""``/v1/coverage``: each target's value per city, now (from the snapshot) and per day."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated

import psycopg
from fastapi import APIRouter, HTTPException, Query, Request, Response
from psycopg_pool import PoolTimeout

from api import judge, views
from api.auth import Principal
from api.deps import (
    NOT_MODIFIED,
    PROBLEMS,
    CoverageReader,
    Ctx,
    context,
    current_snapshot,
    snapshot_response,
    unavailable,
)
from api.schemas import CoverageOut, CoverageSeriesOut, SeriesPointOut
from qilu.catalog import Catalog, Target
from storage import queries_api

router = APIRouter(prefix="/v1", tags=["coverage"], responses=PROBLEMS)

CityParam = Annotated[
    str | None,
    Query(pattern=r"^\d{6}$", description="only this city code, e.g. 370200", examples=["370200"]),
]
MAX_SERIES_DAYS = 3660


def _target(catalog: Catalog, who: Principal, target_id: str) -> Target:
    t = catalog.target(target_id)
    if t is None or not views.visible_target(who, t):
        raise HTTPException(404, f"unknown target {target_id!r}")
    return t


def _city(catalog: Catalog, who: Principal, city: str | None) -> None:
    if city is not None and (city not in catalog.city_codes or not who.sees_city(city)):
        raise HTTPException(404, f"unknown city {city!r}: not one of Shandong's 16 city codes")


@router.get(
    "/coverage",
    response_model=list[CoverageOut],
    summary="Current coverage per target, over the caller's area and per city",
    responses=NOT_MODIFIED,
)
async def get_coverage(
    request: Request,
    who: CoverageReader,
    target: Annotated[str | None, Query(description="only this target id")] = None,
    city: CityParam = None,
) -> Response:
    """Connected = a valid reading within the device kind's expected reporting interval.

    Served from the background snapshot (``as_of``; recomputed every few seconds), never
    computed per request. ``judgement`` says whether the target is met, on track, at risk or
    behind against its due date, and how that was decided. The answer carries an ``ETag``
    that changes with the snapshot; send it back in ``If-None-Match`` to get 304."""
    ctx = context(request)
    snap = current_snapshot(ctx)
    if target is not None:
        _target(ctx.catalog, who, target)
    _city(ctx.catalog, who, city)
    return snapshot_response(
        request, views.coverage_answer(snap, ctx.catalog, who.area, target, city)
    )


@router.get(
    "/coverage/{target_id}",
    response_model=CoverageOut,
    summary="Current coverage of one target",
    responses=NOT_MODIFIED,
)
async def get_target_coverage(
    request: Request, who: CoverageReader, target_id: str, city: CityParam = None
) -> Response:
    ctx = context(request)
    snap = current_snapshot(ctx)
    _target(ctx.catalog, who, target_id)
    _city(ctx.catalog, who, city)
    return snapshot_response(
        request, views.one_answer(snap, ctx.catalog, who.area, target_id, city)
    )


@router.get(
    "/coverage/{target_id}/series",
    response_model=CoverageSeriesOut,
    summary="Daily values of one target for the province or one city",
)
def get_series(
    ctx: Ctx,
    who: CoverageReader,
    target_id: str,
    city: Annotated[
        str,
        Query(pattern=r"^\d{6}$", description="city code, or 370000 for the province"),
    ] = views.PROVINCE,
    start: Annotated[date | None, Query(description="first day (default: end - 90 days)")] = None,
    end: Annotated[date | None, Query(description="last day (default: today, UTC+8)")] = None,
) -> CoverageSeriesOut:
    """From the daily rollup ``coverage_daily`` (one value per target, city and day)."""
    t = _target(ctx.catalog, who, target_id)
    if city == views.PROVINCE:
        if not who.whole_province:
            raise HTTPException(
                404, "unknown city '370000' for this key: ask for one of its cities"
            )
    else:
        _city(ctx.catalog, who, city)
    last = end or judge.today_cst(datetime.now(UTC))
    first = start or last - timedelta(days=90)
    if first > last:
        raise HTTPException(400, f"start {first} is after end {last}")
    if (last - first).days > MAX_SERIES_DAYS:
        raise HTTPException(400, f"at most {MAX_SERIES_DAYS} days per request")
    try:
        with ctx.pool.connection(timeout=5) as conn:
            rows = queries_api.coverage_series(conn, t.id, city, first, last)
    except queries_api.RelationMissingError as exc:
        raise unavailable(f"daily coverage is not available: {exc}", 60) from exc
    except (psycopg.OperationalError, PoolTimeout) as exc:
        raise unavailable("the database is not reachable", 5) from exc
    snap = ctx.refresher.snapshot  # the scale of a simulated registry, as in /v1/coverage
    scale = judge.scale_for(t, snap.fractions) if snap is not None else None
    threshold = judge.effective_threshold(t, scale)
    return CoverageSeriesOut(
        target_id=t.id,
        city_code=city,
        start=first,
        end=last,
        threshold=t.threshold,
        threshold_effective=threshold,
        scaled=scale is not None,
        scale=scale,
        comparator=t.comparator,
        due=t.due,
        points=[
            SeriesPointOut(
                day=r.day,
                numerator=r.numerator,
                denominator=r.denominator,
                value=r.value,
                met=r.value is not None and t.met(r.value, threshold),
            )
            for r in rows
        ],
    )
