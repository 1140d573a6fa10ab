"""The target catalog and the 16 cities, loaded from the data files in qilu/data/.

The files are the single source: the API, the coverage computation, the simulator and the
dashboards all read these models. Loading validates every entry; a broken catalog refuses to
load with the offending target id and field.
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


class Target(_Frozen):
    id: Annotated[str, Field(pattern=r"^[a-z0-9-]+$")]
    sector: Literal["charging", "substation", "ranch", "all"]
    name_en: str
    name_zh: str
    kind: TargetKind
    comparator: Literal[">", ">="]
    threshold: float
    due: date
    binding: bool
    source: Source
    fidelity: Literal["direct", "proxy"]
    note: str = ""
    baseline: Baseline | None = None
    measure: Measure

    def met(self, value: float, threshold: float | None = None) -> bool:
        """Whether ``value`` satisfies the threshold (or ``threshold``, e.g. a scaled one)."""
        limit = self.threshold if threshold is None else threshold
        return value > limit if self.comparator == ">" else value >= limit


class Catalog(_Frozen):
    documents: dict[str, Document]
    targets: tuple[Target, ...]
    cities: tuple[City, ...]

    @model_validator(mode="after")
    def _consistent(self) -> Catalog:
        ids = [t.id for t in self.targets]
        if len(ids) != len(set(ids)):
            raise ValueError("duplicate target id")
        for t in self.targets:
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
            documents=targets["documents"], targets=targets["target"], cities=cities["city"]
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError("catalog." + ".".join(map(str, err["loc"])), err["msg"]) from exc
