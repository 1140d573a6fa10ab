"""The operator status page at ``/``, its data at ``/v1/status`` and live updates (SSE).

Access (docs/api.md, "Status page"): with ``api.status_public`` (the default) the page and its
data need no key; they carry aggregates only (each target per city, pipeline health), never a
device or a reading. Otherwise they need a key with ``coverage:read``; the page asks for it
once and keeps it in the tab's ``sessionStorage``, and a city-limited key sees its cities.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from api import views
from api.auth import Principal, Scope
from api.deps import (
    NOT_MODIFIED,
    PROBLEMS,
    ApiContext,
    admit,
    authenticate,
    authenticate_cached,
    context,
    current_snapshot,
    require,
    snapshot_response,
)
from api.schemas import StatusOut
from api.service import Answer, Snapshot
from qilu.ratelimit import retry_after_header
from storage.queries_api import Area

router = APIRouter(tags=["status"], responses=PROBLEMS)
KEEPALIVE_S = 15.0
_PUBLIC = Area()
_require_coverage = require(Scope.COVERAGE_READ)


def _status_token(ctx: ApiContext, client: str) -> None:
    """The public page's rate limit, per client address (429 with Retry-After)."""
    wait = ctx.limiter.take(f"status:{client}", ctx.settings.api.rate_per_s)
    if wait > 0:
        raise HTTPException(
            429, "rate limit exceeded", headers={"Retry-After": retry_after_header(wait)}
        )


def status_area_cached(ctx: ApiContext, header: str | None, client: str) -> Area | None:
    """:func:`status_reader` without I/O (for :mod:`api.fastpath`): None when an API key
    must first be read from the database."""
    if not ctx.settings.api.status_public:
        principal = authenticate_cached(ctx, header, client)
        if principal is None:
            return None
        admit(ctx, principal, Scope.COVERAGE_READ)
        return principal.area
    if header is not None and authenticate_cached(ctx, header, client) is None:
        return None  # a key on a public page is still checked
    _status_token(ctx, client)
    return _PUBLIC


async def status_reader(request: Request) -> Area:
    """The area the caller may see on the status page."""
    ctx = context(request)
    if not ctx.settings.api.status_public:
        principal: Principal = await _require_coverage(request)
        return principal.area
    if "authorization" in request.headers:  # a key on a public page: still checked
        await authenticate(ctx, request)
    _status_token(ctx, request.client.host if request.client else "unknown")
    return _PUBLIC


StatusArea = Annotated[Area, Depends(status_reader)]


def _status_answer(ctx: ApiContext, snap: Snapshot, area: Area) -> Answer:
    return views.status_answer(snap, ctx.catalog, area, ctx.settings.api.coverage_cache_s)


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page() -> HTMLResponse:
    html = resources.files("api.static").joinpath("index.html").read_text("utf-8")
    return HTMLResponse(html, headers={"Cache-Control": "no-cache"})


@router.get(
    "/v1/status",
    response_model=StatusOut,
    summary="Everything the status page shows: coverage per city, progress, pipeline health",
    responses=NOT_MODIFIED,
)
async def get_status(request: Request, area: StatusArea) -> Response:
    ctx = context(request)
    snap = current_snapshot(ctx)
    return snapshot_response(request, _status_answer(ctx, snap, area))


@router.get(
    "/v1/status/events",
    summary="Server-sent events: a `status` event (StatusOut) for each new snapshot",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}},
)
async def status_events(request: Request, area: StatusArea) -> StreamingResponse:
    """``event: status`` with ``id`` = snapshot version and the StatusOut JSON as ``data``,
    first the current snapshot and then each new one; a comment line every 15 s keeps
    proxies from closing the stream."""
    ctx = context(request)
    refresher = ctx.refresher

    async def stream() -> AsyncIterator[bytes]:
        woken = refresher.subscribe()
        sent = -1
        try:
            yield b"retry: 2000\n\n"
            while not await request.is_disconnected():
                woken.clear()
                snap = refresher.snapshot
                if snap is not None and snap.version != sent:
                    sent = snap.version
                    data = _status_answer(ctx, snap, area).body
                    yield b"event: status\nid: %d\ndata: %s\n\n" % (snap.version, data)
                try:
                    await asyncio.wait_for(woken.wait(), KEEPALIVE_S)
                except TimeoutError:
                    yield b": keep-alive\n\n"
        finally:
            refresher.unsubscribe(woken)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
