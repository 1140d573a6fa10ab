from __future__ import annotations

import logging

import psycopg
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout

from api.deps import CoverageDep
from api.schemas import Health

router = APIRouter(tags=["health"])
logger = logging.getLogger(__name__)


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    responses={503: {"model": Health}},
    summary="Readiness: the database answers",
)
def readyz(svc: CoverageDep) -> Health | JSONResponse:
    try:
        svc.ping()
    except (psycopg.Error, PoolTimeout) as exc:
        body = Health(status="unavailable", checks={"database": str(exc)[:200]})
        return JSONResponse(body.model_dump(), status_code=503)
    return Health(status="ok", checks={"database": "ok"})
