"""``/v1/admin/registry``: the registry's administration (admin scope), the same operations as
``qilu registry`` (docs/registry.md). Every change is audited as ``api:<key id>`` in the
transaction that makes it. Admin changes need a key without city or sector limits.

Inventory uploads are limited by ``api.max_request_bytes`` (64 KiB by default): a province-size
inventory goes through the CLI, or the operator raises the limit.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

import anyio.to_thread
from fastapi import APIRouter, Body, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.auth import Principal
from api.deps import PROBLEMS, Admin, Ctx, database
from api.schemas import Problem
from qilu.contract import Sector
from qilu.devices import KINDS
from qilu.inventory import (
    Diff,
    InventoryError,
    city_lookup,
    detect_format,
    export_rows,
    header,
    parse,
    to_csv,
)
from qilu.registry import Device, Site
from storage import registry_admin as ra
from storage.coverage import province_day

router = APIRouter(
    prefix="/v1/admin/registry",
    tags=["admin"],
    responses={
        **PROBLEMS,
        409: {
            "model": Problem,
            "description": "Refused: exists already, decommissioned, or an effective date "
            "before the last change",
        },
    },
)
SectorName = Literal["charging", "substation", "ranch"]
Effective = Annotated[
    date | None,
    Field(description="the day the change takes effect; default today (China Standard Time)"),
]


def actor(who: Principal) -> str:
    """The audit actor of an API caller: ``api:<key id>`` (``api:jwt:<sub>`` for a token)."""
    kind, _, name = who.subject.partition(":")
    return f"api:{name}" if kind == "key" else f"api:{who.subject}"


def _whole_province(who: Principal) -> None:
    if not who.whole_province or who.area.sectors is not None:
        raise HTTPException(403, "registry changes need an admin key without city/sector limits")


def _effective(d: date | None) -> date:
    return d if d is not None else province_day(datetime.now(UTC))


def _refused(exc: ra.RegistryChangeError) -> HTTPException:
    return HTTPException(exc.status, str(exc))


# -- schemas ----------------------------------------------------------------------------------
class SiteIn(BaseModel):
    site_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$", examples=["CS370200-0001"])
    sector: SectorName
    city: str = Field(description="code or Chinese/English name", examples=["370200", "青岛"])
    name: str = Field(min_length=1, examples=["青岛市南区公共充电站1号"])
    public: bool = False
    networked: bool = False
    voltage_kv: int = Field(default=0, ge=0)
    gis: bool = False
    one_key_control: bool = False
    smart: bool = False
    agri_base: bool = False
    effective: Effective = None


class DeviceIn(BaseModel):
    device_id: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$", examples=["CS370200-0001-01"]
    )
    site_id: str
    kind: str = Field(examples=["charging_pile"])
    effective: Effective = None


class MoveSiteIn(BaseModel):
    city: str = Field(examples=["370100", "济南"])
    effective: Effective = None


class MoveDeviceIn(BaseModel):
    site_id: str
    effective: Effective = None


class StatusIn(BaseModel):
    status: Literal["active", "maintenance", "decommissioned"] = Field(
        description="maintenance: not counted; active: back in service; decommissioned: final"
    )
    effective: Effective = None


class VersionOut(BaseModel):
    valid_from: date | None = Field(description="null: since the registry was first loaded")
    valid_to: date | None = Field(description="exclusive; null: still valid")
    state: dict[str, Any]


class EntityOut(BaseModel):
    state: dict[str, Any]
    devices: list[dict[str, Any]] | None = None
    history: list[VersionOut]


class ChangeOut(BaseModel):
    changed: list[dict[str, Any]] = Field(description="the audit 'after' of every entity changed")


class RowErrorOut(BaseModel):
    line: int
    reason: str


class ImportOut(BaseModel):
    sector: str
    rows: int
    dry_run: bool
    applied: bool
    summary: dict[str, int]
    changes: list[str] = Field(description="the first changes, 'field: before -> after'")
    refused: list[str]
    errors: list[RowErrorOut]
    error_count: int
    simulation_ended: str | None = Field(
        default=None,
        description="set when the registry was a simulated one (`qilu run`): the import ends "
        "it (thresholds no longer scaled, modelled history deleted; audited as "
        "registry.simulation_ended), or would end it in a dry run",
    )


class ImportProblem(Problem):
    """A 422 of the import: ``result`` lists the bad rows (with their lines) or the refused
    changes when the file could be read; other 422s (an unreadable file, a bad parameter)
    carry only ``error`` and ``detail``."""

    result: ImportOut | None = None


def _invalid(out: ImportOut, detail: str) -> JSONResponse:
    body = ImportProblem(error="invalid_inventory", detail=detail, result=out)
    return JSONResponse(body.model_dump(mode="json"), status_code=422)


# -- endpoints --------------------------------------------------------------------------------
def _changes(d: Diff, limit: int = 100) -> list[str]:
    out = []
    for _, s, change in d.changed_sites[:limit]:
        out.append(
            f"site {s.site_id}: "
            + "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in change.items())
        )
    for _, dev, change in d.changed_devices[: max(0, limit - len(out))]:
        out.append(
            f"device {dev.device_id}: "
            + "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in change.items())
        )
    return out


@router.post(
    "/import",
    response_model=ImportOut,
    summary="Import a CSV or XLSX inventory (the request body is the file)",
    responses={
        422: {"model": ImportProblem, "description": "bad rows (with lines), refused changes"}
    },
)
async def import_inventory(
    request: Request,
    ctx: Ctx,
    who: Admin,
    sector: SectorName,
    dry_run: Annotated[bool, Query(description="only compute the diff")] = False,
    fmt: Annotated[Literal["csv", "xlsx"] | None, Query(alias="format")] = None,
    encoding: Annotated[str | None, Query(description="CSV: default UTF-8, else GB18030")] = None,
    effective: Annotated[date | None, Query(description="default today (CST)")] = None,
    name: Annotated[str, Query(description="file name, for the audit log")] = "upload",
) -> ImportOut | JSONResponse:
    """Validates every row; a bad row or a refused change applies nothing (422 with the
    list). Importing the same file again changes nothing and records nothing."""
    _whole_province(who)
    data = await request.body()
    kind = fmt or detect_format(name, data)
    try:
        inv = parse(data, Sector(sector), ctx.catalog, fmt=kind, encoding=encoding)
    except InventoryError as exc:
        raise HTTPException(422, str(exc)) from exc
    out = ImportOut(
        sector=sector,
        rows=inv.rows,
        dry_run=dry_run,
        applied=False,
        summary={},
        changes=[],
        refused=[],
        errors=[RowErrorOut(line=e.line, reason=e.reason) for e in inv.errors],
        error_count=inv.error_count,
    )
    if not inv.ok:
        return _invalid(out, f"{inv.error_count} bad row(s) of {inv.rows}: nothing imported")
    source = ra.ImportSource(name, hashlib.sha256(data).hexdigest())

    def run() -> Diff:
        with database(ctx) as conn:
            return ra.import_inventory(
                conn,
                inv,
                actor=actor(who),
                effective=_effective(effective),
                source=source,
                dry_run=dry_run,
            )

    d = await anyio.to_thread.run_sync(run)
    out.summary = d.summary()
    out.changes = _changes(d)
    out.refused = [e.reason for e in d.errors]
    out.applied = not (dry_run or d.errors or d.empty)
    if d.ends_simulation is not None:
        out.simulation_ended = ra.simulation_ended_text(d.ends_simulation, dry_run=dry_run)
    if d.errors:
        return _invalid(out, f"{len(d.errors)} change(s) refused: nothing imported")
    return out


@router.get(
    "/export",
    summary="A sector's sites and devices as CSV in the import column set",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
)
def export_inventory(
    ctx: Ctx,
    who: Admin,
    sector: SectorName,
    lang: Literal["en", "zh"] = "en",
) -> Response:
    del who
    with database(ctx) as conn:
        sites, devices = ra.export(conn, Sector(sector))
    rows = [header(Sector(sector), lang), *export_rows(Sector(sector), sites, devices)]
    return Response(
        to_csv(rows).encode("utf-8"),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{sector}_inventory.csv"'},
    )


def _city(ctx: Ctx, text: str) -> str:
    code = city_lookup(ctx.catalog).get(text.lower())
    if code is None:
        raise HTTPException(422, f"unknown city {text!r}")
    return code


@router.post("/sites", response_model=ChangeOut, status_code=201, summary="Add a site")
def add_site(ctx: Ctx, who: Admin, body: SiteIn) -> ChangeOut:
    _whole_province(who)
    site = Site(
        body.site_id,
        Sector(body.sector),
        _city(ctx, body.city),
        body.name,
        public=body.public,
        networked=body.networked,
        voltage_kv=body.voltage_kv,
        gis=body.gis,
        one_key_control=body.one_key_control,
        smart=body.smart,
        agri_base=body.agri_base,
    )
    try:
        with database(ctx) as conn:
            after = ra.add_site(conn, site, actor=actor(who), effective=_effective(body.effective))
    except ra.RegistryChangeError as exc:
        raise _refused(exc) from exc
    return ChangeOut(changed=[after])


@router.post("/devices", response_model=ChangeOut, status_code=201, summary="Add a device")
def add_device(ctx: Ctx, who: Admin, body: DeviceIn) -> ChangeOut:
    _whole_province(who)
    if body.kind not in KINDS:
        raise HTTPException(422, f"unknown device kind {body.kind!r} (one of {sorted(KINDS)})")
    dev = Device(body.device_id, body.site_id, body.kind)
    try:
        with database(ctx) as conn:
            after = ra.add_device(conn, dev, actor=actor(who), effective=_effective(body.effective))
    except ra.RegistryChangeError as exc:
        raise _refused(exc) from exc
    return ChangeOut(changed=[after])


@router.post("/sites/{site_id}/move", response_model=ChangeOut, summary="Move a site to a city")
def move_site(ctx: Ctx, who: Admin, body: MoveSiteIn, site_id: Annotated[str, Path()]) -> ChangeOut:
    _whole_province(who)
    try:
        with database(ctx) as conn:
            after = ra.move_site(
                conn, site_id, _city(ctx, body.city), actor=actor(who),
                effective=_effective(body.effective),
            )  # fmt: skip
    except ra.RegistryChangeError as exc:
        raise _refused(exc) from exc
    return ChangeOut(changed=[after])


@router.post(
    "/devices/{device_id}/move", response_model=ChangeOut, summary="Move a device to a site"
)
def move_device(
    ctx: Ctx, who: Admin, body: MoveDeviceIn, device_id: Annotated[str, Path()]
) -> ChangeOut:
    _whole_province(who)
    try:
        with database(ctx) as conn:
            after = ra.move_device(
                conn, device_id, body.site_id, actor=actor(who),
                effective=_effective(body.effective),
            )  # fmt: skip
    except ra.RegistryChangeError as exc:
        raise _refused(exc) from exc
    return ChangeOut(changed=[after])


@router.post(
    "/{entity}s/{entity_id}/status",
    response_model=ChangeOut,
    summary="Maintenance, back in service, or decommissioning (a site with its devices)",
)
def set_status(
    ctx: Ctx,
    who: Admin,
    entity: Literal["site", "device"],
    entity_id: str,
    body: Annotated[StatusIn, Body()],
) -> ChangeOut:
    _whole_province(who)
    try:
        with database(ctx) as conn:
            changed = ra.set_status(
                conn, entity, entity_id, body.status, actor=actor(who),
                effective=_effective(body.effective),
            )  # fmt: skip
    except ra.RegistryChangeError as exc:
        raise _refused(exc) from exc
    return ChangeOut(changed=changed)


def _versions(versions: list[ra.Version]) -> list[VersionOut]:
    return [
        VersionOut(
            valid_from=None if v.valid_from == ra.SINCE_EVER else v.valid_from,
            valid_to=v.valid_to,
            state=v.state,
        )
        for v in versions
    ]


@router.get("/sites/{site_id}", response_model=EntityOut, summary="A site, devices, history")
def show_site(ctx: Ctx, who: Admin, site_id: str) -> EntityOut:
    del who
    try:
        with database(ctx) as conn:
            site, status = ra.get_site(conn, site_id)
            devices = ra.device_rows(ra.site_devices(conn, site_id))
            hist = ra.history(conn, "site", site_id)
    except ra.RegistryChangeError as exc:
        raise _refused(exc) from exc
    return EntityOut(state=ra.site_state(site, status), devices=devices, history=_versions(hist))


@router.get("/devices/{device_id}", response_model=EntityOut, summary="A device and its history")
def show_device(ctx: Ctx, who: Admin, device_id: str) -> EntityOut:
    del who
    try:
        with database(ctx) as conn:
            dev, status = ra.get_device(conn, device_id)
            hist = ra.history(conn, "device", device_id)
    except ra.RegistryChangeError as exc:
        raise _refused(exc) from exc
    return EntityOut(state=ra.device_state(dev, status), history=_versions(hist))
