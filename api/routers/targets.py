"""``/v1/targets``: the coverage target catalog with the policy sources."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Path, Request

from api.deps import PROBLEMS, CoverageReader, context
from api.schemas import BaselineOut, SourceOut, TargetOut
from api.views import visible_target
from qilu.catalog import Catalog, Target

router = APIRouter(prefix="/v1", tags=["targets"], responses=PROBLEMS)


def target_out(catalog: Catalog, t: Target) -> TargetOut:
    doc = catalog.documents[t.source.document]
    return TargetOut(
        id=t.id,
        sector=t.sector,
        name_en=t.name_en,
        name_zh=t.name_zh,
        kind=t.kind.value,
        comparator=t.comparator,
        threshold=t.threshold,
        due=t.due,
        binding=t.binding,
        fidelity=t.fidelity,
        note=t.note,
        baseline=BaselineOut(
            day=t.baseline.day, value=t.baseline.value, source=catalog.cite(t.baseline.source)
        )
        if t.baseline is not None
        else None,
        source=SourceOut(
            document=t.source.document, number=doc.number, title=doc.title, article=t.source.article
        ),
        reported=[r.id for r in catalog.reported_for(t.id)],
    )


@router.get("/targets", response_model=list[TargetOut], summary="The coverage target catalog")
async def list_targets(request: Request, who: CoverageReader) -> list[TargetOut]:
    """Every target the platform checks, with the policy document and article it comes from.
    Keys limited to some sectors see only those sectors' targets."""
    ctx = context(request)
    return [target_out(ctx.catalog, t) for t in ctx.catalog.targets if visible_target(who, t)]


@router.get("/targets/{target_id}", response_model=TargetOut, summary="One target")
async def get_target(
    request: Request,
    who: CoverageReader,
    target_id: str = Path(examples=["charging-public-piles-2024"]),
) -> TargetOut:
    ctx = context(request)
    t = ctx.catalog.target(target_id)
    if t is None or not visible_target(who, t):
        raise HTTPException(404, f"unknown target {target_id!r}")
    return target_out(ctx.catalog, t)
