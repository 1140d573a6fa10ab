"""``/v1/reported``: targets whose values are figures other bodies report, with each figure's
source kind, reporter, day and age (docs/reported.md); ``/v1/admin/reported/import``: the
audited import of those figures (admin scope), as ``qilu reported import`` does.

The reads follow the status page's access rule (``api.status_public``: open, else a key with
``coverage:read``), since the page shows them. Imports: every row is validated first, a bad row
applies nothing (422 naming each bad line), ``dry_run`` only compares; applying is one
transaction with its audit rows.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Annotated, Literal

import anyio.to_thread
from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api import judge, reported_view
from api.deps import PROBLEMS, Admin, Ctx, database
from api.routers.admin_registry import _whole_province, actor
from api.routers.status import StatusArea
from api.schemas import Problem, ReportedHistoryOut, ReportedOut
from qilu.inventory import InventoryError, detect_format
from qilu.reported import parse
from storage import reported as store

router = APIRouter(tags=["reported"], responses=PROBLEMS)


def _now() -> datetime:
    return datetime.now(UTC)


@router.get(
    "/v1/reported",
    response_model=ReportedOut,
    summary="Reported targets: the newest figure per area, its source and age, judged",
)
async def list_reported(ctx: Ctx, area: StatusArea) -> ReportedOut:
    """Every reported target the caller may see, each with the province's figure and the
    cities' (newest first), marked ``stale`` when older than the reporting interval."""

    def run() -> ReportedOut:
        with database(ctx) as conn:
            figures, first = store.all_figures(conn), store.earliest(conn)
        now = _now()
        return ReportedOut(
            as_of=now,
            targets=[
                reported_view.target_out(ctx.catalog, t, figures, first, now, area)
                for t in ctx.catalog.reported
                if reported_view.visible(area, t)
            ],
        )

    return await anyio.to_thread.run_sync(run)


@router.get(
    "/v1/reported/{target_id}",
    response_model=ReportedHistoryOut,
    summary="One reported target and every figure reported for it",
)
async def get_reported(
    ctx: Ctx,
    area: StatusArea,
    target_id: Annotated[str, Path(examples=["telecom-5g-stations-2024"])],
) -> ReportedHistoryOut:
    t = ctx.catalog.reported_target(target_id)
    if t is None or not reported_view.visible(area, t):
        raise HTTPException(404, f"unknown reported target {target_id!r}")

    def run() -> ReportedHistoryOut:
        with database(ctx) as conn:
            figures, first = store.history(conn, t.id), store.earliest(conn)
        now = _now()
        today = judge.today_cst(now)
        seen = [f for f in figures if area.cities is None or f.area in area.cities]
        return ReportedHistoryOut(
            target=reported_view.target_out(ctx.catalog, t, figures, first, now, area),
            figures=[reported_view.area_figure_out(f, t, today) for f in seen],
        )

    return await anyio.to_thread.run_sync(run)


class RowErrorOut(BaseModel):
    line: int
    reason: str


class ReportedImportOut(BaseModel):
    rows: int
    dry_run: bool
    applied: bool
    summary: dict[str, int] = Field(
        description="added, changed (corrections), unchanged, simulated_removed (the simulated"
        " figures of the imported targets, deleted: a real import ends their simulation)"
    )
    changes: list[str] = Field(description="the first corrections, 'key: before -> after'")
    errors: list[RowErrorOut] = Field(description="bad rows: FILE:LINE and the reason")
    error_count: int


class ReportedImportProblem(Problem):
    result: ReportedImportOut | None = None


@router.post(
    "/v1/admin/reported/import",
    tags=["admin"],
    response_model=ReportedImportOut,
    summary="Import reported figures from CSV or XLSX (the request body is the file)",
    responses={422: {"model": ReportedImportProblem, "description": "bad rows, with lines"}},
)
async def import_reported(
    request: Request,
    ctx: Ctx,
    who: Admin,
    dry_run: Annotated[bool, Query(description="only compare with the stored figures")] = False,
    fmt: Annotated[Literal["csv", "xlsx"] | None, Query(alias="format")] = None,
    encoding: Annotated[str | None, Query(description="CSV: default UTF-8, else GB18030")] = None,
    name: Annotated[str, Query(description="file name, for errors and the audit log")] = "upload",
) -> ReportedImportOut | JSONResponse:
    """A bad row applies nothing (422 listing ``name:line: reason``). Importing the same file
    again changes nothing; a new value for the same target, area and day is a correction."""
    _whole_province(who)
    data = await request.body()
    now = _now()
    try:
        rep = parse(
            data,
            ctx.catalog,
            judge.today_cst(now),
            fmt=fmt or detect_format(name, data),
            encoding=encoding,
        )
    except InventoryError as exc:
        raise HTTPException(422, f"{name}: {exc}") from exc
    out = ReportedImportOut(
        rows=rep.rows,
        dry_run=dry_run,
        applied=False,
        summary={},
        changes=[],
        errors=[
            RowErrorOut(line=e.line, reason=f"{name}:{e.line}: {e.reason}") for e in rep.errors
        ],
        error_count=rep.error_count,
    )
    if not rep.ok:
        body = ReportedImportProblem(
            error="invalid_figures",
            detail=f"{rep.error_count} bad row(s) of {rep.rows}: nothing imported",
            result=out,
        )
        return JSONResponse(body.model_dump(mode="json"), status_code=422)
    source = store.ImportSource(name, hashlib.sha256(data).hexdigest())

    def run() -> store.ImportResult:
        with database(ctx) as conn:
            return store.import_figures(conn, rep, actor=actor(who), source=source, dry_run=dry_run)

    result = await anyio.to_thread.run_sync(run)
    out.summary = result.summary()
    out.changes = [
        f"{new.target_id} {new.area} {new.day}: {old.value:g} -> {new.value:g}"
        for old, new in result.changed[:100]
    ]
    out.applied = not dry_run and not result.empty
    return out
