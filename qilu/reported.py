"""Reported figures: parsing an import file, freshness, the province's figure, simulated figures.

A reported target (``[[reported]]`` in qilu/data/targets.toml) is counted by another body, not
by this platform's telemetry; its values arrive as figures in a CSV or XLSX file (docs/
reported.md), one figure a row:

    target, city, as_of, value, reporter, reported_on, source[, note]

(each header also in Chinese: 指标, 城市, 统计日期, 数值, 报送单位, 报送日期,
依据文件, 备注). ``city`` is a city (code, Chinese or English name) or the
province (``province``, ``全省``, ``370000``); ``value`` is a number (``24万``
and ``1.5亿`` are read as written), for a ratio a fraction or a percentage
(``58%``). :func:`parse` validates every row without I/O and returns the figures
with one error per bad row (``line N: reason``, the header is line 1), like the inventory import
(qilu/inventory.py, whose readers it uses). storage/reported.py writes them in one transaction.

A figure is **stale** once it is older than its target's reporting interval (``interval_days``
after the day it is for): it is still shown and judged, always marked stale, never as current.
Nothing here touches the database.
"""

from __future__ import annotations

import random
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Literal

from qilu.catalog import Catalog, ReportedTarget, TargetKind
from qilu.inventory import (
    Format,
    InventoryError,
    RowError,
    RowErrors,
    _norm,
    city_lookup,
    csv_rows,
    decode,
    xlsx_rows,
)

PROVINCE = "370000"
_PROVINCE_NAMES = frozenset({"province", "全省", "山东", "山东省", "shandong", PROVINCE})
SIMULATED_SOURCE = "simulated figure, not a real report (qilu run)"

ColumnKey = Literal["target", "city", "as_of", "value", "reporter", "reported_on", "source", "note"]
# key -> accepted headers (English first, then Chinese and aliases); all required but `note`
COLUMNS: dict[ColumnKey, tuple[str, ...]] = {
    "target": ("target", "指标", "target_id", "指标编号"),
    "city": ("city", "城市", "地市", "area", "city_code"),
    "as_of": ("as_of", "统计日期", "截至日期", "day"),
    "value": ("value", "数值", "数量"),
    "reporter": ("reporter", "报送单位", "报告单位"),
    "reported_on": ("reported_on", "报送日期", "报告日期"),
    "source": ("source", "依据文件", "来源", "文件"),
    "note": ("note", "备注"),
}
OPTIONAL: frozenset[ColumnKey] = frozenset({"note"})
_SCALE = {"万": 10_000, "亿": 100_000_000}
_NUMBER = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*(万|亿)?$")
_DATE = re.compile(r"^(\d{4})[-/.年](\d{1,2})[-/.月](\d{1,2})日?(?:[ T]00:00(?::00)?)?$")


@dataclass(frozen=True, slots=True)
class Figure:
    """One reported value of a target for an area (a city, or the province) on a day."""

    target_id: str
    area: str  # a city's code, or PROVINCE
    day: date  # the day the figure is for (统计日期)
    value: float
    reporter: str
    reported_on: date
    source: str  # the document or notice it comes from
    note: str = ""
    simulated: bool = False

    @property
    def key(self) -> tuple[str, str, date]:
        return (self.target_id, self.area, self.day)


@dataclass(slots=True)
class Report(RowErrors):
    """A parsed file: its valid figures and the errors of its bad rows."""

    encoding: str | None
    rows: int = 0
    figures: list[Figure] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    error_count: int = 0
    warnings: list[str] = field(default_factory=list)


def parse_date(text: str) -> date | None:
    m = _DATE.match(text.strip())
    if m is None:
        return None
    try:
        return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return None


def parse_value(text: str, kind: TargetKind) -> float | str:
    """The figure as a number, or the reason it is not one."""
    t = text.strip().replace(",", "").replace("，", "")
    if kind is TargetKind.RATIO:
        percent = t.endswith(("%", "％"))
        m = _NUMBER.match(t.rstrip("%％").strip())
        if m is None or m.group(2):
            return (
                f"value {text!r} is not a ratio (a fraction such as 0.58 or a percentage "
                "such as 58%)"
            )
        v = float(m.group(1)) / (100 if percent else 1)
        if v > 1:
            return f"value {text!r} is above 100 %: give a fraction (0.58) or a percentage (58%)"
        return v
    m = _NUMBER.match(t)
    if m is None:
        return f"value {text!r} is not a number (digits, optionally 万 or 亿)"
    return float(m.group(1)) * _SCALE.get(m.group(2) or "", 1)


def _header(cells: Sequence[str], rep: Report) -> dict[ColumnKey, int]:
    wanted = {_norm(h): key for key, heads in COLUMNS.items() for h in heads}
    found: dict[ColumnKey, int] = {}
    for i, h in enumerate(cells):
        if not h:
            continue
        key = wanted.get(_norm(h))
        if key is None:
            rep.warnings.append(f"line 1: column {h!r} is not a reported-figure column; ignored")
        elif key in found:
            rep.error(1, f"column {COLUMNS[key][0]!r} ({COLUMNS[key][1]}) appears twice")
        else:
            found[key] = i
    for key, heads in COLUMNS.items():
        if key not in found and key not in OPTIONAL:
            rep.error(1, f"missing required column {heads[0]!r} ({heads[1]})")
    return found


def parse(
    data: bytes,
    catalog: Catalog,
    today: date,
    *,
    fmt: Format = "csv",
    encoding: str | None = None,
) -> Report:
    """Parse and validate a file of reported figures. Raises :class:`InventoryError` only when
    the file cannot be read at all; every bad row is an entry of ``errors``."""
    rows: Iterable[tuple[int, list[str]]]
    if fmt == "xlsx":
        rep = Report(None)
        rows = xlsx_rows(data)
    else:
        text, used = decode(data, encoding)
        rep = Report(used)
        rows = csv_rows(text)
    it = iter(rows)
    first = next(it, None)
    if first is None:
        raise InventoryError("the file is empty: no header row")
    cols = _header(first[1], rep)
    if not rep.ok:
        return rep
    cities = city_lookup(catalog)
    seen: dict[tuple[str, str, date], int] = {}
    for line, cells in it:
        rep.rows += 1
        fig = _row(line, cells, cols, catalog, cities, today, rep)
        if fig is None:
            continue
        before = seen.get(fig.key)
        if before is not None:
            rep.error(
                line,
                f"{fig.target_id} for {fig.area} on {fig.day} is already on line {before}",
            )
            continue
        seen[fig.key] = line
        rep.figures.append(fig)
    if rep.rows == 0:
        rep.error(2, "no figures: the file has a header and nothing else")
    return rep


def _row(
    line: int,
    cells: Sequence[str],
    cols: Mapping[ColumnKey, int],
    catalog: Catalog,
    cities: Mapping[str, str],
    today: date,
    rep: Report,
) -> Figure | None:
    def cell(key: ColumnKey) -> str:
        i = cols.get(key)
        return cells[i].strip() if i is not None and i < len(cells) else ""

    reasons = [
        f"{COLUMNS[key][0]} ({COLUMNS[key][1]}) is empty"
        for key in COLUMNS
        if key not in OPTIONAL and not cell(key)
    ]
    if reasons:
        rep.error(line, "; ".join(reasons))
        return None
    target = catalog.reported_target(cell("target"))
    if target is None:
        measured = catalog.target(cell("target")) is not None
        rep.error(
            line,
            f"{cell('target')!r} is "
            + (
                "measured from telemetry, not a reported target"
                if measured
                else "not a reported target of the catalog (GET /v1/reported lists them)"
            ),
        )
        return None
    raw_city = cell("city")
    area = PROVINCE if raw_city.lower() in _PROVINCE_NAMES else cities.get(raw_city.lower())
    if area is None:
        reasons.append(f"unknown city {raw_city!r} (a GB/T 2260 code, a name, or 'province')")
    elif area != PROVINCE and not target.per_city:
        reasons.append(f"{target.id} is reported for the province only, not per city")
    day, reported_on = parse_date(cell("as_of")), parse_date(cell("reported_on"))
    if day is None:
        reasons.append(f"as_of {cell('as_of')!r} is not a date (YYYY-MM-DD)")
    if reported_on is None:
        reasons.append(f"reported_on {cell('reported_on')!r} is not a date (YYYY-MM-DD)")
    elif reported_on > today:
        reasons.append(f"reported_on {reported_on} is in the future")
    if day is not None and reported_on is not None and reported_on < day:
        reasons.append(f"reported_on {reported_on} is before the day it reports ({day})")
    value = parse_value(cell("value"), target.kind)
    if isinstance(value, str):
        reasons.append(value)
    if reasons or area is None or day is None or reported_on is None or isinstance(value, str):
        rep.error(line, "; ".join(reasons))
        return None
    return Figure(
        target.id, area, day, value, cell("reporter"), reported_on, cell("source"), cell("note")
    )


# -- freshness and the province's figure --------------------------------------------------------
def age_days(fig: Figure, today: date) -> int:
    return (today - fig.day).days


def is_stale(target: ReportedTarget, fig: Figure, today: date) -> bool:
    """A figure older than the target's reporting interval is stale: a newer one was due."""
    return age_days(fig, today) > target.interval_days


@dataclass(frozen=True, slots=True)
class ProvinceFigure:
    value: float
    day: date  # every figure it comes from is for this day
    basis: Literal["reported", "sum_of_cities"]
    figures: tuple[Figure, ...]

    @property
    def simulated(self) -> bool:
        """A sum is simulated when any of its parts is."""
        return any(f.simulated for f in self.figures)

    @property
    def reporter(self) -> str:
        return joined(f.reporter for f in self.figures)

    @property
    def source(self) -> str:
        return joined(f.source for f in self.figures)


def joined(values: Iterable[str]) -> str:
    """The distinct values of a sum's parts, sorted, joined by "; " (the Grafana table's
    ``string_agg(DISTINCT ..., '; ' ORDER BY ...)`` gives the same)."""
    return "; ".join(sorted(set(values)))


def newest(figures: Iterable[Figure]) -> dict[str, Figure]:
    """The newest figure of each area."""
    out: dict[str, Figure] = {}
    for f in figures:
        if f.area not in out or f.day > out[f.area].day:
            out[f.area] = f
    return out


def province_figure(
    target: ReportedTarget, figures: Iterable[Figure], cities: Collection[str]
) -> ProvinceFigure | str:
    """The province's figure from ``figures`` (any of the target's figures, every area and
    day; ``cities``: the codes of all cities), or the reason there is none.

    The rule (the Grafana table's SQL, dashboards/coverage.py, applies the same one): the
    candidates are the province's own figures and, for a count reported per city, the sum of
    the cities' figures for each day **every** city reported; the newest candidate wins, the
    province's own on a tie. A day only some cities reported is never summed: partial sums
    would pass off part of the province as all of it (and mix days)."""
    mine = [f for f in figures if f.target_id == target.id]
    candidates: list[ProvinceFigure] = [
        ProvinceFigure(f.value, f.day, "reported", (f,)) for f in mine if f.area == PROVINCE
    ]
    summed = target.kind is TargetKind.COUNT and target.per_city
    by_day: dict[date, dict[str, Figure]] = {}
    for f in mine:
        if f.area in cities:
            by_day.setdefault(f.day, {})[f.area] = f
    if summed:
        candidates.extend(
            ProvinceFigure(
                sum(f.value for f in parts.values()),
                day,
                "sum_of_cities",
                tuple(sorted(parts.values(), key=lambda f: f.area)),
            )
            for day, parts in by_day.items()
            if len(parts) == len(cities)
        )
    if candidates:
        return max(candidates, key=lambda p: (p.day, p.basis == "reported"))
    if summed and by_day:
        reporting = {f.area for f in mine if f.area in cities}
        day = max(by_day)
        return (
            f"no province figure: {len(reporting)} of {len(cities)} cities reported "
            f"(newest {day}: {len(by_day[day])} of {len(cities)}); the cities are summed only "
            "for a day every city reported"
        )
    return "no figure reported yet"


# -- simulated figures (the demo: `qilu run`) ------------------------------------------------
def _quarter_ends(start: date, end: date, every_days: int) -> list[date]:
    """Days from ``start`` to ``end``, one per reporting interval (quarter or year ends)."""
    months = 3 if every_days <= 92 else 12
    out: list[date] = []
    y, m = start.year, 3 if months == 3 else 12
    while True:
        d = date(y, m, 31 if m in (3, 12) else 30)
        if d > end:
            return out
        if d >= start:
            out.append(d)
        m += months
        if m > 12:
            y, m = y + 1, m - 12


def simulated_figures(catalog: Catalog, today: date, seed: int = 19) -> list[Figure]:
    """Plausible figures for every reported target, marked simulated: from the document's
    baseline (or a start two years before the due date) to a final figure near the threshold
    (most met, some short of it), per city by the cities' weights. Reporting on the 2022
    action plan's increments stops a year after their due date, so some figures are stale, as
    they would be."""
    rng = random.Random(seed)  # noqa: S311 - a demo's figures, not a secret
    weights = {c.code: c.weight for c in catalog.cities}
    total_w = sum(weights.values())
    out: list[Figure] = []
    for t in catalog.reported:
        ratio = t.kind is TargetKind.RATIO
        increment = t.source.document == "001" or any(
            w in t.id for w in ("-new-", "-certified-", "-built-")
        )
        if t.baseline is not None:
            start_day, start = t.baseline.day, t.baseline.value
        elif increment and not ratio:  # counted from the start of its year
            start_day, start = date(t.due.year - 1, 12, 31), 0.0
        else:
            start_day = t.due - timedelta(days=730)
            start = t.threshold * (0.55 if ratio else 0.35)
        full = ratio and t.threshold >= 1.0
        factor = (
            rng.choice((1.0, 1.0, 0.985))
            if full
            else rng.choice((1.04, 1.08, 1.12, 1.18, 0.93, 1.06))
        )
        final = min(1.0, t.threshold * factor) if ratio else t.threshold * factor
        last = min(today - timedelta(days=30), t.due + timedelta(days=365 if increment else 3650))
        for day in _quarter_ends(start_day, last, t.interval_days):
            span = max(1, (t.due - start_day).days)
            frac = (day - start_day).days / span
            value = start + (final - start) * min(frac, 1.0)
            if frac > 1 and not increment:  # past due: keeps growing a little
                value = (
                    min(1.0, value * (1 + 0.02 * (frac - 1)))
                    if ratio
                    else value * (1 + 0.08 * (frac - 1))
                )
            reported_on = min(day + timedelta(days=20), today)
            reporter = f"{t.reporter}（模拟）"
            if not t.per_city or ratio:
                out.append(
                    Figure(
                        t.id,
                        PROVINCE,
                        day,
                        _round(value, ratio),
                        reporter,
                        reported_on,
                        SIMULATED_SOURCE,
                        simulated=True,
                    )
                )
            if t.per_city:
                for code, w in weights.items():
                    if ratio:
                        v = min(1.0, value * (1 + (w / total_w * 16 - 1) * 0.03))
                    else:
                        v = value * w / total_w
                    out.append(
                        Figure(
                            t.id,
                            code,
                            day,
                            _round(v, ratio),
                            reporter,
                            reported_on,
                            SIMULATED_SOURCE,
                            simulated=True,
                        )
                    )
    return out


def _round(v: float, ratio: bool) -> float:
    return round(v, 4) if ratio else float(round(v))
