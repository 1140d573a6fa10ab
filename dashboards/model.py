"""The pieces every dashboard and alert is made of: data source references, the SQL query model
the SDK lacks, and the declared result shape of each query (checked against the real database).

grafana-foundation-sdk ships query models for Prometheus, Loki, BigQuery and others but none
for Grafana's PostgreSQL data source, so :class:`SqlQuery` implements the SDK's ``Dataquery``
variant interface (``to_json`` / ``from_json``) and is registered with the SDK runtime under the
data source's plugin id: a dashboard JSON read back with ``Dashboard.from_json`` then decodes
its SQL targets into this model instead of the SDK's untyped ``UnknownDataquery``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Literal, Self

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import plugins as cogplugins
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard as gdash

# Data sources, provisioned by the same code (dashboards/provisioning.py) with these uids.
PG_TYPE = "grafana-postgresql-datasource"
PG_UID = "qilu-timescaledb"
PROM_TYPE = "prometheus"
PROM_UID = "qilu-prometheus"
EXPR_UID = "__expr__"  # Grafana's server-side expressions (alert conditions)

PG = gdash.DataSourceRef(type_val=PG_TYPE, uid=PG_UID)
PROM = gdash.DataSourceRef(type_val=PROM_TYPE, uid=PROM_UID)

SqlFormat = Literal["table", "time_series"]


class ColType(enum.StrEnum):
    """What a panel needs of a result column (PostgreSQL types are mapped onto these)."""

    TIME = "time"  # timestamptz: the x axis of a time series
    NUMBER = "number"  # any integer, float or numeric
    TEXT = "text"  # labels, names, codes
    DATE = "date"


@dataclass(frozen=True, slots=True)
class SqlSpec:
    """One SQL query as a panel or alert sends it, with the columns it must return in order."""

    sql: str
    columns: tuple[tuple[str, ColType], ...]
    format: SqlFormat = "table"

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)


class SqlQuery(cogvariants.Dataquery):
    """A raw-SQL target of Grafana's PostgreSQL data source (``editorMode: code``)."""

    def __init__(
        self,
        ref_id: str = "A",
        raw_sql: str = "",
        format_val: str = "table",
        datasource: gdash.DataSourceRef | None = None,
        hide: bool | None = None,
    ) -> None:
        self.ref_id = ref_id
        self.raw_sql = raw_sql
        self.format_val = format_val
        self.datasource = datasource
        self.hide = hide

    def to_json(self) -> dict[str, object]:
        payload: dict[str, object] = {
            "refId": self.ref_id,
            "rawSql": self.raw_sql,
            "format": self.format_val,
            "rawQuery": True,
            "editorMode": "code",
        }
        if self.datasource is not None:
            payload["datasource"] = self.datasource
        if self.hide is not None:
            payload["hide"] = self.hide
        return payload

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        ds = data.get("datasource")
        return cls(
            ref_id=data.get("refId", "A"),
            raw_sql=data.get("rawSql", ""),
            format_val=data.get("format", "table"),
            datasource=gdash.DataSourceRef.from_json(ds) if isinstance(ds, dict) else None,
            hide=data.get("hide"),
        )


class SqlQueryBuilder(cogbuilder.Builder[SqlQuery]):
    def __init__(self, spec: SqlSpec, ref_id: str = "A") -> None:
        self._internal = SqlQuery(
            ref_id=ref_id, raw_sql=spec.sql, format_val=spec.format, datasource=PG
        )

    def build(self) -> SqlQuery:
        return self._internal


_registered = False


def register_sdk_variants() -> None:
    """Register the SDK's own plugins and our SQL query model (idempotent)."""
    global _registered  # noqa: PLW0603 - the SDK's runtime is a process-wide registry
    if _registered:
        return
    cogplugins.register_default_plugins()
    cogruntime.register_dataquery_variant(
        cogruntime.DataqueryConfig(identifier=PG_TYPE, from_json_hook=SqlQuery.from_json)
    )
    _registered = True
