"""``/healthz`` (the process answers) and ``/readyz`` (database reachable, snapshot present)."""

from __future__ import annotations

import psycopg
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from starlette.concurrency import run_in_threadpool

from api.deps import Ctx
from api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    responses={503: {"model": Health}},
    summary="Readiness: the database answers and the first coverage snapshot exists",
)
async def readyz(ctx: Ctx) -> Health | JSONResponse:
    checks: dict[str, str] = {}
    try:
        await run_in_threadpool(ctx.refresher.ping)
        checks["database"] = "ok"
    except (psycopg.Error, PoolTimeout) as exc:
        checks["database"] = str(exc)[:200] or type(exc).__name__
    snap = ctx.refresher.snapshot
    checks["snapshot"] = f"version {snap.version} at {snap.as_of:%H:%M:%S}" if snap else "pending"
    if checks["database"] != "ok" or snap is None:
        body = Health(status="unavailable", checks=checks)
        return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": "2"})
    return Health(status="ok", checks=checks)
