"""The target catalog and the 16 cities, loaded from the data files in qilu/data/.

The files are the single source: the API, the coverage computation, the simulator and the
dashboards all read these models. ``targets`` are measured from telemetry; ``reported`` are
targets whose values are figures other bodies report (docs/reported.md). Loading validates
every entry; a broken catalog refuses to load with the offending target id and field.
"""

from __future__ import annotations

import enum
import functools
import tomllib
from datetime import date
from importlib import resources
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from qilu.contract import Sector
from qilu.devices import KINDS
from qilu.errors import ConfigError

SITE_ATTRIBUTES = frozenset(
    {"public", "networked", "voltage_kv", "gis", "one_key_control", "smart", "agri_base"}
)
# The sectors' names (a target's sector may also be "all"): key -> (English, Chinese)
SECTOR_NAMES: dict[str, tuple[str, str]] = {
    Sector.CHARGING.value: ("Charging facilities", "充电设施"),
    Sector.SUBSTATION.value: ("Substations", "变电站"),
    Sector.RANCH.value: ("Ranches", "牧场"),
    "all": ("All sectors", "全部领域"),
}
# The sectors of reported targets (figures other bodies report, docs/reported.md), beside the
# measured sectors above: key -> (English, Chinese)
REPORTED_SECTOR_NAMES: dict[str, tuple[str, str]] = {
    "telecom": ("Telecom networks", "信息通信网络"),
    "computing": ("Data centres and computing", "数据中心与算力"),
    "energy": ("Energy infrastructure", "能源基础设施"),
    "agriculture": ("Agriculture", "农业"),
    "water": ("Water infrastructure", "水利设施"),
    "public": ("Public facilities", "公共设施"),
    **SECTOR_NAMES,
}
ReportedSector = Literal[
    "telecom", "computing", "energy", "agriculture", "water", "public", "charging", "ranch", "all"
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class City(_Frozen):
    code: Annotated[str, Field(pattern=r"^37\d{4}$")]
    name_en: str
    name_zh: str
    weight: float
    lat: float
    lon: float


class TargetKind(enum.StrEnum):
    COUNT = "count"
    RATIO = "ratio"


class Source(_Frozen):
    document: str
    article: str


class Document(_Frozen):
    number: str
    title: str
    date: str


class Baseline(_Frozen):
    """A value a source document gives for an earlier day (e.g. the five-year plan's 2020
    column): where the plan's own path towards the threshold starts."""

    day: date
    value: float
    source: Source


class Measure(_Frozen):
    unit: Literal["device", "site"]
    device_kind: str | None = None
    sector: Sector | None = None
    where: dict[str, bool | int] = Field(default_factory=dict)
    min: dict[str, int] = Field(default_factory=dict)
    numerator: dict[str, bool | int] = Field(default_factory=dict)
    connected: bool = True
    site_rule: Literal["all", "any"] = "any"

    @model_validator(mode="after")
    def _known_names(self) -> Measure:
        if self.device_kind is not None and self.device_kind not in KINDS:
            raise ValueError(f"unknown device_kind {self.device_kind!r}")
        for attr in (*self.where, *self.min, *self.numerator):
            if attr not in SITE_ATTRIBUTES:
                raise ValueError(f"unknown site attribute {attr!r}")
        return self


class Goal(_Frozen):
    """What every target has, measured or reported: a threshold, a due date and a source."""

    id: Annotated[str, Field(pattern=r"^[a-z0-9-]+$")]
    sector: str
    name_en: str
    name_zh: str
    kind: TargetKind
    comparator: Literal[">", ">="]
    threshold: float
    due: date
    binding: bool
    source: Source
    note: str = ""
    baseline: Baseline | None = None

    def met(self, value: float, threshold: float | None = None) -> bool:
        """Whether ``value`` satisfies the threshold (or ``threshold``, e.g. a scaled one)."""
        limit = self.threshold if threshold is None else threshold
        return value > limit if self.comparator == ">" else value >= limit


class Target(Goal):
    """A target measured from telemetry: ``measure`` says what the platform counts."""

    sector: Literal["charging", "substation", "ranch", "all"]
    fidelity: Literal["direct", "proxy"]
    measure: Measure


class ReportedTarget(Goal):
    """A target whose numerator is a statistic another body reports (telecom operators, the
    provincial departments): its values come from audited imports of reported figures, each
    with its reporter, its day and its document (docs/reported.md). A figure older than
    ``interval_days`` (the reporting interval) is stale. ``per_city``: figures come per city
    (the province's figure is then their sum for a count, or a figure of its own).
    ``measured``: the measured target that is this figure's proxy on the platform (both are
    shown, each judged on its own)."""

    sector: ReportedSector
    unit_en: str
    unit_zh: str
    reporter: str  # who reports it (the body), as the document names it
    interval_days: Annotated[int, Field(gt=0)]
    per_city: bool = False
    measured: str | None = None


class Catalog(_Frozen):
    documents: dict[str, Document]
    targets: tuple[Target, ...]  # measured from telemetry
    cities: tuple[City, ...]
    reported: tuple[ReportedTarget, ...] = ()  # reported figures (docs/reported.md)

    @model_validator(mode="after")
    def _consistent(self) -> Catalog:
        ids = [t.id for t in (*self.targets, *self.reported)]
        if len(ids) != len(set(ids)):
            raise ValueError("duplicate target id")
        measured = {t.id for t in self.targets}
        for r in self.reported:
            if r.measured is not None and r.measured not in measured:
                raise ValueError(f"target {r.id}: unknown measured target {r.measured!r}")
        goals: tuple[Goal, ...] = (*self.targets, *self.reported)
        for t in goals:
            if t.source.document not in self.documents:
                raise ValueError(f"target {t.id}: unknown source document {t.source.document!r}")
            b = t.baseline
            if b is not None and b.source.document not in self.documents:
                raise ValueError(
                    f"target {t.id}: unknown baseline source document {b.source.document!r}"
                )
            if b is not None and b.day >= t.due:
                raise ValueError(f"target {t.id}: baseline day {b.day} is not before the due date")
        if len(self.cities) != 16 or len({c.code for c in self.cities}) != 16:
            raise ValueError("the catalog must list Shandong's 16 cities exactly once each")
        return self

    def target(self, target_id: str) -> Target | None:
        return next((t for t in self.targets if t.id == target_id), None)

    def reported_target(self, target_id: str) -> ReportedTarget | None:
        return next((t for t in self.reported if t.id == target_id), None)

    def reported_for(self, measured_id: str) -> tuple[ReportedTarget, ...]:
        """The reported figures whose measured proxy is ``measured_id``."""
        return tuple(r for r in self.reported if r.measured == measured_id)

    def cite(self, source: Source) -> str:
        """A source as one line: document number, title and article."""
        doc = self.documents[source.document]
        number = f"{doc.number} " if doc.number else ""
        return f"{number}{doc.title}, {source.article}"

    @property
    def city_codes(self) -> tuple[str, ...]:
        return tuple(c.code for c in self.cities)


def _read(name: str) -> dict[str, Any]:
    return tomllib.loads(resources.files("qilu.data").joinpath(name).read_text("utf-8"))


@functools.cache
def load_catalog() -> Catalog:
    targets = _read("targets.toml")
    cities = _read("cities.toml")
    try:
        return Catalog(
            documents=targets["documents"],
            targets=targets["target"],
            cities=cities["city"],
            reported=targets.get("reported", []),
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError("catalog." + ".".join(map(str, err["loc"])), err["msg"]) from exc
