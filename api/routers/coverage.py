from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from api.deps import CoverageDep
from api.schemas import CityCoverageOut, CoverageOut, Problem

router = APIRouter(prefix="/v1", tags=["coverage"])


@router.get(
    "/coverage",
    response_model=list[CoverageOut],
    responses={404: {"model": Problem}},
    summary="Current coverage per target, province-wide and per city",
)
def get_coverage(
    svc: CoverageDep,
    target: Annotated[str | None, Query(description="only this target id")] = None,
    city: Annotated[
        str | None, Query(pattern=r"^\d{6}$", description="only this city code, e.g. 370200")
    ] = None,
) -> list[CoverageOut]:
    """Connected = a valid reading within the device kind's expected reporting interval."""
    cat = svc.catalog
    if target is not None and cat.target(target) is None:
        raise HTTPException(404, f"unknown target {target!r}")
    if city is not None and city not in cat.city_codes:
        raise HTTPException(404, f"unknown city {city!r}: not one of Shandong's 16 city codes")
    names = {c.code: c for c in cat.cities}
    out = []
    for tc in svc.current():
        if target is not None and tc.target.id != target:
            continue
        out.append(
            CoverageOut(
                target_id=tc.target.id,
                kind=tc.target.kind.value,
                comparator=tc.target.comparator,
                threshold=tc.target.threshold,
                due=tc.target.due,
                as_of=tc.as_of,
                value=tc.value,
                numerator=tc.province.numerator,
                denominator=tc.province.denominator,
                met=tc.met,
                cities=[
                    CityCoverageOut(
                        city_code=c.city_code,
                        name_en=names[c.city_code].name_en,
                        name_zh=names[c.city_code].name_zh,
                        numerator=c.numerator,
                        denominator=c.denominator,
                        value=c.value(tc.target.kind),
                    )
                    for c in tc.cities
                    if city is None or c.city_code == city
                ],
            )
        )
    return out
