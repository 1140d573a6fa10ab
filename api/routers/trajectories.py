"""``/v1/trajectories/{target_id}``: one target's chart data, for the province or one city.

Access is the status page's (:func:`api.routers.status.status_reader`): a key with
``coverage:read``, or nobody's when ``api.status_public`` makes the page public (the answer
carries aggregates only, like ``/v1/status``). The status, the scale and ``as_of`` come from
the served snapshot, as in ``/v1/coverage``; the daily series from ``coverage_daily``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response

from api import judge, views
from api.deps import (
    NOT_MODIFIED,
    PROBLEMS,
    ApiContext,
    Ctx,
    current_snapshot,
    database,
    snapshot_response,
)
from api.routers.status import StatusArea
from api.schemas import BaselineOut, DayValueOut, SeriesDayOut, TrajectoryOut
from api.service import Snapshot
from qilu.catalog import Target, TargetKind
from storage import trajectories

router = APIRouter(prefix="/v1", tags=["coverage"], responses=PROBLEMS)
HISTORY_DAYS = 3660  # the longest history answered (ten years)


def _points(path: tuple[judge.DayPoint, ...]) -> list[DayValueOut]:
    return [DayValueOut(day=p.day, value=p.value) for p in path]


@router.get(
    "/trajectories/{target_id}",
    response_model=TrajectoryOut,
    summary="One target's daily values against its threshold and trajectories",
    responses=NOT_MODIFIED,
)
def get_trajectory(
    request: Request,
    ctx: Ctx,
    area: StatusArea,
    target_id: str,
    city: Annotated[
        str | None,
        Query(
            pattern=r"^\d{6}$",
            description="one city code (default: the province)",
            examples=["370200"],
        ),
    ] = None,
) -> Response:
    """The value per day (``coverage_daily``, up to ten years back) against the threshold
    (scaled when the registry is a simulated share of the province), the path the judgement
    uses (first observed value -> threshold at the due date, ADR 0005), the plan's own path
    when the catalog gives a baseline from a document, and the day since which the target
    has been met (``met_on``) or behind (``behind_since``). A count threshold is
    province-wide, so a city's count is charted but not judged (``status`` no_data).

    Built once per snapshot, target and city (the database is read then), with an ``ETag``:
    send it back in ``If-None-Match`` to get 304 until the next snapshot changes it."""
    snap = current_snapshot(ctx)
    catalog = ctx.catalog
    t = catalog.target(target_id)
    if t is None or not views.visible_target(area, t):
        raise HTTPException(404, f"unknown target {target_id!r}")
    if city is not None and (
        city not in catalog.city_codes or (area.cities is not None and city not in area.cities)
    ):
        raise HTTPException(404, f"unknown city {city!r}: not one of Shandong's 16 city codes")
    if city is None and area.cities is not None:
        raise HTTPException(
            404, "the province is not visible to this key: ask for one of its cities"
        )
    answer = snap.answer(
        ("trajectory", t.id, city),
        lambda: _trajectory(ctx, snap, t, city).model_dump_json().encode(),
    )
    return snapshot_response(request, answer)


def _trajectory(ctx: ApiContext, snap: Snapshot, t: Target, city: str | None) -> TrajectoryOut:
    catalog = ctx.catalog
    code = city or views.PROVINCE
    tc = next(tc for tc in snap.coverage if tc.target.id == t.id)
    figure = next((c for c in tc.cities if c.city_code == code), tc.province)
    today = judge.today_cst(snap.as_of)
    with database(ctx) as conn:
        rows = trajectories.series(conn, t.id, code, today - timedelta(days=HISTORY_DAYS), today)
    judged = city is None or t.kind is TargetKind.RATIO
    scale = judge.scale_for(t, snap.fractions)
    baseline = snap.baselines.get((t.id, code))
    if judged:
        j = judge.judge(t, figure.value(t.kind), snap.as_of, baseline, scale)
        status, explanation = j.status.value, j.explanation
        path = judge.trajectory(t, [judge.DayPoint(r.day, r.value) for r in rows], baseline, scale)
    else:
        status = judge.Status.NO_DATA.value
        explanation = "a count threshold is province-wide: a city's count is not judged"
        path = judge.Trajectory(judge.effective_threshold(t, scale), scale, (), None, None, None)
    b = t.baseline
    return TrajectoryOut(
        target_id=t.id,
        city=city,
        kind=t.kind.value,
        unit=f"{t.measure.unit}s" if t.kind is TargetKind.COUNT else f"share of {t.measure.unit}s",
        comparator=t.comparator,
        threshold=t.threshold,
        threshold_effective=path.threshold,
        scaled=scale is not None,
        scale=scale,
        due=t.due,
        status=status,
        explanation=explanation,
        series=[SeriesDayOut(day=r.day, value=r.value, synthetic=r.synthetic) for r in rows],
        judgement_path=_points(path.judgement_path),
        plan_path=_points(path.plan_path) if path.plan_path is not None else None,
        baseline=BaselineOut(day=b.day, value=b.value, source=catalog.cite(b.source))
        if b is not None
        else None,
        met_on=path.met_on,
        behind_since=path.behind_since,
        as_of=snap.as_of,
    )
