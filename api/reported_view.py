"""Reported targets as public answers (pure, no I/O): the newest figure per area with its
source kind, provenance and age, judged by the same rules as measured targets (api/judge.py).

The province's figure is its own when reported, else a count reported per city is summed
(qilu/reported.py). Cities are judged for ratio targets only (a count threshold is
province-wide), as for measured targets. A stale figure (older than the reporting interval) is
judged on its value but always says so: ``freshness = "stale"`` and the explanation starts
with it; nothing stale is ever labelled current.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime

from api import judge
from api.schemas import (
    BaselineOut,
    JudgementOut,
    ReportedAreaFigureOut,
    ReportedAreaOut,
    ReportedFigureOut,
    ReportedTargetOut,
    SourceOut,
)
from api.views import judgement_out
from qilu.catalog import Catalog, ReportedTarget, TargetKind
from qilu.reported import PROVINCE, Figure, age_days, is_stale, province_figure
from storage.queries_api import Area

Baselines = Mapping[tuple[str, str], tuple[date, float]]


def visible(area: Area, t: ReportedTarget) -> bool:
    """Sector-limited callers see the reported targets of their sectors only."""
    return area.sectors is None or t.sector in area.sectors


def figure_out(fig: Figure, t: ReportedTarget, today: date) -> ReportedFigureOut:
    return ReportedFigureOut(
        value=fig.value,
        as_of=fig.day,
        age_days=age_days(fig, today),
        stale=is_stale(t, fig, today),
        reporter=fig.reporter,
        reported_on=fig.reported_on,
        source=fig.source,
        note=fig.note,
        simulated=fig.simulated,
    )


def area_figure_out(fig: Figure, t: ReportedTarget, today: date) -> ReportedAreaFigureOut:
    return ReportedAreaFigureOut(area=fig.area, **figure_out(fig, t, today).model_dump())


def _judged(
    t: ReportedTarget,
    fig: ReportedFigureOut,
    now: datetime,
    baseline: tuple[date, float] | None,
) -> JudgementOut:
    j = judgement_out(judge.judge(t, fig.value, now, baseline))
    if fig.stale:
        j.explanation = (
            f"stale: the newest figure is for {fig.as_of}, {fig.age_days} days old (reported "
            f"every {t.interval_days} days); {j.explanation}"
        )
    return j


def _no_data(t: ReportedTarget, today: date, why: str) -> JudgementOut:
    return JudgementOut(
        status=judge.Status.NO_DATA.value,
        basis=judge.Basis.NO_DATA.value,
        today=today,
        days_left=(t.due - today).days,
        baseline_day=None,
        baseline_value=None,
        expected_now=None,
        shortfall=None,
        explanation=why,
    )


def _baseline(
    t: ReportedTarget, area: str, baselines: Baselines, today: date
) -> tuple[date, float] | None:
    if area == PROVINCE and t.baseline is not None:
        return (t.baseline.day, t.baseline.value)
    first = baselines.get((t.id, area))
    if first is None and area == PROVINCE and t.per_city and t.kind is TargetKind.COUNT:
        firsts = [v for (tid, a), v in baselines.items() if tid == t.id and a != PROVINCE]
        if firsts:
            first = (max(d for d, _ in firsts), sum(v for _, v in firsts))
    return first if first is not None and first[0] < today else None


def target_out(
    catalog: Catalog,
    t: ReportedTarget,
    latest: Sequence[Figure],
    baselines: Baselines,
    now: datetime,
    area: Area,
) -> ReportedTargetOut:
    """One reported target with its newest figures (``latest``: the newest figure of each
    area of this target) for a caller who may see ``area``."""
    today = judge.today_cst(now)
    by_area = {f.area: f for f in latest if f.target_id == t.id}
    names = {c.code: (c.name_en, c.name_zh) for c in catalog.cities}
    cities: list[ReportedAreaOut] = []
    for code, (en, zh) in names.items():
        if area.cities is not None and code not in area.cities:
            continue
        fig = by_area.get(code)
        if fig is None:
            if t.per_city:
                cities.append(
                    ReportedAreaOut(
                        area=code,
                        name_en=en,
                        name_zh=zh,
                        value=None,
                        basis="no_data",
                        freshness="no_data",
                        figure=None,
                        judgement=None,
                    )
                )
            continue
        out = figure_out(fig, t, today)
        cities.append(
            ReportedAreaOut(
                area=code,
                name_en=en,
                name_zh=zh,
                value=fig.value,
                basis="reported",
                freshness="stale" if out.stale else "current",
                figure=out,
                judgement=_judged(t, out, now, _baseline(t, code, baselines, today))
                if t.kind is TargetKind.RATIO
                else None,
            )
        )
    province = _province(t, by_area, baselines, now, area)
    doc = catalog.documents[t.source.document]
    return ReportedTargetOut(
        id=t.id,
        sector=t.sector,
        name_en=t.name_en,
        name_zh=t.name_zh,
        kind=t.kind.value,
        comparator=t.comparator,
        threshold=t.threshold,
        due=t.due,
        binding=t.binding,
        note=t.note,
        unit_en=t.unit_en,
        unit_zh=t.unit_zh,
        reporter=t.reporter,
        interval_days=t.interval_days,
        per_city=t.per_city,
        measured=t.measured,
        source=SourceOut(
            document=t.source.document, number=doc.number, title=doc.title, article=t.source.article
        ),
        baseline=BaselineOut(
            day=t.baseline.day, value=t.baseline.value, source=catalog.cite(t.baseline.source)
        )
        if t.baseline is not None
        else None,
        province=province,
        cities=cities,
    )


def _province(
    t: ReportedTarget,
    by_area: Mapping[str, Figure],
    baselines: Baselines,
    now: datetime,
    area: Area,
) -> ReportedAreaOut:
    today = judge.today_cst(now)

    def empty(why: str) -> ReportedAreaOut:
        return ReportedAreaOut(
            area=PROVINCE,
            name_en="Shandong",
            name_zh="山东省",
            value=None,
            basis="no_data",
            freshness="no_data",
            figure=None,
            judgement=_no_data(t, today, why),
        )

    if area.cities is not None:
        return empty("the province's figure is not shown to a key limited to some cities")
    pf = province_figure(t, by_area)
    if pf is None:
        return empty("no figure reported yet")
    # summed: the provenance of the oldest city figure (which decides the age)
    oldest = min(pf.figures, key=lambda f: f.day)
    shown = figure_out(oldest, t, today)
    shown.value = pf.value
    return ReportedAreaOut(
        area=PROVINCE,
        name_en="Shandong",
        name_zh="山东省",
        value=pf.value,
        basis=pf.basis,
        freshness="stale" if shown.stale else "current",
        figure=shown,
        judgement=_judged(t, shown, now, _baseline(t, PROVINCE, baselines, today)),
    )
