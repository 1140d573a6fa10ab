"""The Grafana variable and macro expander used to run panel queries outside Grafana."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from dashboards.macros import (
    Context,
    ExpandError,
    Variable,
    expand_promql,
    expand_sql,
    format_duration,
    parse_duration,
    rfc3339,
)

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 1, 14, 30, 15, 250000, tzinfo=UTC)
CITY = Variable("city", ("370100", "370200"))
SINGLE = Variable("target", ("it's",), multi=False, include_all=False)


def ctx(**kw: object) -> Context:
    base: dict[str, object] = {
        "start": T0,
        "end": T1,
        "interval_s": 300.0,
        "variables": {"city": CITY, "target": SINGLE},
    }
    base.update(kw)
    return Context(**base)  # type: ignore[arg-type]


def test_time_filter_group_and_bounds() -> None:
    out = expand_sql(
        "SELECT $__timeGroupAlias(r.bucket, $__interval), 1 FROM x "
        "WHERE $__timeFilter(r.bucket) AND t < $__timeTo() AND t > $__timeFrom()",
        ctx(),
    )
    assert out == (
        'SELECT floor(extract(epoch from r.bucket)/300)*300 AS "time", 1 FROM x '
        "WHERE r.bucket BETWEEN '2026-11-01T08:00:00Z' AND '2026-11-01T14:30:15.25Z' "
        "AND t < '2026-11-01T14:30:15.25Z' AND t > '2026-11-01T08:00:00Z'"
    )


def test_timescaledb_time_group_uses_time_bucket() -> None:
    assert expand_sql("$__timeGroup(ts, '1h')", ctx(timescaledb=True)) == "time_bucket('3600s',ts)"


def test_multi_value_variables_are_quoted_lists_in_sql_and_regex_in_promql() -> None:
    assert expand_sql("c IN (${city})", ctx()) == "c IN ('370100','370200')"
    assert expand_sql("c IN ($city)", ctx()) == "c IN ('370100','370200')"
    assert expand_sql("c IN ([[city]])", ctx()) == "c IN ('370100','370200')"
    assert expand_sql("'${city:csv}'", ctx()) == "'370100,370200'"
    assert expand_sql("${city:sqlstring}", ctx()) == "'370100','370200'"
    assert expand_promql('x{c=~"${city:regex}"}', ctx()) == 'x{c=~"(370100|370200)"}'
    assert expand_promql('x{c=~"$city"}', ctx()) == 'x{c=~"(370100|370200)"}'


def test_single_value_variable_is_escaped_but_not_quoted() -> None:
    assert expand_sql("t = '${target}'", ctx()) == "t = 'it''s'"


def test_single_selection_of_a_multi_variable_is_still_quoted() -> None:
    c = ctx(variables={"city": Variable("city", ("370100",))})
    assert expand_sql("c IN (${city})", c) == "c IN ('370100')"


def test_builtin_intervals() -> None:
    c = ctx(interval_s=3600.0)
    assert expand_promql("rate(x[$__rate_interval]) $__interval $__interval_ms", c) == (
        "rate(x[3615s]) 1h 3600000"
    )
    assert expand_promql("$__range_s", c) == str(round((T1 - T0).total_seconds()))


def test_errors_name_what_is_unknown() -> None:
    with pytest.raises(ExpandError, match=r"\$nope"):
        expand_sql("x = $nope", ctx())
    with pytest.raises(ExpandError, match="unknown macro"):
        expand_sql("$__timeWarp(x)", ctx())
    with pytest.raises(ExpandError, match="unknown format"):
        expand_sql("${city:klingon}", ctx())
    with pytest.raises(ExpandError, match="not an interval"):
        expand_sql("$__timeGroup(x, soon)", ctx())
    with pytest.raises(ExpandError, match="timezone-aware"):
        Context(start=datetime(2026, 1, 1), end=datetime(2026, 1, 2))  # noqa: DTZ001


def test_durations_and_timestamps() -> None:
    assert parse_duration("'5m'") == 300
    assert parse_duration("1d") == 86400
    assert format_duration(86400) == "1d"
    assert format_duration(90) == "90s"
    assert format_duration(0.5) == "500ms"
    cst = timezone(timedelta(hours=8))
    assert rfc3339(datetime(2026, 1, 1, 8, tzinfo=cst)) == "2026-01-01T00:00:00Z"
