"""``/v1/names``: the platform's vocabulary in Chinese and English: sectors, cities, device
kinds and targets, for clients that label charts and tables in either language."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from api.deps import PROBLEMS, CoverageReader, context
from api.views import visible_target
from qilu.catalog import SECTOR_NAMES
from qilu.devices import DEVICE_KINDS

router = APIRouter(prefix="/v1", tags=["targets"], responses=PROBLEMS)


class NameOut(BaseModel):
    key: str = Field(examples=["charging"])
    name_en: str = Field(examples=["Charging facilities"])
    name_zh: str = Field(examples=["充电设施"])
    sector: str | None = Field(default=None, description="device kinds and targets: the sector")


class NamesOut(BaseModel):
    sectors: list[NameOut]
    cities: list[NameOut]
    device_kinds: list[NameOut]
    targets: list[NameOut]


@router.get("/names", response_model=NamesOut, summary="Names in Chinese and English")
async def names(request: Request, who: CoverageReader) -> NamesOut:
    """Everything the API refers to by key, with both names. Keys limited to some sectors see
    those sectors' kinds and targets."""
    ctx = context(request)
    return NamesOut(
        sectors=[
            NameOut(key=k, name_en=en, name_zh=zh)
            for k, (en, zh) in SECTOR_NAMES.items()
            if k == "all" or who.sees_sector(k)
        ],
        cities=[
            NameOut(key=c.code, name_en=c.name_en, name_zh=c.name_zh)
            for c in ctx.catalog.cities
            if who.sees_city(c.code)
        ],
        device_kinds=[
            NameOut(key=k.key, name_en=k.name_en, name_zh=k.name_zh, sector=k.sector.value)
            for k in DEVICE_KINDS
            if who.sees_sector(k.sector.value)
        ],
        targets=[
            NameOut(key=t.id, name_en=t.name_en, name_zh=t.name_zh, sector=t.sector)
            for t in ctx.catalog.targets
            if visible_target(who, t)
        ],
    )
