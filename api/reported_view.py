"""Reported targets as public answers (pure, no I/O): the newest figure per area with its
source kind, provenance and age, judged by the same rules as measured targets (api/judge.py).

The province's figure is its own when reported, else a count reported per city is summed
(qilu/reported.py). Cities are judged for ratio targets only (a count threshold is
province-wide), as for measured targets. A stale figure (older than the reporting interval) is
judged on its value but always says so: ``freshness = "stale"`` and the explanation starts
with it; nothing stale is ever labelled current.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, timedelta

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
from api.views import judgement_out, no_data_out
from qilu.catalog import Catalog, ReportedTarget, TargetKind
from qilu.reported import (
    PROVINCE,
    Figure,
    ProvinceFigure,
    age_days,
    is_stale,
    joined,
    newest,
    province_figure,
)
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


def _at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 12, tzinfo=judge.CST)


def _judged(
    t: ReportedTarget,
    fig: ReportedFigureOut,
    at_due: tuple[date, float] | None,
    baseline: Callable[[date], tuple[date, float] | None],
    now: datetime,
) -> JudgementOut:
    """A figure judged as of the day it is for (the plan's path that day, not today's), so a
    figure on the path stays on track as it ages. Once the due date has passed, the newest
    figure at or before the due date (``at_due``: its day and value) decides met or behind: a
    later figure cannot undo a miss. The explanation says which figure was judged."""
    today = judge.today_cst(now)
    if today > t.due and at_due is not None:
        day, value = at_due
        j = judgement_out(judge.judge(t, value, _at(t.due + timedelta(days=1)), None))
        j.today, j.days_left = day, (t.due - day).days
        j.explanation = f"judged by the figure for {day}, the newest at or before the due date: "
        j.explanation += judge_text(t, value, j.status == judge.Status.MET.value)
        if fig.as_of != day:
            later = judge_fmt(t, fig.value)
            j.explanation += f"; the newest figure, {later} for {fig.as_of}, came after it"
    else:
        j = judgement_out(judge.judge(t, fig.value, _at(fig.as_of), baseline(fig.as_of)))
        how = "no figure at or before the due date; " if today > t.due and fig.as_of > t.due else ""
        j.explanation = f"{how}as of the figure's day {fig.as_of}: " + j.explanation.replace(
            " today", f" on {fig.as_of}"
        )
    if fig.stale:
        j.explanation = (
            f"stale: the newest figure is for {fig.as_of}, {fig.age_days} days old (reported "
            f"every {t.interval_days} days); {j.explanation}"
        )
    return j


def judge_fmt(t: ReportedTarget, value: float) -> str:
    return f"{value:.1%}" if t.kind is TargetKind.RATIO else f"{value:,.0f}"


def judge_text(t: ReportedTarget, value: float, met: bool) -> str:
    goal = f"{t.comparator} {judge.fmt_threshold(t.threshold, t.kind)} by {t.due}"
    if met:
        return f"{judge_fmt(t, value)} satisfies {goal}: met"
    return f"{judge_fmt(t, value)} does not satisfy {goal}: missed"


def _baseline(
    t: ReportedTarget, area: str, baselines: Baselines, day: date
) -> tuple[date, float] | None:
    """The judgement's start for a figure of ``area`` for ``day``: the document's baseline
    (the province), else the area's first figure when it is older than ``day``."""
    if area == PROVINCE and t.baseline is not None:
        return (t.baseline.day, t.baseline.value)
    first = baselines.get((t.id, area))
    if first is None and area == PROVINCE and t.per_city and t.kind is TargetKind.COUNT:
        firsts = [v for (tid, a), v in baselines.items() if tid == t.id and a != PROVINCE]
        if firsts:
            first = (max(d for d, _ in firsts), sum(v for _, v in firsts))
    return first if first is not None and first[0] < day else None


def target_out(
    catalog: Catalog,
    t: ReportedTarget,
    figures: Sequence[Figure],
    baselines: Baselines,
    now: datetime,
    area: Area,
) -> ReportedTargetOut:
    """One reported target with its newest figures for a caller who may see ``area``
    (``figures``: the stored figures, every day; other targets' are ignored)."""
    today = judge.today_cst(now)
    mine = [f for f in figures if f.target_id == t.id]
    by_area = newest(mine)
    at_due = newest(f for f in mine if f.day <= t.due)
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
                judgement=_judged(
                    t,
                    out,
                    (at_due[code].day, at_due[code].value) if code in at_due else None,
                    functools.partial(_baseline, t, code, baselines),
                    now,
                )
                if t.kind is TargetKind.RATIO
                else None,
            )
        )
    province = _province(t, mine, [c.code for c in catalog.cities], baselines, now, area)
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


def province_figure_out(pf: ProvinceFigure, t: ReportedTarget, today: date) -> ReportedFigureOut:
    """The province's figure with its provenance: a sum's reporters and sources are those of
    all its parts (one day), simulated when any part is."""
    age = (today - pf.day).days
    return ReportedFigureOut(
        value=pf.value,
        as_of=pf.day,
        age_days=age,
        stale=age > t.interval_days,
        reporter=pf.reporter,
        reported_on=max(f.reported_on for f in pf.figures),
        source=pf.source,
        note=joined(f.note for f in pf.figures if f.note),
        simulated=pf.simulated,
    )


def _province(
    t: ReportedTarget,
    figures: Sequence[Figure],
    cities: Sequence[str],
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
            judgement=no_data_out(t.due, today, why),
        )

    if area.cities is not None:
        return empty("the province's figure is not shown to a key limited to some cities")
    pf = province_figure(t, figures, cities)
    if isinstance(pf, str):
        return empty(pf)
    due = province_figure(t, [f for f in figures if f.day <= t.due], cities)
    shown = province_figure_out(pf, t, today)
    return ReportedAreaOut(
        area=PROVINCE,
        name_en="Shandong",
        name_zh="山东省",
        value=pf.value,
        basis=pf.basis,
        freshness="stale" if shown.stale else "current",
        figure=shown,
        judgement=_judged(
            t,
            shown,
            None if isinstance(due, str) else (due.day, due.value),
            lambda day: _baseline(t, PROVINCE, baselines, day),
            now,
        ),
    )
