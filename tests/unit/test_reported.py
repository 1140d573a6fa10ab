"""Reported figures without a database: parsing import files (every bad row named by its line),
staleness, the province's figure and the judgement of reported targets (api/reported_view.py)."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from openpyxl import Workbook

from api import reported_view
from api.schemas import ReportedTargetOut
from qilu.catalog import TargetKind, load_catalog
from qilu.reported import (
    PROVINCE,
    Figure,
    is_stale,
    parse,
    parse_value,
    province_figure,
    simulated_figures,
)
from storage.queries_api import Area

SAMPLES = Path(__file__).parents[2] / "docs" / "samples"
TODAY = date(2026, 12, 6)
NOW = datetime(2026, 12, 6, 4, 0, tzinfo=UTC)  # 12:00 in China
HEAD = "target,city,as_of,value,reporter,reported_on,source\n"


def _parse(body: str) -> list[str]:
    rep = parse((HEAD + body).encode(), load_catalog(), TODAY)
    return [str(e) for e in rep.errors]


def test_the_sample_file_parses() -> None:
    rep = parse((SAMPLES / "reported_figures.csv").read_bytes(), load_catalog(), TODAY)
    assert rep.ok, rep.errors
    got = {(f.target_id, f.area): f.value for f in rep.figures}
    assert got[("telecom-5g-stations-2024", PROVINCE)] == 243_000  # 24.3万
    assert got[("iot-terminals-reported-2022", PROVINCE)] == 152_000_000  # 1.52亿
    assert got[("telecom-5g-user-share-2024", "370200")] == pytest.approx(0.612)  # 61.2%
    assert got[("telecom-5g-user-share-2024", "370100")] == pytest.approx(0.597)  # 济南


def test_every_bad_row_is_named_by_its_line() -> None:
    errors = _parse(
        "telecom-5g-stations-2024,province,2024-12-31,243000,省通信管理局,2025-01-20,notice\n"
        "telecom-6g-stations-2030,province,2024-12-31,1,省通信管理局,2025-01-20,notice\n"
        "charging-public-piles-2024,province,2024-12-31,1,x,2025-01-20,notice\n"
        "telecom-deterministic-network-2022,370200,2022-12-31,5000,x,2023-01-20,notice\n"
        "telecom-islands-5g-2024,province,2024-12-31,130%,x,2025-01-20,notice\n"
        "telecom-5g-stations-2024,Atlantis,2024-12-31,1,x,2025-01-20,notice\n"
        "telecom-5g-stations-2024,province,2024-12-31,lots,x,2025-01-20,notice\n"
        "telecom-5g-stations-2024,province,2024-13-31,1,x,2025-01-20,notice\n"
        "telecom-5g-stations-2024,province,2024-12-31,1,x,2024-12-01,notice\n"
        "telecom-5g-stations-2024,province,2024-12-31,1,x,2027-01-01,notice\n"
        "telecom-5g-stations-2024,province,2024-12-31,1,,2025-01-20,\n"
        "telecom-5g-stations-2024,全省,2024-12-31,244000,x,2025-01-21,notice\n"
    )
    assert errors == [
        "line 3: 'telecom-6g-stations-2030' is not a reported target of the catalog "
        "(GET /v1/reported lists them)",
        "line 4: 'charging-public-piles-2024' is measured from telemetry, not a reported target",
        "line 5: telecom-deterministic-network-2022 is reported for the province only, "
        "not per city",
        "line 6: value '130%' is above 100 %: give a fraction (0.58) or a percentage (58%)",
        "line 7: unknown city 'Atlantis' (a GB/T 2260 code, a name, or 'province')",
        "line 8: value 'lots' is not a number (digits, optionally 万 or 亿)",
        "line 9: as_of '2024-13-31' is not a date (YYYY-MM-DD)",
        "line 10: reported_on 2024-12-01 is before the day it reports (2024-12-31)",
        "line 11: reported_on 2027-01-01 is in the future",
        "line 12: reporter (报送单位) is empty; source (依据文件) is empty",
        "line 13: telecom-5g-stations-2024 for 370000 on 2024-12-31 is already on line 2",
    ]


def test_missing_columns_are_errors_of_line_one_and_chinese_headers_work() -> None:
    rep = parse(b"target,city,value\n", load_catalog(), TODAY)
    assert [str(e) for e in rep.errors] == [
        "line 1: missing required column 'as_of' (统计日期)",
        "line 1: missing required column 'reporter' (报送单位)",
        "line 1: missing required column 'reported_on' (报送日期)",
        "line 1: missing required column 'source' (依据文件)",
    ]
    zh = "指标,城市,统计日期,数值,报送单位,报送日期,依据文件\n"
    row = "telecom-5g-stations-2024,青岛市,2024年12月31日,2.1万,青岛市通信管理局,2025/1/15,通报\n"
    rep = parse((zh + row).encode("gb18030"), load_catalog(), TODAY)
    assert rep.ok, rep.errors
    assert rep.figures[0].area == "370200"
    assert rep.figures[0].day == date(2024, 12, 31)
    assert rep.figures[0].value == 21_000


def test_xlsx_rows_are_numbered_as_excel_shows_them() -> None:
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.append(HEAD.strip().split(","))
    ws.append(["telecom-5g-stations-2024", "province", date(2024, 12, 31), 243000, "x",
               date(2025, 1, 20), "notice"])  # fmt: skip
    ws.append(["telecom-5g-stations-2024", "Qingdao", "yesterday", 1, "x", "2025-01-20", "n"])
    buf = io.BytesIO()
    wb.save(buf)
    rep = parse(buf.getvalue(), load_catalog(), TODAY, fmt="xlsx")
    assert [str(e) for e in rep.errors] == ["line 3: as_of 'yesterday' is not a date (YYYY-MM-DD)"]
    assert rep.figures[0].day == date(2024, 12, 31)


def test_values() -> None:
    assert parse_value("58%", TargetKind.RATIO) == pytest.approx(0.58)
    assert parse_value("0.33", TargetKind.RATIO) == pytest.approx(0.33)
    assert parse_value("1,500", TargetKind.COUNT) == 1500
    assert parse_value("1.5亿", TargetKind.COUNT) == 150_000_000
    assert isinstance(parse_value("58", TargetKind.RATIO), str)  # 58 is not a fraction
    assert isinstance(parse_value("-3", TargetKind.COUNT), str)


def _fig(tid: str, area: str, day: date, value: float) -> Figure:
    return Figure(tid, area, day, value, "省通信管理局", day, "notice")


def test_a_figure_turns_stale_after_its_reporting_interval() -> None:
    t = load_catalog().reported_target("telecom-5g-stations-2024")
    assert t is not None
    assert t.interval_days == 92
    fig = _fig(t.id, PROVINCE, date(2026, 9, 30), 250_000)
    assert not is_stale(t, fig, date(2026, 12, 31))  # 92 days: the next figure is due today
    assert is_stale(t, fig, date(2027, 1, 1))  # 93 days: it was due yesterday


CITIES = [c.code for c in load_catalog().cities]


def test_the_province_figure_is_its_own_or_the_sum_of_a_day_every_city_reported() -> None:
    cat = load_catalog()
    count = cat.reported_target("telecom-5g-stations-2024")
    ratio = cat.reported_target("telecom-5g-user-share-2024")
    assert count is not None
    assert ratio is not None
    assert len(CITIES) == 16
    own = _fig(count.id, PROVINCE, date(2024, 12, 31), 250_000)
    jinan = _fig(count.id, "370100", date(2025, 3, 31), 30_000)
    # one city's newer figure is not the province's: its own figure stays
    pf = province_figure(count, [own, jinan], CITIES)
    assert not isinstance(pf, str)
    assert (pf.value, pf.day, pf.basis) == (250_000, date(2024, 12, 31), "reported")
    # two cities of 16, on different days, and no figure of the province's own: no figure
    partial = [jinan, _fig(count.id, "370200", date(2025, 6, 30), 40_000)]
    why = province_figure(count, partial, CITIES)
    assert why == (
        "no province figure: 2 of 16 cities reported (newest 2025-06-30: 1 of 16); the cities"
        " are summed only for a day every city reported"
    )
    # every city for 2025-06-30 (one of them simulated): their sum, newer than the own figure
    day = date(2025, 6, 30)
    full = [_fig(count.id, c, day, 16_000) for c in CITIES]
    full[3] = Figure(count.id, CITIES[3], day, 16_000, "模拟", day, "sim", simulated=True)
    pf = province_figure(count, [own, jinan, *full], CITIES)
    assert not isinstance(pf, str)
    assert (pf.value, pf.day, pf.basis, pf.simulated) == (256_000, day, "sum_of_cities", True)
    assert pf.reporter == "模拟; 省通信管理局"
    # the province's own figure for the same day wins over the sum
    same = _fig(count.id, PROVINCE, day, 255_000)
    pf = province_figure(count, [same, *full], CITIES)
    assert not isinstance(pf, str)
    assert (pf.value, pf.basis) == (255_000, "reported")
    assert province_figure(ratio, [_fig(ratio.id, "370100", TODAY, 0.6)], CITIES) == (
        "no figure reported yet"
    )


def test_one_city_figure_does_not_replace_the_province_figure_in_the_answer() -> None:
    tid = "telecom-5g-stations-2024"
    v = _view(
        tid,
        [
            _fig(tid, PROVINCE, date(2024, 12, 31), 250_000),
            _fig(tid, "370100", date(2025, 3, 31), 30_000),
        ],
    )
    assert (v.province.value, v.province.basis) == (250_000, "reported")
    assert v.province.judgement is not None
    assert v.province.judgement.status == "met"
    assert v.province.freshness == "stale"
    only = _view(tid, [_fig(tid, "370100", date(2026, 9, 30), 30_000)])
    assert (only.province.value, only.province.basis) == (None, "no_data")
    assert only.province.judgement is not None
    assert "1 of 16 cities reported" in only.province.judgement.explanation


def test_a_figure_on_the_plan_path_stays_on_track_as_it_ages() -> None:
    tid = "telecom-5g-stations-2024"  # 51,000 on 2020-12-31 -> > 240,000 on 2024-12-31
    fig = _fig(tid, PROVINCE, date(2022, 12, 31), 146_000)  # the path: 145,434 that day
    days = (datetime(2023, 1, 21, 4, tzinfo=UTC), datetime(2023, 3, 31, 4, tzinfo=UTC))
    judged = [_view(tid, [fig], now).province.judgement for now in days]
    assert [j.status if j else None for j in judged] == ["on_track", "on_track"]
    for j in judged:
        assert j is not None
        assert j.today == date(2022, 12, 31)
        assert "as of the figure's day 2022-12-31" in j.explanation


def test_a_late_figure_does_not_undo_a_miss_at_the_due_date() -> None:
    tid = "telecom-5g-stations-2024"  # > 240,000 by 2024-12-31
    missed = _fig(tid, PROVINCE, date(2024, 12, 31), 230_000)
    late = _fig(tid, PROVINCE, date(2025, 3, 31), 250_000)
    j = _view(tid, [missed, late], datetime(2025, 4, 10, 4, tzinfo=UTC)).province.judgement
    assert j is not None
    assert j.status == "behind"
    assert j.explanation.startswith(
        "judged by the figure for 2024-12-31, the newest at or before the due date: 230,000 "
        "does not satisfy > 240,000 by 2024-12-31: missed; the newest figure, 250,000 for "
        "2025-03-31, came after it"
    )
    met = _fig(tid, PROVINCE, date(2024, 12, 31), 241_000)
    j = _view(tid, [met, late], datetime(2025, 4, 10, 4, tzinfo=UTC)).province.judgement
    assert j is not None
    assert j.status == "met"
    # per city (a ratio): the same rule
    share = "telecom-5g-user-share-2024"  # >= 58 % by 2024-12-31
    v = _view(
        share,
        [_fig(share, "370100", date(2024, 12, 31), 0.5), _fig(share, "370100", TODAY, 0.7)],
    )
    jinan = next(c for c in v.cities if c.area == "370100")
    assert jinan.judgement is not None
    assert jinan.judgement.status == "behind"


def _view(tid: str, figures: list[Figure], now: datetime = NOW) -> ReportedTargetOut:
    cat = load_catalog()
    t = cat.reported_target(tid)
    assert t is not None
    return reported_view.target_out(cat, t, figures, {}, now, Area())


def test_reported_targets_are_judged_like_measured_ones() -> None:
    tid = "telecom-5g-stations-2024"  # > 240,000 by 2024-12-31
    met = _view(tid, [_fig(tid, PROVINCE, date(2026, 9, 30), 243_000)])
    assert met.source_kind == "reported"
    assert met.province.judgement is not None
    assert met.province.judgement.status == "met"
    assert met.province.freshness == "current"
    assert met.province.figure is not None
    assert met.province.figure.reporter == "省通信管理局"
    behind = _view(tid, [_fig(tid, PROVINCE, date(2026, 9, 30), 240_000)])  # not > 240,000
    assert behind.province.judgement is not None
    assert behind.province.judgement.status == "behind"
    assert "due date passed" in behind.province.judgement.explanation
    # before the due date: the plan's path from the document's baseline (51,000 in 2020)
    early = datetime(2023, 1, 1, 4, tzinfo=UTC)
    # the path expects 145,560 on 2023-01-01 (half way from 51,000 to 240,000)
    statuses = [
        _view(tid, [_fig(tid, PROVINCE, date(2022, 12, 31), v)], early).province.judgement
        for v in (150_000, 125_000, 100_000)
    ]
    assert [j.status if j else None for j in statuses] == ["on_track", "at_risk", "behind"]


def test_ratio_targets_are_judged_per_city_and_counts_are_not() -> None:
    tid = "telecom-5g-user-share-2024"  # >= 58 % by 2024-12-31, per city
    v = _view(
        tid,
        [
            _fig(tid, "370100", date(2026, 9, 30), 0.61),
            _fig(tid, "370200", date(2026, 9, 30), 0.55),
            _fig(tid, PROVINCE, date(2026, 9, 30), 0.59),
        ],
    )
    by = {c.area: c for c in v.cities}
    assert by["370100"].judgement is not None
    assert by["370200"].judgement is not None
    assert by["370100"].judgement.status == "met"
    assert by["370200"].judgement.status == "behind"
    assert by["370300"].freshness == "no_data"
    count = _view(
        "telecom-5g-stations-2024", [_fig("telecom-5g-stations-2024", "370100", TODAY, 1)]
    )
    assert all(c.judgement is None for c in count.cities)


def test_a_stale_figure_is_never_shown_as_current() -> None:
    tid = "telecom-5g-stations-2024"
    v = _view(tid, [_fig(tid, PROVINCE, date(2026, 6, 30), 250_000)])  # 159 days > 92
    assert v.province.freshness == "stale"
    assert v.province.figure is not None
    assert v.province.figure.stale
    assert v.province.figure.age_days == 159
    assert v.province.judgement is not None
    assert v.province.judgement.status == "met"  # judged on its value ...
    assert v.province.judgement.explanation.startswith(
        "stale: the newest figure is for 2026-06-30, 159 days old (reported every 92 days)"
    )


def test_a_city_limited_key_sees_its_cities_only() -> None:
    cat = load_catalog()
    t = cat.reported_target("telecom-5g-stations-2024")
    assert t is not None
    figs = [_fig(t.id, "370100", TODAY, 1), _fig(t.id, "370200", TODAY, 2)]
    v = reported_view.target_out(cat, t, figs, {}, NOW, Area(cities=frozenset({"370200"})))
    assert [c.area for c in v.cities] == ["370200"]
    assert v.province.value is None


def test_simulated_figures_are_marked_and_cover_every_reported_target() -> None:
    cat = load_catalog()
    figs = simulated_figures(cat, TODAY)
    assert {f.target_id for f in figs} == {t.id for t in cat.reported}
    assert all(f.simulated and "not a real report" in f.source for f in figs)
    assert all(f.reporter.endswith("（模拟）") for f in figs)
    assert len({f.key for f in figs}) == len(figs)
    assert all(f.reported_on >= f.day for f in figs)
    # plausible: the 2024 5G figure at the end of 2024 is within 20 % of its threshold
    end = [
        f for f in figs if f.target_id == "telecom-5g-stations-2024" and f.day == date(2024, 12, 31)
    ]
    assert 0.8 * 240_000 < sum(f.value for f in end) < 1.2 * 240_000
