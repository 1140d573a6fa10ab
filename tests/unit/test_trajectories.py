"""Trajectories and scaled thresholds without I/O: the catalog's baselines, the simulated
registry's share per sector, the scaled judgement, the paths and the met/behind marks."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest

from api.judge import (
    DayPoint,
    Status,
    effective_threshold,
    fmt_threshold,
    judge,
    scale_for,
    trajectory,
)
from api.views import simulation_out
from ops.demo import format_coverage
from qilu.catalog import Catalog, Target, load_catalog
from qilu.errors import ConfigError
from qilu.registry import generate, sector_fractions

CATALOG = load_catalog()


def _target(tid: str) -> Target:
    t = CATALOG.target(tid)
    assert t is not None
    return t


NETWORKED = _target("charging-networked-2025")  # count >= 100,000 by 2025-12-31
MONITORING = _target("substation-220kv-monitoring-2024")  # ratio >= 1.0 by 2024-12-31
RANCHES = _target("ranch-smart-built-2024")  # count >= 16 by 2024-12-31


def test_baselines_parsed_from_the_catalog_with_their_source() -> None:
    with_baseline = {t.id: t.baseline for t in CATALOG.targets if t.baseline is not None}
    assert set(with_baseline) == {
        "charging-networked-2022",
        "charging-networked-2025",
        "agri-bases-2022",
        "agri-bases-2025",
        "iot-terminals-2022",
        "iot-terminals-2025",
    }
    b = with_baseline["charging-networked-2025"]
    assert b is not None
    assert (b.day, b.value, b.source.document) == (date(2020, 12, 31), 31_000, "003")
    cited = CATALOG.cite(b.source)
    assert cited.startswith("山东省“十四五”数字强省建设规划, 主要指标表")
    assert with_baseline["iot-terminals-2025"] is not None
    assert with_baseline["iot-terminals-2025"].value == 45_000_000
    assert with_baseline["agri-bases-2025"] is not None
    assert with_baseline["agri-bases-2025"].value == 232


def _catalog_with(baseline: dict[str, Any]) -> None:
    raw = CATALOG.model_dump(mode="json")
    raw["targets"][0]["baseline"] = baseline
    try:
        Catalog.model_validate(raw)
    except ValueError as exc:
        raise ConfigError("catalog", str(exc)) from exc


def test_a_baseline_needs_a_known_document_and_an_earlier_day() -> None:
    ok = {"day": "2020-12-31", "value": 1, "source": {"document": "003", "article": "x"}}
    _catalog_with(ok)
    with pytest.raises(ConfigError, match="unknown baseline source document"):
        _catalog_with({**ok, "source": {"document": "999", "article": "x"}})
    with pytest.raises(ConfigError, match="is not before the due date"):
        _catalog_with({**ok, "day": "2030-01-01"})


def test_sector_shares_follow_the_generator() -> None:
    shares = sector_fractions(0.02)
    assert shares["charging"] == pytest.approx(0.02)
    assert shares["all"] == 0.02
    # at least one ranch per city: 16 of the province's 48 ranches
    assert shares["ranch"] == pytest.approx(16 / 48)
    reg = generate(1, 0.02)
    ranches = sum(1 for s in reg.sites if s.sector.value == "ranch")
    assert ranches == 16
    assert sector_fractions(1.0) == {"charging": 1.0, "substation": 1.0, "ranch": 1.0, "all": 1.0}
    with pytest.raises(ValueError, match="positive"):
        sector_fractions(0)


def test_only_count_thresholds_are_scaled() -> None:
    shares = {"charging": 0.02, "substation": 0.03, "ranch": 0.5, "all": 0.02}
    assert scale_for(NETWORKED, shares) == 0.02
    assert effective_threshold(NETWORKED, 0.02) == pytest.approx(2_000)
    assert scale_for(MONITORING, shares) is None
    assert scale_for(RANCHES, shares) == 0.5
    assert scale_for(NETWORKED, {}) is None  # a real registry
    assert scale_for(NETWORKED, {"charging": 1.0}) is None  # the whole province simulated


def test_a_scaled_threshold_keeps_its_fraction_and_loses_float_noise() -> None:
    assert 100_000 * 0.07 != 7_000  # 7000.000000000001
    assert effective_threshold(NETWORKED, 0.07) == 7_000
    now = datetime(2026, 12, 6, 4, tzinfo=UTC)
    assert judge(NETWORKED, 7_000, now, None, 0.07).status is Status.MET
    third = effective_threshold(RANCHES, 1 / 3)
    assert third == pytest.approx(16 / 3)
    assert fmt_threshold(third, RANCHES.kind) == "5.33"
    assert fmt_threshold(3_600, NETWORKED.kind) == "3,600"
    five = judge(RANCHES, 5, now, None, 1 / 3)
    assert five.status is Status.BEHIND
    assert ">= 5.33 by 2024-12-31" in five.explanation


def test_the_judgement_uses_the_scaled_threshold_and_says_so() -> None:
    now = datetime(2026, 12, 6, 4, tzinfo=UTC)
    scaled = judge(NETWORKED, 2_100, now, None, 0.02)
    assert scaled.status is Status.MET
    assert "scaled to the simulated 2.0% of the province" in scaled.explanation
    assert judge(NETWORKED, 2_100, now, None).status is Status.BEHIND


def _days(*pairs: tuple[str, float]) -> list[DayPoint]:
    return [DayPoint(date.fromisoformat(d), v) for d, v in pairs]


def test_met_on_is_the_start_of_the_last_unbroken_met_run() -> None:
    series = _days(
        ("2026-03-01", 1_500), ("2026-03-02", 2_100), ("2026-03-03", 1_900), ("2026-03-04", 2_000)
    )
    t = trajectory(NETWORKED, series, (date(2026, 3, 1), 1_500), 0.02)
    assert (t.met_on, t.behind_since) == (date(2026, 3, 4), None)
    t = trajectory(NETWORKED, series[:3], (date(2026, 3, 1), 1_500), 0.02)
    assert (t.met_on, t.behind_since) == (None, date(2026, 3, 3))
    unscaled = trajectory(NETWORKED, series, (date(2026, 3, 1), 1_500), None)
    assert (unscaled.met_on, unscaled.behind_since) == (None, date(2026, 3, 1))


def test_before_the_due_date_each_day_is_judged_against_the_trajectory() -> None:
    base = (date(2025, 1, 1), 0.0)
    # half-way (2025-07-02) the trajectory expects 50,000: 47,000 is at risk, not behind;
    # 20,000 a month later is behind; 100,000 is met
    series = _days(("2025-07-02", 47_000), ("2025-08-01", 20_000), ("2025-08-02", 20_000))
    t = trajectory(NETWORKED, series, base, None)
    assert (t.met_on, t.behind_since) == (None, date(2025, 8, 1))
    t = trajectory(NETWORKED, [*series, DayPoint(date(2025, 8, 3), 100_000)], base, None)
    assert (t.met_on, t.behind_since) == (date(2025, 8, 3), None)


def test_paths_judgement_and_plan() -> None:
    t = trajectory(NETWORKED, [], (date(2025, 1, 1), 500.0), 0.02)
    assert [p.day for p in t.judgement_path] == [date(2025, 1, 1), date(2025, 12, 31)]
    assert [p.value for p in t.judgement_path] == pytest.approx([500, 2_000])
    assert t.plan_path is not None
    assert [p.day for p in t.plan_path] == [date(2020, 12, 31), date(2025, 12, 31)]
    assert [p.value for p in t.plan_path] == pytest.approx([620, 2_000])
    # the first observation after the due date: the threshold alone decides, no path
    late = trajectory(NETWORKED, [], (date(2026, 3, 1), 500.0), None)
    assert late.judgement_path == ()
    assert late.plan_path == (
        DayPoint(date(2020, 12, 31), 31_000),
        DayPoint(date(2025, 12, 31), 100_000),
    )
    assert trajectory(MONITORING, [], None, None).plan_path is None


def test_the_status_page_banner_states_the_shares() -> None:
    assert simulation_out({}) is None
    assert simulation_out({"charging": 1.0, "all": 1.0}) is None
    out = simulation_out(sector_fractions(0.02))
    assert out is not None
    assert out.shares["charging"] == pytest.approx(0.02)
    assert "2.0 % of its charging stations" in out.note
    assert "33.3 % of its ranches" in out.note


def test_the_coverage_table_shows_a_scaled_count_threshold_with_its_fraction() -> None:
    cities = [{"city_code": c.code, "value": 1.0} for c in CATALOG.cities]
    row = {
        "target_id": "ranch-smart-built-2024",
        "sector": "ranch",
        "kind": "count",
        "comparator": ">=",
        "threshold": 16,
        "threshold_effective": 16 / 3,
        "scaled": True,
        "scale": 1 / 3,
        "due": "2024-12-31",
        "value": 15.0,
        "met": True,
        "cities": cities,
    }
    table = format_coverage([row])
    assert ">=5.33\u2020 2024" in table
    assert "(ranch 33.3 %)" in table
    unscaled = {**row, "threshold_effective": 16, "scaled": False, "scale": None}
    assert ">=16 2024" in format_coverage([unscaled])
    assert "\u2020" not in format_coverage([unscaled])
