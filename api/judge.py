"""Status of a target against its due date: met, on track, at risk, behind (pure, no I/O).

The rule (docs/adr/0005-api-snapshot-and-access.md, decision 2):

1. **met** when the value satisfies the threshold (``>`` or ``>=``), whatever the date;
2. **behind** when the due date has passed and the value does not satisfy it;
3. otherwise compare with the *linear trajectory* from the first observed value (the baseline:
   the earliest day in ``coverage_daily`` for that target and area) to the threshold on the due
   date. ``shortfall`` is how far the value is below the trajectory's value for today, as a
   fraction of the whole way to go (threshold - baseline):
   **on track** if shortfall <= ``ON_TRACK_TOLERANCE`` (5 %), **at risk** if <=
   ``AT_RISK_TOLERANCE`` (20 %), **behind** beyond that.
4. **no data** when there is no value (a ratio with nothing to measure).

Without an earlier observation the baseline is today's value, so the trajectory starts here and
the target is on track by definition; the answer says so (``basis = "no_history"``).
Days are counted in China Standard Time (UTC+8), the calendar of the due dates.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone

from qilu.catalog import Target, TargetKind

ON_TRACK_TOLERANCE = 0.05
AT_RISK_TOLERANCE = 0.20
CST = timezone(timedelta(hours=8), "CST")


class Status(enum.StrEnum):
    MET = "met"
    ON_TRACK = "on_track"
    AT_RISK = "at_risk"
    BEHIND = "behind"
    NO_DATA = "no_data"


class Basis(enum.StrEnum):
    THRESHOLD = "threshold"  # met, or past due: the threshold alone decides
    TRAJECTORY = "trajectory"  # compared with the linear trajectory from the baseline
    NO_HISTORY = "no_history"  # trajectory starting today (no earlier observation)
    NO_DATA = "no_data"


@dataclass(frozen=True, slots=True)
class Judgement:
    status: Status
    basis: Basis
    today: date
    days_left: int  # negative once the due date has passed
    baseline_day: date | None
    baseline_value: float | None
    expected_now: float | None  # the trajectory's value today
    shortfall: float | None  # (expected - value) / (threshold - baseline); <= 0 is ahead
    explanation: str


def today_cst(now: datetime) -> date:
    return now.astimezone(CST).date()


def _fmt(v: float, kind: TargetKind) -> str:
    return f"{v:.1%}" if kind is TargetKind.RATIO else f"{v:,.0f}"


def judge(
    target: Target, value: float | None, now: datetime, baseline: tuple[date, float] | None
) -> Judgement:
    today = today_cst(now if now.tzinfo else now.replace(tzinfo=UTC))
    days_left = (target.due - today).days
    goal = f"{target.comparator} {_fmt(target.threshold, target.kind)} by {target.due}"
    if value is None:
        return Judgement(
            Status.NO_DATA,
            Basis.NO_DATA,
            today,
            days_left,
            None,
            None,
            None,
            None,
            "nothing to measure here: no asset the target applies to",
        )
    shown = _fmt(value, target.kind)
    if target.met(value):
        return Judgement(
            Status.MET,
            Basis.THRESHOLD,
            today,
            days_left,
            None,
            None,
            None,
            None,
            f"{shown} satisfies {goal}",
        )
    if days_left < 0:
        return Judgement(
            Status.BEHIND,
            Basis.THRESHOLD,
            today,
            days_left,
            None,
            None,
            None,
            None,
            f"{shown} does not satisfy {goal}; the due date passed {-days_left} days ago",
        )
    basis = Basis.TRAJECTORY
    if baseline is None or baseline[0] >= today:
        basis = Basis.NO_HISTORY
        baseline = (today, value)
    b_day, b_value = baseline
    total_days = (target.due - b_day).days
    elapsed = (today - b_day).days
    span = target.threshold - b_value
    fraction = elapsed / total_days if total_days > 0 else 1.0
    expected = b_value + span * fraction
    # when the baseline already met the threshold, any drop below it is the whole story
    shortfall = (expected - value) / span if span > 0 else 1.0
    if shortfall <= ON_TRACK_TOLERANCE:
        status = Status.ON_TRACK
    elif shortfall <= AT_RISK_TOLERANCE:
        status = Status.AT_RISK
    else:
        status = Status.BEHIND
    if basis is Basis.NO_HISTORY:
        how = "no earlier observation: the trajectory starts today"
    else:
        how = (
            f"the linear trajectory from {_fmt(b_value, target.kind)} on {b_day} expects "
            f"{_fmt(expected, target.kind)} today; shortfall {shortfall:.1%} of the way "
            f"(on track <= {ON_TRACK_TOLERANCE:.0%}, at risk <= {AT_RISK_TOLERANCE:.0%})"
        )
    return Judgement(
        status,
        basis,
        today,
        days_left,
        b_day,
        b_value,
        expected,
        shortfall,
        f"{shown} towards {goal}, {days_left} days left; {how}",
    )
