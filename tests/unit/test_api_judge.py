"""The status rule against the due date (api/judge.py): met, on track, at risk, behind."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from api.judge import AT_RISK_TOLERANCE, ON_TRACK_TOLERANCE, Basis, Status, judge, today_cst
from qilu.catalog import Target, load_catalog


def target(tid: str) -> Target:
    t = load_catalog().target(tid)
    assert t is not None
    return t


PILES = target("charging-networked-2025")  # count, >= 100,000, due 2025-12-31
MONITORING = target("substation-220kv-monitoring-2024")  # ratio, >= 100 %, due 2024-12-31
# a day exactly half-way between 2025-01-01 and the due date 2025-12-31 (364 days)
HALF = datetime(2025, 7, 2, 4, 0, tzinfo=UTC)
BASE = (date(2025, 1, 1), 0.0)


def test_days_are_counted_in_china_standard_time() -> None:
    assert today_cst(datetime(2025, 12, 31, 15, 59, tzinfo=UTC)) == date(2025, 12, 31)
    assert today_cst(datetime(2025, 12, 31, 16, 0, tzinfo=UTC)) == date(2026, 1, 1)


def test_met_whatever_the_date() -> None:
    j = judge(PILES, 100_000, datetime(2030, 1, 1, tzinfo=UTC), None)
    assert (j.status, j.basis) == (Status.MET, Basis.THRESHOLD)
    strict = target("charging-public-piles-2024")  # "> 180,000": equal is not enough
    assert judge(strict, 180_000, HALF, None).status is Status.BEHIND


def test_past_due_and_not_met_is_behind() -> None:
    j = judge(MONITORING, 0.99, datetime(2025, 1, 2, tzinfo=UTC), (date(2024, 1, 1), 0.5))
    assert (j.status, j.basis) == (Status.BEHIND, Basis.THRESHOLD)
    assert j.days_left < 0
    assert "passed" in j.explanation


@pytest.mark.parametrize(
    ("value", "status"),
    [
        (50_000, Status.ON_TRACK),  # exactly on the trajectory
        (60_000, Status.ON_TRACK),  # ahead of it
        (100_000 * (0.5 - ON_TRACK_TOLERANCE) + 1, Status.ON_TRACK),
        (100_000 * (0.5 - ON_TRACK_TOLERANCE) - 1, Status.AT_RISK),
        (100_000 * (0.5 - AT_RISK_TOLERANCE) + 1, Status.AT_RISK),
        (100_000 * (0.5 - AT_RISK_TOLERANCE) - 1, Status.BEHIND),
        (0, Status.BEHIND),
    ],
)
def test_linear_trajectory_with_tolerances(value: float, status: Status) -> None:
    j = judge(PILES, value, HALF, BASE)
    assert j.status is status
    assert j.basis is Basis.TRAJECTORY
    assert j.expected_now == pytest.approx(50_000, rel=0.01)
    assert j.baseline_day == BASE[0]
    assert j.shortfall is not None
    assert str(round(j.expected_now or 0, -3))[:2] in j.explanation.replace(",", "")


def test_without_history_the_trajectory_starts_today() -> None:
    j = judge(PILES, 10, HALF, None)
    assert (j.status, j.basis) == (Status.ON_TRACK, Basis.NO_HISTORY)
    assert j.baseline_day == date(2025, 7, 2)
    assert "no earlier observation" in j.explanation


def test_a_drop_below_an_already_met_baseline_is_behind() -> None:
    j = judge(MONITORING, 0.9, datetime(2024, 6, 1, tzinfo=UTC), (date(2024, 1, 1), 1.0))
    assert j.status is Status.BEHIND


def test_nothing_to_measure_is_no_data() -> None:
    j = judge(MONITORING, None, HALF, None)
    assert (j.status, j.basis) == (Status.NO_DATA, Basis.NO_DATA)
