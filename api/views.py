"""Turning a snapshot into public answers for one caller's area (pure, no I/O)."""

from __future__ import annotations

from datetime import date

from pydantic import TypeAdapter

from api import judge
from api.auth import Principal
from api.schemas import (
    CityCoverageOut,
    CityOut,
    CoverageOut,
    JudgementOut,
    OperatorHealthOut,
    PipelineOut,
    SimulationOut,
    StatusOut,
    TargetNameOut,
)
from api.service import Answer, Snapshot
from qilu.catalog import Catalog, Target, TargetKind
from storage.coverage import CityFigure, TargetCoverage
from storage.queries_api import Area

PROVINCE = "370000"
_COVERAGE_LIST = TypeAdapter(list[CoverageOut])


def respond(answer: Answer, if_none_match: str | None) -> tuple[int, list[tuple[bytes, bytes]]]:
    """Status and headers of a snapshot answer: 304 when the caller already has it (its
    ``If-None-Match`` names the ETag), else 200 with the JSON body (see :mod:`api.fastpath`,
    which sends the same)."""
    headers = [(b"etag", answer.etag.encode()), (b"cache-control", b"no-cache")]
    if answer.matches(if_none_match):
        return 304, headers
    return 200, [
        (b"content-length", str(len(answer.body)).encode()),
        (b"content-type", b"application/json"),
        *headers,
    ]


def visible_target(p: Principal | Area, t: Target) -> bool:
    """A target whose assets span every sector is hidden from sector-limited callers."""
    area = p.area if isinstance(p, Principal) else p
    if area.sectors is None:
        return True
    return t.sector != "all" and t.sector in area.sectors


def judgement_out(j: judge.Judgement) -> JudgementOut:
    return JudgementOut(
        status=j.status.value,
        basis=j.basis.value,
        today=j.today,
        days_left=j.days_left,
        baseline_day=j.baseline_day,
        baseline_value=j.baseline_value,
        expected_now=j.expected_now,
        shortfall=j.shortfall,
        explanation=j.explanation,
    )


def no_data_out(due: date, today: date, why: str) -> JudgementOut:
    """The judgement of a target that is not judged here: no data, ``why`` says so."""
    return JudgementOut(
        status=judge.Status.NO_DATA.value,
        basis=judge.Basis.NO_DATA.value,
        today=today,
        days_left=(due - today).days,
        baseline_day=None,
        baseline_value=None,
        expected_now=None,
        shortfall=None,
        explanation=why,
    )


def coverage_out(
    snap: Snapshot, catalog: Catalog, tc: TargetCoverage, area: Area, city: str | None
) -> CoverageOut:
    t = tc.target
    names = {c.code: c for c in catalog.cities}
    visible = [c for c in tc.cities if area.cities is None or c.city_code in area.cities]
    if area.cities is None:
        top, codes = tc.province, [PROVINCE]
    else:
        top = CityFigure(
            "+".join(c.city_code for c in visible),
            sum(c.numerator for c in visible),
            sum(c.denominator for c in visible),
        )
        codes = [c.city_code for c in visible]
    value = top.value(t.kind)
    scale = judge.scale_for(t, snap.fractions)
    threshold = judge.effective_threshold(t, scale)
    if area.cities is None or t.kind is TargetKind.RATIO:
        base_key = codes[0] if len(codes) == 1 else None
        base = snap.baselines.get((t.id, base_key)) if base_key else None
        top_j = judgement_out(judge.judge(t, value, snap.as_of, base, scale))
    else:
        top_j = no_data_out(
            t.due,
            judge.today_cst(snap.as_of),
            "a count threshold is province-wide: not judged for part of it",
        )
    cities = []
    for c in visible:
        if city is not None and c.city_code != city:
            continue
        v = c.value(t.kind)
        cj = None
        if t.kind is TargetKind.RATIO:
            cj = judgement_out(
                judge.judge(t, v, snap.as_of, snap.baselines.get((t.id, c.city_code)))
            )
        cities.append(
            CityCoverageOut(
                city_code=c.city_code,
                name_en=names[c.city_code].name_en,
                name_zh=names[c.city_code].name_zh,
                numerator=c.numerator,
                denominator=c.denominator,
                value=v,
                judgement=cj,
            )
        )
    return CoverageOut(
        target_id=t.id,
        sector=t.sector,
        kind=t.kind.value,
        comparator=t.comparator,
        threshold=t.threshold,
        threshold_effective=threshold,
        scaled=scale is not None,
        scale=scale,
        due=t.due,
        as_of=tc.as_of,
        area=codes,
        value=value,
        numerator=top.numerator,
        denominator=top.denominator,
        met=value is not None and t.met(value, threshold),
        judgement=top_j,
        cities=cities,
    )


def coverage_list(
    snap: Snapshot, catalog: Catalog, area: Area, target: str | None, city: str | None
) -> list[CoverageOut]:
    return [
        coverage_out(snap, catalog, tc, area, city)
        for tc in snap.coverage
        if visible_target(area, tc.target) and (target is None or tc.target.id == target)
    ]


def coverage_json(
    snap: Snapshot, catalog: Catalog, area: Area, target: str | None, city: str | None
) -> bytes:
    return _COVERAGE_LIST.dump_json(coverage_list(snap, catalog, area, target, city))


def coverage_answer(
    snap: Snapshot, catalog: Catalog, area: Area, target: str | None, city: str | None
) -> Answer:
    """``GET /v1/coverage`` as JSON bytes, built once per snapshot and area."""
    return snap.answer(
        ("coverage", area, target, city),
        lambda: coverage_json(snap, catalog, area, target, city),
    )


def one_answer(
    snap: Snapshot, catalog: Catalog, area: Area, target_id: str, city: str | None
) -> Answer:
    """``GET /v1/coverage/{target_id}`` as JSON bytes (the target must exist)."""

    def build() -> bytes:
        tc = next(tc for tc in snap.coverage if tc.target.id == target_id)
        return coverage_out(snap, catalog, tc, area, city).model_dump_json().encode()

    return snap.answer(("one", area, target_id, city), build)


def status_answer(snap: Snapshot, catalog: Catalog, area: Area, refresh_s: float) -> Answer:
    return snap.answer(
        ("status", area),
        lambda: status_out(snap, catalog, area, refresh_s).model_dump_json().encode(),
    )


def warm(snap: Snapshot, catalog: Catalog, refresh_s: float) -> None:
    """Build the whole-province answers before the snapshot is served, so that requests
    (with no area limit) only look them up.

    Each target's figures and judgements are computed once and every answer is cut from them
    (a city filter only narrows ``cities``), so a refresh holds the interpreter, which the
    event loop needs too, for as short a time as possible."""
    whole = Area()
    cov = coverage_list(snap, catalog, whole, None, None)
    memo = snap.memo
    memo[("coverage", whole, None, None)] = Answer.of(_COVERAGE_LIST.dump_json(cov))
    for code in catalog.city_codes:
        narrowed = [
            c.model_copy(update={"cities": [x for x in c.cities if x.city_code == code]})
            for c in cov
        ]
        memo[("coverage", whole, None, code)] = Answer.of(_COVERAGE_LIST.dump_json(narrowed))
    for c in cov:
        one = c.model_dump_json().encode()
        memo[("one", whole, c.target_id, None)] = Answer.of(one)
        memo[("coverage", whole, c.target_id, None)] = Answer.of(b"[" + one + b"]")
    memo[("status", whole)] = Answer.of(
        status_out(snap, catalog, whole, refresh_s, cov).model_dump_json().encode()
    )


_SECTOR_WORDS = {
    "charging": "charging stations",
    "substation": "substations",
    "ranch": "ranches",
    "all": "devices overall",
}


def simulation_out(fractions: dict[str, float]) -> SimulationOut | None:
    """What the status page's banner says about a simulated registry (None for a real one,
    or a simulation of the whole province)."""
    if not fractions or all(share == 1.0 for share in fractions.values()):
        return None
    parts = ", ".join(
        f"{share * 100:.1f} % of its {_SECTOR_WORDS.get(sector, sector)}"
        for sector, share in sorted(fractions.items())
    )
    return SimulationOut(
        shares=dict(sorted(fractions.items())),
        note=f"The registry is a simulation of part of Shandong ({parts}). Count thresholds "
        "are compared scaled by the same share and marked as scaled; ratio thresholds apply "
        "as written.",
    )


def status_out(
    snap: Snapshot,
    catalog: Catalog,
    area: Area,
    refresh_s: float,
    cov: list[CoverageOut] | None = None,
) -> StatusOut:
    """``cov``: the area's coverage list if already built (the same for every answer)."""
    h = snap.health
    if cov is None:
        cov = coverage_list(snap, catalog, area, None, None)
    shown = {c.target_id for c in cov}
    return StatusOut(
        version=snap.version,
        as_of=snap.as_of,
        refresh_s=refresh_s,
        cities=[
            CityOut(code=c.code, name_en=c.name_en, name_zh=c.name_zh, lat=c.lat, lon=c.lon)
            for c in catalog.cities
            if area.cities is None or c.code in area.cities
        ],
        targets=[
            TargetNameOut(id=t.id, name_en=t.name_en, name_zh=t.name_zh)
            for t in catalog.targets
            if t.id in shown
        ],
        coverage=cov,
        simulation=simulation_out(snap.fractions),
        operators=[
            OperatorHealthOut(
                operator_id=o.operator_id,
                name=o.name,
                connectors=o.connectors,
                healthy=o.healthy,
                last_push=o.last_push,
                last_pull=o.last_pull,
                token_expires_at=o.token_expires_at,
                failures=o.failures,
                last_failure=o.last_failure,
                last_failure_reason=o.last_failure_reason,
            )
            for o in snap.operators
        ],
        pipeline=PipelineOut(
            newest_reading=h.newest_reading,
            freshness_s=((h.devices_checked_at or snap.as_of) - h.newest_reading).total_seconds()
            if h.newest_reading
            else None,
            devices_checked_at=h.devices_checked_at or snap.as_of,
            devices=h.devices,
            online=h.online,
            never_seen=h.never_seen,
            lag_records=h.lag_records,
            lag_checked_at=h.lag_checked_at,
            lag_note=h.lag_note,
            snapshot_computed_in_s=snap.computed_in_s,
            history_note=snap.history_note,
        ),
    )
