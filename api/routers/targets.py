from __future__ import annotations

from fastapi import APIRouter

from api.schemas import SourceOut, TargetOut
from qilu.catalog import Target, load_catalog

router = APIRouter(prefix="/v1", tags=["targets"])


def target_out(t: Target) -> TargetOut:
    doc = load_catalog().documents[t.source.document]
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
        source=SourceOut(
            document=t.source.document, number=doc.number, title=doc.title, article=t.source.article
        ),
    )


@router.get("/targets", response_model=list[TargetOut], summary="The coverage target catalog")
def list_targets() -> list[TargetOut]:
    """Every target the platform checks, with the policy document and article it comes from."""
    return [target_out(t) for t in load_catalog().targets]
