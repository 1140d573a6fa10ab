"""``/v1/admin/points``: IEC 104 point tables of an agent's stations (admin scope), the same
operations as ``qilu points`` (storage/point_tables.py). An import is audited as
``api:<key id>`` in the transaction that stores it; uploads are limited by
``api.max_request_bytes`` like inventories.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.deps import PROBLEMS, Admin, Ctx, database
from api.routers.admin_registry import actor
from api.schemas import Problem
from storage import point_tables as pt

router = APIRouter(prefix="/v1/admin/points", tags=["admin"], responses={**PROBLEMS})
AgentId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
StationName = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]


class RowErrorOut(BaseModel):
    line: int
    reason: str


class PointImportOut(BaseModel):
    agent_id: str
    station: str
    points: int
    added: int
    changed: int
    removed: int
    unchanged: int
    dry_run: bool
    applied: bool
    errors: list[RowErrorOut] = Field(description="every bad row, with its line (header = 1)")


class PointImportProblem(Problem):
    """A 422 of the import: ``result`` lists the bad rows with their lines."""

    result: PointImportOut | None = None


@router.post(
    "/{agent_id}/{station}",
    response_model=PointImportOut,
    summary="Import a station's point table, CSV or XLSX (the request body is the file)",
    responses={422: {"model": PointImportProblem, "description": "bad rows, with their lines"}},
)
async def import_points(
    request: Request,
    ctx: Ctx,
    who: Admin,
    agent_id: AgentId,
    station: StationName,
    dry_run: Annotated[bool, Query(description="only check and report")] = False,
    encoding: Annotated[str | None, Query(description="CSV: default UTF-8, else GB18030")] = None,
    name: Annotated[str, Query(description="file name (.xlsx: a workbook), for the audit")] = (
        "upload.csv"
    ),
) -> PointImportOut | JSONResponse:
    """Every row is checked, and against the registry (devices of the agent's sites, metrics
    of their kind); one bad row stores nothing. The same table again changes nothing."""
    data = await request.body()

    def run() -> pt.ImportResult:
        rows, row_errors = pt.read_rows(data, name, encoding=encoding)
        with database(ctx) as conn:
            return pt.import_table(
                conn,
                agent_id=agent_id,
                station=station,
                rows=rows,
                row_errors=row_errors,
                actor=actor(who),
                source=name,
                sha256=hashlib.sha256(data).hexdigest(),
                dry_run=dry_run,
            )

    try:
        res = await anyio.to_thread.run_sync(run)
    except pt.PointTableError as exc:
        raise HTTPException(422, str(exc)) from exc
    out = PointImportOut(
        agent_id=agent_id,
        station=station,
        **res.summary(),
        dry_run=res.dry_run,
        applied=res.applied,
        errors=[RowErrorOut(line=e.line, reason=e.reason) for e in res.errors],
    )
    if res.errors:
        body = PointImportProblem(
            error="invalid_point_table",
            detail=f"{len(res.errors)} bad row(s) of {res.rows}: nothing imported",
            result=out,
        )
        return JSONResponse(body.model_dump(mode="json"), status_code=422)
    return out


@router.get(
    "/{agent_id}/{station}",
    summary="A station's checked point table as the agent reads it (CSV)",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}, 404: {"model": Problem}},
)
def export_points(ctx: Ctx, who: Admin, agent_id: AgentId, station: StationName) -> Response:
    del who
    try:
        with database(ctx) as conn:
            text = pt.export_csv(conn, agent_id, station)
    except pt.PointTableError as exc:
        raise HTTPException(404, str(exc)) from exc
    return Response(text, media_type="text/csv; charset=utf-8")
