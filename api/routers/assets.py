"""``/v1/sites`` and ``/v1/devices``: the registry with liveness, and a device's readings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query

from api import pagination
from api.auth import Principal
from api.deps import PROBLEMS, Ctx, TelemetryReader, database
from api.schemas import DeviceOut, PageOut, ReadingOut, ReadingsPageOut, SiteOut
from qilu.catalog import Catalog
from qilu.devices import KINDS
from storage import queries_api as q

router = APIRouter(prefix="/v1", tags=["sites and devices"], responses=PROBLEMS)

Sector = Literal["charging", "substation", "ranch"]
SectorParam = Annotated[Sector | None, Query(description="charging, substation or ranch")]
CityParam = Annotated[
    str | None, Query(pattern=r"^\d{6}$", description="city code", examples=["370200"])
]
KindParam = Annotated[
    str | None, Query(description="device kind, e.g. charging_pile", examples=["charging_pile"])
]
StateParam = Annotated[q.DeviceState | None, Query(description="online, offline or never_seen")]
CursorParam = Annotated[str | None, Query(description="next_cursor of the previous page")]
LimitParam = Annotated[int, Query(ge=1, le=1000, description="page size (at most 1000)")]


def asset_filter(
    catalog: Catalog,
    who: Principal,
    sector: str | None,
    city: str | None,
    kind: str | None,
    state: q.DeviceState | None,
    site_id: str | None = None,
) -> q.AssetFilter:
    """The filter, or 404 when it names a city or sector outside the caller's area."""
    if city is not None and (city not in catalog.city_codes or not who.sees_city(city)):
        raise HTTPException(404, f"unknown city {city!r}")
    if sector is not None and not who.sees_sector(sector):
        raise HTTPException(404, f"unknown sector {sector!r}")
    if kind is not None and kind not in KINDS:
        raise HTTPException(422, f"query.kind: unknown device kind {kind!r}")
    if kind is not None and not who.sees_sector(KINDS[kind].sector.value):
        raise HTTPException(404, f"unknown device kind {kind!r}")
    return q.AssetFilter(sector, city, kind, state, site_id)


def device_out(r: q.DeviceRow) -> DeviceOut:
    return DeviceOut(
        device_id=r.device_id,
        site_id=r.site_id,
        kind=r.kind,
        sector=r.sector,
        city_code=r.city_code,
        state=r.state.value,
        last_seen=r.last_seen,
        expected_interval_s=r.expected_interval_s,
    )


def site_out(r: q.SiteRow) -> SiteOut:
    return SiteOut(
        site_id=r.site_id,
        name=r.name,
        sector=r.sector,
        city_code=r.city_code,
        attributes=r.attributes,
        state=r.state.value,
        devices=r.devices,
        online=r.online,
        offline=r.offline,
        never_seen=r.never_seen,
        last_seen=r.last_seen,
    )


@router.get("/sites", response_model=PageOut[SiteOut], summary="Sites with device liveness")
def list_sites(
    ctx: Ctx,
    who: TelemetryReader,
    sector: SectorParam = None,
    city: CityParam = None,
    kind: KindParam = None,
    state: StateParam = None,
    cursor: CursorParam = None,
    limit: LimitParam = 100,
) -> PageOut[SiteOut]:
    """Each site with how many of its devices are online, offline (seen before, silent longer
    than their kind's expected interval) or never seen. With ``kind``, only sites having
    devices of that kind, counting those devices only."""
    flt = asset_filter(ctx.catalog, who, sector, city, kind, state)
    after = pagination.decode(cursor, (str,))[0] if cursor else None
    with database(ctx) as conn:
        rows = q.list_sites(conn, datetime.now(UTC), who.area, flt, after=after, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return PageOut[SiteOut](
        items=[site_out(r) for r in rows],
        next_cursor=pagination.encode([rows[-1].site_id]) if more else None,
    )


@router.get("/sites/{site_id}", response_model=SiteOut, summary="One site")
def get_site(ctx: Ctx, who: TelemetryReader, site_id: str) -> SiteOut:
    with database(ctx) as conn:
        rows = q.list_sites(
            conn, datetime.now(UTC), who.area, q.AssetFilter(), after=None, limit=1, site_id=site_id
        )
    if not rows:
        raise HTTPException(404, f"unknown site {site_id!r}")
    return site_out(rows[0])


@router.get("/devices", response_model=PageOut[DeviceOut], summary="Devices with liveness")
def list_devices(
    ctx: Ctx,
    who: TelemetryReader,
    sector: SectorParam = None,
    city: CityParam = None,
    kind: KindParam = None,
    state: StateParam = None,
    site_id: Annotated[str | None, Query(description="only this site's devices")] = None,
    cursor: CursorParam = None,
    limit: LimitParam = 100,
) -> PageOut[DeviceOut]:
    """online: a valid reading within the kind's expected interval; offline: seen before but
    silent longer; never_seen: no valid reading ever."""
    flt = asset_filter(ctx.catalog, who, sector, city, kind, state, site_id)
    after = pagination.decode(cursor, (str,))[0] if cursor else None
    with database(ctx) as conn:
        rows = q.list_devices(conn, datetime.now(UTC), who.area, flt, after=after, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return PageOut[DeviceOut](
        items=[device_out(r) for r in rows],
        next_cursor=pagination.encode([rows[-1].device_id]) if more else None,
    )


@router.get("/devices/{device_id}", response_model=DeviceOut, summary="One device")
def get_device(ctx: Ctx, who: TelemetryReader, device_id: str) -> DeviceOut:
    with database(ctx) as conn:
        rows = q.list_devices(
            conn,
            datetime.now(UTC),
            who.area,
            q.AssetFilter(),
            after=None,
            limit=1,
            device_id=device_id,
        )
    if not rows:
        raise HTTPException(404, f"unknown device {device_id!r}")
    return device_out(rows[0])


@router.get(
    "/devices/{device_id}/readings",
    response_model=ReadingsPageOut,
    summary="A device's readings over a time range: raw, 1-minute or 1-hour",
)
def get_readings(
    ctx: Ctx,
    who: TelemetryReader,
    device_id: str,
    resolution: Annotated[
        q.Resolution, Query(description="raw readings, or the 1m / 1h rollups")
    ] = q.Resolution.MINUTE,
    metric: Annotated[
        str | None, Query(description="only this metric key", examples=["power_kw"])
    ] = None,
    start: Annotated[
        datetime | None, Query(description="from (inclusive; default end - 1 hour)")
    ] = None,
    end: Annotated[datetime | None, Query(description="to (exclusive; default now)")] = None,
    cursor: CursorParam = None,
    limit: LimitParam = 1000,
) -> ReadingsPageOut:
    """Ordered by time then metric. ``1m`` and ``1h`` come from the rollups ``readings_1m`` and
    ``readings_1h`` (count, min, max, average and last value per bucket); ``raw`` from
    ``readings``. Times need a UTC offset."""
    last = end or datetime.now(UTC)
    first = start or last - timedelta(hours=1)
    for name, ts in (("start", first), ("end", last)):
        if ts.tzinfo is None:
            raise HTTPException(422, f"query.{name}: a UTC offset is required (e.g. ...Z)")
    if first >= last:
        raise HTTPException(400, "start must be before end")
    after = None
    if cursor:
        a_ts, a_metric = pagination.decode(cursor, (datetime, int))
        after = (a_ts, a_metric)
    with database(ctx) as conn:
        dev = q.find_device(conn, who.area, device_id)
        if dev is None:
            raise HTTPException(404, f"unknown device {device_id!r}")
        ids = q.metric_ids(conn)
        metric_id = None
        if metric is not None:
            spec = KINDS[dev.kind].metric(metric)
            if spec is None or metric not in ids:
                raise HTTPException(404, f"device {device_id!r} has no metric {metric!r}")
            metric_id = ids[metric]
        points = q.device_readings(
            conn,
            dev.device_pk,
            resolution,
            first,
            last,
            metric_id=metric_id,
            after=after,
            limit=limit + 1,
        )
    more = len(points) > limit
    points = points[:limit]
    return ReadingsPageOut(
        device_id=device_id,
        resolution=resolution.value,
        start=first,
        end=last,
        items=[
            ReadingOut(
                ts=p.ts,
                metric=p.metric,
                n=p.n,
                min=p.min,
                max=p.max,
                avg=p.avg,
                last=p.last,
                quality=p.quality,
            )
            for p in points
        ],
        next_cursor=pagination.encode(list(q.point_key(points, ids))) if more else None,
    )
