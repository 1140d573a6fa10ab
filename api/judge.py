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

**Scaled thresholds** (docs/adr/0013-scaled-thresholds.md): when the registry is a simulated
share of the province (``scale``), a count target is judged against ``threshold * scale`` and
the explanation says so; a ratio target is judged against its threshold as written.

**Trajectories** (:func:`trajectory`): a target's daily series against the threshold, the
judgement's path (baseline -> threshold at the due date), the plan's own path when the catalog
gives a baseline from a document, and the day since which the target has been met
(``met_on``) or behind (``behind_since``) without a break, each day judged as on that day.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone

from qilu.catalog import Goal, TargetKind

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


def scale_for(target: Goal, fractions: Mapping[str, float]) -> float | None:
    """The share of the province a count target is scaled by, or None (thresholds as written:
    a real registry, a ratio target, or a simulation of the whole province)."""
    if target.kind is not TargetKind.COUNT:
        return None
    share = fractions.get(target.sector)
    return None if share is None or share == 1.0 else share


def effective_threshold(target: Goal, scale: float | None) -> float:
    """The threshold compared with: scaled (rounded to 6 decimals, so that float noise such
    as 2000.0000000000002 never fails a value of exactly 2,000), or as written."""
    return target.threshold if scale is None else round(target.threshold * scale, 6)


def today_cst(now: datetime) -> date:
    return now.astimezone(CST).date()


def _fmt(v: float, kind: TargetKind) -> str:
    return f"{v:.1%}" if kind is TargetKind.RATIO else f"{v:,.0f}"


def fmt_threshold(v: float, kind: TargetKind) -> str:
    """A threshold as shown: a scaled count keeps its fraction (>= 5.33 ranches is not >= 5)."""
    if kind is TargetKind.RATIO or v == round(v):
        return _fmt(v, kind)
    return f"{v:,.2f}".rstrip("0").rstrip(".")


def judge(
    target: Goal,
    value: float | None,
    now: datetime,
    baseline: tuple[date, float] | None,
    scale: float | None = None,
) -> Judgement:
    today = today_cst(now if now.tzinfo else now.replace(tzinfo=UTC))
    days_left = (target.due - today).days
    threshold = effective_threshold(target, scale)
    goal = f"{target.comparator} {fmt_threshold(threshold, target.kind)} by {target.due}"
    if scale is not None:
        goal += (
            f" (the threshold {_fmt(target.threshold, target.kind)} scaled to the simulated "
            f"{scale:.1%} of the province)"
        )
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
    if target.met(value, threshold):
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
    span = threshold - b_value
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


@dataclass(frozen=True, slots=True)
class DayPoint:
    day: date
    value: float


@dataclass(frozen=True, slots=True)
class Trajectory:
    threshold: float  # effective (scaled when ``scale`` is set)
    scale: float | None
    judgement_path: tuple[DayPoint, ...]  # baseline -> threshold at the due date; () if none
    plan_path: tuple[DayPoint, ...] | None  # the document's baseline -> threshold at due
    met_on: date | None  # first day of the unbroken run of met days up to the last day
    behind_since: date | None  # first day of the unbroken run of behind days up to the last


def _noon(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 12, tzinfo=CST)


def trajectory(
    target: Goal,
    series: Sequence[DayPoint],
    baseline: tuple[date, float] | None,
    scale: float | None,
) -> Trajectory:
    """The paths and marks of one target's chart (``series`` in day order)."""
    threshold = effective_threshold(target, scale)
    judged: tuple[DayPoint, ...] = ()
    if baseline is not None and baseline[0] < target.due:
        judged = (DayPoint(*baseline), DayPoint(target.due, threshold))
    plan = None
    if target.baseline is not None:
        b = target.baseline
        start = b.value if scale is None else b.value * scale
        plan = (DayPoint(b.day, start), DayPoint(target.due, threshold))
    met_on = behind_since = None
    for p in series:
        status = judge(target, p.value, _noon(p.day), baseline, scale).status
        met_on = (met_on or p.day) if status is Status.MET else None
        behind_since = (behind_since or p.day) if status is Status.BEHIND else None
    return Trajectory(threshold, scale, judged, plan, met_on, behind_since)
