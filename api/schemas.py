"""Public response schemas of the API (separate from the catalog and storage models)."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, Field


class SourceOut(BaseModel):
    document: str = Field(examples=["000"])
    number: str = Field(examples=["数字强省办发〔2024〕5号"])
    title: str
    article: str = Field(examples=["（十五）"])


class TargetOut(BaseModel):
    id: str = Field(examples=["charging-public-piles-2024"])
    sector: str = Field(examples=["charging"])
    name_en: str
    name_zh: str
    kind: str = Field(description="count or ratio", examples=["count"])
    comparator: str = Field(examples=[">"])
    threshold: float = Field(examples=[180000])
    due: date
    binding: bool
    fidelity: str = Field(description="direct, or proxy when only part is measurable here")
    note: str
    source: SourceOut


class CityCoverageOut(BaseModel):
    city_code: str = Field(examples=["370200"])
    name_en: str = Field(examples=["Qingdao"])
    name_zh: str = Field(examples=["青岛"])
    numerator: int = Field(description="assets counted (connected, matching the target)")
    denominator: int = Field(description="assets registered that the target applies to")
    value: float | None = Field(description="count, or ratio 0..1; null when nothing applies")


class CoverageOut(BaseModel):
    target_id: str
    kind: str
    comparator: str
    threshold: float
    due: date
    as_of: datetime
    value: float | None = Field(description="province-wide value")
    numerator: int
    denominator: int
    met: bool = Field(description="province-wide value satisfies the threshold")
    cities: list[CityCoverageOut]


class Problem(BaseModel):
    """Error body of every non-2xx answer."""

    error: str = Field(examples=["not_found"])
    detail: str = Field(examples=["unknown target 'x'"])


class Health(BaseModel):
    status: str = Field(examples=["ok"])
    checks: dict[str, str] = Field(default_factory=dict)
