"""A small expander of Grafana's template variables and SQL macros (queries run outside Grafana).

Grafana turns a panel's query into the statement the database sees in two steps, and this module
does the same so tests (and ``qilu dashboards query``) can run every panel and alert query
against a real database:

1. **Template variables** (Grafana's front end): ``$name``, ``${name}``, ``${name:format}`` and
   ``[[name]]``, plus the built-ins ``$__interval``, ``$__interval_ms``, ``$__rate_interval``,
   ``$__range``, ``$__range_s``. Multi-value and "All" selections are rendered like Grafana does:
   for SQL data sources each value is quoted as a string literal and the values are joined with
   commas (``'370100','370200'``, for ``IN (${city})``) when the variable is multi-value or has
   "All"; a single-value variable is inserted with quotes doubled but unquoted. For Prometheus a
   multi-value variable becomes a regex alternation ``(a|b)``. Explicit formats: ``csv``,
   ``sqlstring``, ``singlequote``, ``doublequote``, ``pipe``, ``regex``, ``raw``, ``json``,
   ``text``. An unknown variable or format is an error, so a typo fails loudly.
2. **SQL macros** (Grafana's PostgreSQL back end), with the time range in UTC and RFC 3339:
   ``$__time(c)``, ``$__timeEpoch(c)``, ``$__timeFilter(c)`` (``c BETWEEN 'from' AND 'to'``),
   ``$__timeFrom()``, ``$__timeTo()``, ``$__timeGroup(c, interval)`` and
   ``$__timeGroupAlias(c, interval)`` (``floor(extract(epoch from c)/N)*N``, or
   ``time_bucket('Ns', c)`` when the data source has TimescaleDB enabled),
   ``$__unixEpochFilter(c)``,
   ``$__unixEpochFrom()``, ``$__unixEpochTo()``. An unknown macro is an error.

The expansions follow Grafana's documented behaviour for the PostgreSQL and Prometheus data
sources (Grafana 10/11); they are not Grafana's code, and the Grafana-specific fill option of
``$__timeGroup`` (gap filling) is not supported: our panels do not use it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

Dialect = Literal["sql", "promql"]

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_DURATION = re.compile(r"^\s*'?\s*(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)\s*'?\s*$")
_VAR = re.compile(
    r"\$\{(?P<braced>\w+)(?::(?P<fmt>\w+))?\}"  # ${name} / ${name:format}
    r"|\[\[(?P<bracket>\w+)(?::(?P<fmt2>\w+))?\]\]"  # [[name]] (deprecated form)
    r"|\$(?P<plain>\w+)(?!\w)(?!\()"  # $name, but not a macro call $__name(
)
_MACRO = re.compile(r"\$__(?P<name>\w+)\((?P<args>[^()]*)\)")


class ExpandError(ValueError):
    """A query refers to a variable, format or macro this expander (and Grafana) would not know."""


@dataclass(frozen=True, slots=True)
class Variable:
    """A dashboard variable as the user left it: its selected values (all of them for "All")."""

    name: str
    values: tuple[str, ...]
    multi: bool = True
    include_all: bool = True


@dataclass(frozen=True, slots=True)
class Context:
    """The dashboard state a query is expanded in."""

    start: datetime
    end: datetime
    interval_s: float = 60.0  # what Grafana computes from the range and the panel width
    variables: Mapping[str, Variable] | None = None
    timescaledb: bool = False  # the data source's "TimescaleDB" switch (time_bucket)

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ExpandError("the time range must be timezone-aware")
        if self.end <= self.start:
            raise ExpandError("the time range must end after it starts")

    @property
    def range_s(self) -> float:
        return (self.end - self.start).total_seconds()

    @property
    def rate_interval_s(self) -> float:
        # Grafana: max($__interval + scrape interval, 4 * scrape interval); 15 s scrapes assumed
        return max(self.interval_s + 15.0, 60.0)


def parse_duration(text: str) -> float:
    """Grafana interval text (``'5m'``, ``1h``, ``30s``) -> seconds."""
    m = _DURATION.match(text)
    if not m:
        raise ExpandError(f"not an interval: {text!r} (expected e.g. 30s, 5m, 1h, 1d)")
    return float(m[1]) * _UNITS[m[2]]


def format_duration(seconds: float) -> str:
    """Seconds -> the largest exact Grafana unit (``3600`` -> ``1h``), as ``$__interval`` prints."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    for unit in ("w", "d", "h", "m"):
        size = _UNITS[unit]
        if seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds)}s"


def rfc3339(ts: datetime) -> str:
    """UTC, RFC 3339, fractional seconds without trailing zeros (Go's RFC3339Nano)."""
    text = ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if ts.microsecond:
        text += f".{ts.microsecond:06d}".rstrip("0")
    return text + "Z"


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _regex_escape(value: str) -> str:
    return re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\1", value)


def _format(var: Variable, fmt: str | None, dialect: Dialect) -> str:
    values = var.values
    if not values:
        raise ExpandError(f"variable {var.name!r} has no selected value")
    listy = var.multi or var.include_all
    if fmt is None:
        if dialect == "sql":
            if listy:
                return ",".join(_sql_literal(v) for v in values)
            return values[0].replace("'", "''")
        if listy and len(values) > 1:
            return "(" + "|".join(_regex_escape(v) for v in values) + ")"
        return _regex_escape(values[0]) if listy else values[0].replace('"', '\\"')
    formats = {
        "csv": lambda: ",".join(values),
        "sqlstring": lambda: ",".join(_sql_literal(v) for v in values),
        "singlequote": lambda: ",".join("'" + v.replace("'", "\\'") + "'" for v in values),
        "doublequote": lambda: ",".join('"' + v.replace('"', '\\"') + '"' for v in values),
        "pipe": lambda: "|".join(values),
        "regex": lambda: (
            "(" + "|".join(_regex_escape(v) for v in values) + ")"
            if len(values) > 1
            else _regex_escape(values[0])
        ),
        "raw": lambda: ",".join(values),
        "text": lambda: " + ".join(values),
        "json": lambda: json.dumps(list(values)),
    }
    if fmt not in formats:
        raise ExpandError(f"variable {var.name!r}: unknown format {fmt!r}")
    return formats[fmt]()


def _builtin(name: str, ctx: Context) -> str | None:
    return {
        "__interval": format_duration(ctx.interval_s),
        "__interval_ms": str(round(ctx.interval_s * 1000)),
        "__rate_interval": format_duration(ctx.rate_interval_s),
        "__range": format_duration(ctx.range_s),
        "__range_s": str(round(ctx.range_s)),
        "__range_ms": str(round(ctx.range_s * 1000)),
    }.get(name)


def expand_variables(query: str, ctx: Context, dialect: Dialect = "sql") -> str:
    """Step 1: template variables and built-in intervals."""
    variables = ctx.variables or {}

    def sub(m: re.Match[str]) -> str:
        name = m["braced"] or m["bracket"] or m["plain"]
        fmt = m["fmt"] or m["fmt2"]
        builtin = _builtin(name, ctx)
        if builtin is not None:
            return builtin
        if name.startswith("__"):
            return m[0]  # a back-end macro or global handled later (e.g. $__timeFilter)
        if name not in variables:
            raise ExpandError(f"unknown template variable ${name}")
        return _format(variables[name], fmt, dialect)

    return _VAR.sub(sub, query)


def _args(text: str) -> list[str]:
    return [a.strip() for a in text.split(",")] if text.strip() else []


def _time_group(args: Sequence[str], ctx: Context) -> str:
    if len(args) < 2:
        raise ExpandError("$__timeGroup needs a column and an interval")
    if len(args) > 2:
        raise ExpandError("$__timeGroup gap filling (third argument) is not supported")
    col, seconds = args[0], parse_duration(args[1])
    if ctx.timescaledb:
        return f"time_bucket('{seconds:.0f}s',{col})"
    n = f"{seconds:g}"
    return f"floor(extract(epoch from {col})/{n})*{n}"


def expand_macros(query: str, ctx: Context) -> str:
    """Step 2: the PostgreSQL data source's ``$__`` macros."""
    t0, t1 = rfc3339(ctx.start), rfc3339(ctx.end)
    e0, e1 = math.floor(ctx.start.timestamp()), math.floor(ctx.end.timestamp())

    def one(name: str, args: list[str]) -> str:  # noqa: PLR0911 - one return per macro
        def col() -> str:
            if len(args) != 1:
                raise ExpandError(f"$__{name} takes one column, got {len(args)} arguments")
            return args[0]

        if name == "time":
            return f'{col()} AS "time"'
        if name == "timeEpoch":
            return f'extract(epoch from {col()}) AS "time"'
        if name == "timeFilter":
            return f"{col()} BETWEEN '{t0}' AND '{t1}'"
        if name == "timeFrom":
            return f"'{t0}'"
        if name == "timeTo":
            return f"'{t1}'"
        if name == "timeGroup":
            return _time_group(args, ctx)
        if name == "timeGroupAlias":
            return _time_group(args, ctx) + ' AS "time"'
        if name == "unixEpochFilter":
            c = col()
            return f"{c} >= {e0} AND {c} <= {e1}"
        if name == "unixEpochFrom":
            return str(e0)
        if name == "unixEpochTo":
            return str(e1)
        raise ExpandError(f"unknown macro $__{name}")

    out = _MACRO.sub(lambda m: one(m["name"], _args(m["args"])), query)
    if "$" in out:
        leftover = re.search(r"\$\w*", out)
        raise ExpandError(f"unexpanded {leftover[0] if leftover else '$'} in query")
    return out


def expand_sql(query: str, ctx: Context) -> str:
    """A panel's raw SQL -> the statement Grafana's PostgreSQL data source would run."""
    return expand_macros(expand_variables(query, ctx, "sql"), ctx)


def expand_promql(query: str, ctx: Context) -> str:
    """A panel's PromQL -> the expression Grafana would send to Prometheus."""
    out = expand_variables(query, ctx, "promql")
    if re.search(r"\$\w", out):
        raise ExpandError(f"unexpanded variable in {out!r}")
    return out
