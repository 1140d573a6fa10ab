"""``/v1/gaps``: where data is known to be missing, as reported by the edge agents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from api import pagination
from api.deps import PROBLEMS, Ctx, TelemetryReader, database
from api.routers.assets import CityParam, CursorParam, LimitParam, SectorParam
from api.schemas import GapOut, PageOut
from storage import queries_api as q

router = APIRouter(prefix="/v1", tags=["gaps"], responses=PROBLEMS)


@router.get("/gaps", response_model=PageOut[GapOut], summary="Data gaps reported by agents")
def list_gaps(
    ctx: Ctx,
    who: TelemetryReader,
    start: Annotated[datetime | None, Query(description="default: end - 7 days")] = None,
    end: Annotated[datetime | None, Query(description="default: now")] = None,
    agent_id: Annotated[str | None, Query()] = None,
    device_id: Annotated[str | None, Query()] = None,
    city: CityParam = None,
    sector: SectorParam = None,
    cursor: CursorParam = None,
    limit: LimitParam = 100,
) -> PageOut[GapOut]:
    """Gaps overlapping [start, end), oldest first: an agent dropped readings (buffer full,
    device unreachable...) and said so. Gaps without a device cannot be placed in a city or
    sector: keys limited to some cities or sectors, and city or sector filters, omit them."""
    last = end or datetime.now(UTC)
    first = start or last - timedelta(days=7)
    for name, ts in (("start", first), ("end", last)):
        if ts.tzinfo is None:
            raise HTTPException(422, f"query.{name}: a UTC offset is required (e.g. ...Z)")
    if first >= last:
        raise HTTPException(400, "start must be before end")
    if city is not None and (city not in ctx.catalog.city_codes or not who.sees_city(city)):
        raise HTTPException(404, f"unknown city {city!r}")
    if sector is not None and not who.sees_sector(sector):
        raise HTTPException(404, f"unknown sector {sector!r}")
    after = None
    if cursor:
        a_ts, a_agent, a_boot, a_no = pagination.decode(cursor, (datetime, str, str, int))
        after = (a_ts, a_agent, a_boot, a_no)
    with database(ctx) as conn:
        rows = q.list_gaps(
            conn,
            who.area,
            start=first,
            end=last,
            agent_id=agent_id,
            device_id=device_id,
            city=city,
            sector=sector,
            after=after,
            limit=limit + 1,
        )
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = None
    if more:
        r = rows[-1]
        nxt = pagination.encode(
            [r.start_ts, r.agent_id, r.boot_id, -1 if r.gap_no is None else r.gap_no]
        )
    return PageOut[GapOut](
        items=[
            GapOut(
                agent_id=r.agent_id,
                boot_id=r.boot_id,
                gap_no=r.gap_no,
                device_id=r.device_id,
                city_code=r.city_code,
                sector=r.sector,
                start_ts=r.start_ts,
                end_ts=r.end_ts,
                dropped_readings=r.dropped_readings,
                reason=r.reason,
                received_at=r.received_at,
            )
            for r in rows
        ],
        next_cursor=nxt,
    )
