"""``/v1/export/readings``: raw readings of a time range as Parquet or Arrow IPC, streamed."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated

import psycopg
from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import StreamingResponse
from psycopg_pool import PoolTimeout
from starlette.background import BackgroundTask

from api import export
from api.deps import PROBLEMS, Ctx, TelemetryReader, unavailable
from api.routers.assets import CityParam, KindParam, SectorParam, asset_filter
from storage import queries_api as q

router = APIRouter(prefix="/v1", tags=["export"], responses=PROBLEMS)
logger = logging.getLogger(__name__)
BATCH_ROWS = 50_000

_BINARY = {"schema": {"type": "string", "format": "binary"}}


@router.get(
    "/export/readings",
    response_class=StreamingResponse,
    summary="Bulk export of raw readings (Parquet or Arrow IPC stream)",
    responses={
        200: {
            "description": "The file, streamed as it is produced. Columns: ts (timestamp[us, "
            "UTC]), device_id, site_id, city_code, kind, metric (strings), value (float64), "
            "quality (int16); ordered by ts.",
            "content": {
                "application/vnd.apache.parquet": _BINARY,
                "application/vnd.apache.arrow.stream": _BINARY,
            },
        }
    },
)
def export_readings(
    ctx: Ctx,
    who: TelemetryReader,
    start: Annotated[datetime, Query(description="from (inclusive), with a UTC offset")],
    end: Annotated[datetime, Query(description="to (exclusive), with a UTC offset")],
    fmt: Annotated[
        export.ExportFormat, Query(alias="format", description="parquet or arrow (IPC stream)")
    ] = export.ExportFormat.PARQUET,
    city: CityParam = None,
    sector: SectorParam = None,
    kind: KindParam = None,
    device_id: Annotated[str | None, Query()] = None,
    metric: Annotated[str | None, Query(examples=["power_kw"])] = None,
) -> StreamingResponse:
    """For analysts: read it with ``pyarrow.parquet.read_table`` or
    ``pyarrow.ipc.open_stream``. One consistent snapshot of the database; at most
    ``api.export_max_days`` days per request and ``api.export_concurrency`` exports at once."""
    for name, ts in (("start", start), ("end", end)):
        if ts.tzinfo is None:
            raise HTTPException(422, f"query.{name}: a UTC offset is required (e.g. ...Z)")
    if start >= end:
        raise HTTPException(400, "start must be before end")
    max_days = ctx.settings.api.export_max_days
    if end - start > timedelta(days=max_days):
        raise HTTPException(400, f"at most {max_days:g} days per export; split the range")
    asset_filter(ctx.catalog, who, sector, city, kind, None)
    flt = q.ExportFilter(
        start.astimezone(UTC), end.astimezone(UTC), city, sector, kind, device_id, metric
    )
    if not ctx.export_slots.acquire(blocking=False):
        raise HTTPException(
            429,
            f"{ctx.settings.api.export_concurrency} exports are running; try again shortly",
            headers={"Retry-After": "10"},
        )
    try:
        conn = ctx.pool.getconn(timeout=5)
    except PoolTimeout as exc:
        ctx.export_slots.release()
        raise unavailable("the database is not reachable", 5) from exc
    done = threading.Event()

    def release() -> None:
        if not done.is_set():
            done.set()
            ctx.pool.putconn(conn)
            ctx.export_slots.release()

    def body() -> Iterator[bytes]:
        try:
            yield from export.encode(q.export_readings(conn, who.area, flt, BATCH_ROWS), fmt)
        except psycopg.Error:
            logger.exception("export failed mid-stream; the client gets a truncated file")
            raise
        finally:
            release()

    return StreamingResponse(
        body(),
        media_type=fmt.media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{export.filename(fmt, start, end)}"'
        },
        background=BackgroundTask(release),
    )
