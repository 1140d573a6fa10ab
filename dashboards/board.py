"""A thin layer over the SDK's dashboard builder that records every query a dashboard sends.

Each dashboard module builds panels with the SDK's own panel builders and adds them through
:class:`Board`, which attaches the data source and targets and keeps a list of the queries
(SQL with its declared result columns, PromQL) so tests can run each one for real.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from grafana_foundation_sdk.builders import dashboard as bdash
from grafana_foundation_sdk.builders import prometheus as bprom
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard as gdash

from dashboards.model import PG, PROM, SqlQueryBuilder, SqlSpec

REF_IDS = "ABCDEFGHIJ"


@dataclass(frozen=True, slots=True)
class PromSpec:
    """One PromQL target; ``legend`` is Grafana's legend format (``{{label}}``)."""

    expr: str
    legend: str = ""


@dataclass(frozen=True, slots=True)
class PanelQuery:
    """Where a query lives (dashboard, panel, ref id) and what it is."""

    dashboard: str
    panel: str
    panel_type: str
    ref_id: str
    query: SqlSpec | PromSpec


@dataclass
class BuiltDashboard:
    uid: str
    title: str
    model: gdash.Dashboard
    queries: list[PanelQuery] = field(default_factory=list)

    @property
    def sql(self) -> list[PanelQuery]:
        return [q for q in self.queries if isinstance(q.query, SqlSpec)]

    @property
    def promql(self) -> list[PanelQuery]:
        return [q for q in self.queries if isinstance(q.query, PromSpec)]


class PanelBuilder(Protocol):
    """What every SDK panel builder offers (timeseries, table, stat, geomap, ...)."""

    def with_target(self, target: cogbuilder.Builder[cogvariants.Dataquery]) -> Any: ...
    def datasource(self, datasource: gdash.DataSourceRef) -> Any: ...
    def build(self) -> gdash.Panel: ...


def thresholds(*steps: tuple[float | None, str]) -> bdash.ThresholdsConfig:
    """Absolute thresholds; the first step's value is None (minus infinity)."""
    return (
        bdash.ThresholdsConfig()
        .mode(gdash.ThresholdsMode.ABSOLUTE)
        .steps([gdash.Threshold(value=v, color=c) for v, c in steps])
    )


class Board:
    def __init__(
        self,
        uid: str,
        title: str,
        *,
        description: str,
        tags: Sequence[str],
        time_from: str = "now-24h",
        refresh: str = "1m",
    ) -> None:
        self.uid = uid
        self._queries: list[PanelQuery] = []
        self._builder = (
            bdash.Dashboard(title)
            .uid(uid)
            .description(description)
            .tags(["qilu", *tags])
            .time(time_from, "now")
            .timezone("browser")
            .refresh(refresh)
            .readonly()
            .tooltip(gdash.DashboardCursorSync.CROSSHAIR)
        )

    def variable(
        self, variable: cogbuilder.Builder[gdash.VariableModel], query: SqlSpec | None = None
    ) -> Board:
        """Add a template variable; ``query`` is its SQL when it is a query variable."""
        built = variable.build()
        if query is not None:
            self._queries.append(PanelQuery(self.uid, f"${built.name}", "variable", "query", query))
        self._builder.with_variable(variable)
        return self

    def row(self, title: str) -> Board:
        self._builder.with_row(bdash.Row(title))
        return self

    def sql(self, panel: PanelBuilder, *specs: SqlSpec) -> Board:
        panel.datasource(PG)
        for ref, spec in zip(REF_IDS, specs, strict=False):
            panel.with_target(SqlQueryBuilder(spec, ref))
        self._add(panel, specs)
        return self

    def prom(self, panel: PanelBuilder, *specs: PromSpec) -> Board:
        panel.datasource(PROM)
        for ref, spec in zip(REF_IDS, specs, strict=False):
            target = bprom.Dataquery().expr(spec.expr).ref_id(ref).range()
            if spec.legend:
                target.legend_format(spec.legend)
            panel.with_target(target)
        self._add(panel, specs)
        return self

    def _add(self, panel: PanelBuilder, specs: Sequence[SqlSpec | PromSpec]) -> None:
        if len(specs) > len(REF_IDS):
            raise ValueError("too many queries in one panel")
        built = panel.build()
        title = built.title or "(untitled)"
        if built.options is None:
            # the SDK writes "options": null and then cannot read its own JSON back
            raise ValueError(f"panel {title!r}: set at least one option")
        for ref, spec in zip(REF_IDS, specs, strict=False):
            self._queries.append(PanelQuery(self.uid, title, built.type_val, ref, spec))
        self._builder.with_panel(panel)  # type: ignore[arg-type]

    def build(self) -> BuiltDashboard:
        model = self._builder.build()
        return BuiltDashboard(self.uid, model.title or self.uid, model, list(self._queries))
