"""Public response schemas of the API (separate from the catalog and storage models)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class SourceOut(BaseModel):
    document: str = Field(examples=["000"])
    number: str = Field(examples=["数字强省办发〔2024〕5号"])
    title: str
    article: str = Field(examples=["（十五）"])


class BaselineOut(BaseModel):
    day: date = Field(examples=["2020-12-31"])
    value: float = Field(description="as the document gives it (not scaled)", examples=[31000])
    source: str = Field(examples=["山东省“十四五”数字强省建设规划, 主要指标表，2020年（3.1万个）"])


class TargetOut(BaseModel):
    id: str = Field(examples=["charging-public-piles-2024"])
    sector: str = Field(examples=["charging"])
    name_en: str = Field(examples=["Public charging piles connected to the provincial platform"])
    name_zh: str = Field(examples=["接入全省充电一张网的公共充电桩"])
    kind: str = Field(description="count or ratio", examples=["count"])
    comparator: str = Field(examples=[">"])
    threshold: float = Field(examples=[180000])
    due: date = Field(examples=["2024-12-31"])
    binding: bool
    fidelity: str = Field(description="direct, or proxy when only part is measurable here")
    note: str
    source: SourceOut
    baseline: BaselineOut | None = Field(
        description="a figure a document gives for an earlier day, with its source: the start "
        "of the plan's own path (GET /v1/trajectories)"
    )
    source_kind: str = Field(
        default="measured",
        description="measured (from this platform's telemetry); reported targets are listed "
        "by GET /v1/reported",
    )
    reported: list[str] = Field(
        default_factory=list,
        description="ids of reported targets giving the province's own figure for what this "
        "target measures as a proxy (GET /v1/reported/{id}); judged separately",
    )


class JudgementOut(BaseModel):
    """How the status was judged (docs/api.md, "Status against the due date")."""

    status: str = Field(
        description="met, on_track, at_risk, behind, or no_data", examples=["at_risk"]
    )
    basis: str = Field(
        description="threshold (met or past due), trajectory, no_history, or no_data",
        examples=["trajectory"],
    )
    today: date = Field(description="the day judged, China Standard Time")
    days_left: int = Field(description="days until the due date; negative once passed")
    baseline_day: date | None = Field(description="first observed day of the trajectory")
    baseline_value: float | None
    expected_now: float | None = Field(description="the trajectory's value today")
    shortfall: float | None = Field(
        description="(expected - value) / (threshold - baseline): 0.05 = 5 % of the way behind"
    )
    explanation: str = Field(
        examples=[
            "13 towards > 180,000 by 2024-12-31, 40 days left; the linear trajectory from 9 "
            "on 2024-09-30 expects 123,000 today; shortfall 68.3% of the way"
        ]
    )


class CityCoverageOut(BaseModel):
    city_code: str = Field(examples=["370200"])
    name_en: str = Field(examples=["Qingdao"])
    name_zh: str = Field(examples=["青岛"])
    numerator: int = Field(description="assets counted (connected, matching the target)")
    denominator: int = Field(description="assets registered that the target applies to")
    value: float | None = Field(description="count, or ratio 0..1; null when nothing applies")
    judgement: JudgementOut | None = Field(
        description="status of this city against the threshold (ratio targets only: a count "
        "threshold is province-wide)"
    )


class CoverageOut(BaseModel):
    target_id: str = Field(examples=["charging-public-piles-2024"])
    sector: str = Field(examples=["charging"])
    kind: str = Field(examples=["count"])
    comparator: str = Field(examples=[">"])
    threshold: float = Field(description="as the source document writes it", examples=[180000])
    threshold_effective: float = Field(
        description="the threshold the value is compared with: ``threshold * scale`` when "
        "scaled, else ``threshold``",
        examples=[3600],
    )
    scaled: bool = Field(
        description="the registry is a simulated share of the province and this count target "
        "is compared with its threshold scaled by that share (docs/targets.md)"
    )
    scale: float | None = Field(
        description="the simulated share of the province the threshold is scaled by; null "
        "when not scaled (a real registry, or a ratio target)",
        examples=[0.02],
    )
    due: date = Field(examples=["2024-12-31"])
    as_of: datetime = Field(description="when the snapshot was computed")
    area: list[str] = Field(
        description="what the top-level figures cover: ['370000'] for the province, else the "
        "city codes the caller may see",
        examples=[["370000"]],
    )
    value: float | None = Field(description="value over the area")
    numerator: int
    denominator: int
    met: bool = Field(description="the value satisfies the (effective) threshold")
    judgement: JudgementOut
    cities: list[CityCoverageOut]
    source_kind: str = Field(
        default="measured",
        description="measured: computed from telemetry (its age is as_of's); reported figures "
        "are in GET /v1/reported",
    )


class SeriesPointOut(BaseModel):
    day: date
    numerator: int
    denominator: int
    value: float | None
    met: bool


class CoverageSeriesOut(BaseModel):
    target_id: str = Field(examples=["substation-220kv-monitoring-2024"])
    city_code: str = Field(description="370000 = province", examples=["370000"])
    start: date
    end: date
    threshold: float
    threshold_effective: float = Field(description="what ``met`` compares with (CoverageOut)")
    scaled: bool
    scale: float | None
    comparator: str
    due: date
    points: list[SeriesPointOut] = Field(description="one per day with a stored value")
    source_kind: str = Field(
        default="measured",
        description="measured (telemetry, one value per day); a reported target's figures are "
        "in GET /v1/reported/{id}, each with its day and age",
    )


class DayValueOut(BaseModel):
    day: date
    value: float


class SeriesDayOut(DayValueOut):
    synthetic: bool = Field(
        description="backfilled by the simulation for a day before the platform ran "
        "(a modelled history), not measured"
    )


class TrajectoryOut(BaseModel):
    """One target's chart: its daily values against the threshold, the path the judgement
    uses, the plan's own path, and the day it was met or fell behind (docs/api.md,
    "Trajectories")."""

    target_id: str = Field(examples=["charging-networked-2025"])
    city: str | None = Field(description="the city code, or null for the province")
    kind: str = Field(examples=["count"])
    unit: str = Field(description="what the value counts", examples=["devices"])
    comparator: str = Field(examples=[">="])
    threshold: float = Field(description="as the source document writes it")
    threshold_effective: float = Field(description="what the values are compared with")
    scaled: bool = Field(description="thresholds and paths scaled to the simulated share")
    scale: float | None = Field(description="that share, or null", examples=[0.02])
    due: date
    status: str = Field(
        description="the judgement now (met, on_track, at_risk, behind, no_data), as in "
        "/v1/coverage",
        examples=["met"],
    )
    explanation: str
    source_kind: str = Field(
        default="measured",
        description="measured (telemetry); reported targets: GET /v1/reported/{id}",
    )
    series: list[SeriesDayOut] = Field(description="one per day with a value (coverage_daily)")
    judgement_path: list[DayValueOut] = Field(
        description="first observed value -> effective threshold at the due date (ADR 0005); "
        "empty when the first observation is not before the due date or for a city's count"
    )
    plan_path: list[DayValueOut] | None = Field(
        description="the document's baseline -> effective threshold at the due date (scaled "
        "like the threshold); null without a baseline in the catalog"
    )
    baseline: BaselineOut | None = Field(description="the catalog's baseline and its source")
    met_on: date | None = Field(
        description="first day of the unbroken run of met days that lasts to the last day"
    )
    behind_since: date | None = Field(
        description="first day of the unbroken run of behind days that lasts to the last day"
    )
    as_of: datetime = Field(description="when the snapshot giving the status was computed")


class PageOut(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        description="pass as ?cursor= for the next page; null on the last page"
    )


class DeviceOut(BaseModel):
    device_id: str = Field(examples=["CHG-370200-0001-01"])
    site_id: str = Field(examples=["CHG-370200-0001"])
    kind: str = Field(examples=["charging_pile"])
    sector: str = Field(examples=["charging"])
    city_code: str = Field(examples=["370200"])
    state: str = Field(description="online, offline or never_seen", examples=["online"])
    last_seen: datetime | None = Field(description="newest valid reading; null if never seen")
    expected_interval_s: float = Field(
        description="silent longer than this = offline", examples=[120]
    )


class SiteOut(BaseModel):
    site_id: str = Field(examples=["SUB-370100-0003"])
    name: str
    sector: str = Field(examples=["substation"])
    city_code: str = Field(examples=["370100"])
    attributes: dict[str, bool | int] = Field(
        examples=[{"voltage_kv": 500, "gis": True, "one_key_control": True}]
    )
    state: str = Field(
        description="online (a device online), offline (seen, none online now), never_seen"
    )
    devices: int
    online: int
    offline: int
    never_seen: int
    last_seen: datetime | None


class ReadingOut(BaseModel):
    """One raw reading (n = 1, min = max = avg = last = the value) or one rollup bucket."""

    ts: datetime = Field(description="reading time, or bucket start")
    metric: str = Field(examples=["power_kw"])
    n: int = Field(description="readings in the bucket (1 for raw)")
    min: float
    max: float
    avg: float
    last: float = Field(description="value of the newest reading in the bucket")
    quality: int | None = Field(description="raw readings only")


class ReadingsPageOut(BaseModel):
    device_id: str
    resolution: str = Field(examples=["1m"])
    start: datetime
    end: datetime
    items: list[ReadingOut]
    next_cursor: str | None


class GapOut(BaseModel):
    agent_id: str = Field(examples=["agent-charging-370200"])
    boot_id: str
    gap_no: int | None = Field(
        description="counts up within a boot; (agent, boot, gap_no) is unique"
    )
    device_id: str | None = Field(description="null when many or unknown devices lost data")
    city_code: str | None
    sector: str | None
    start_ts: datetime
    end_ts: datetime
    dropped_readings: int
    reason: str = Field(examples=["buffer_full"])
    received_at: datetime


class PipelineOut(BaseModel):
    newest_reading: datetime | None = Field(description="newest valid reading of any device")
    freshness_s: float | None = Field(
        description="seconds between that reading and devices_checked_at"
    )
    devices_checked_at: datetime = Field(
        description="when newest_reading and the device counts were read: every "
        "api.lag_refresh_s (10 s), as the lag; they read every device"
    )
    devices: int
    online: int
    never_seen: int
    lag_records: int | None = Field(
        description="Kafka records not yet committed by the ingest consumer group"
    )
    lag_checked_at: datetime | None
    lag_note: str
    snapshot_computed_in_s: float
    history_note: str


class CityOut(BaseModel):
    code: str = Field(examples=["370200"])
    name_en: str = Field(examples=["Qingdao"])
    name_zh: str = Field(examples=["青岛"])
    lat: float
    lon: float


class TargetNameOut(BaseModel):
    id: str
    name_en: str
    name_zh: str


class SimulationOut(BaseModel):
    """The registry is a simulation of part of the province (docs/targets.md)."""

    shares: dict[str, float] = Field(
        description="the share of the province simulated, per sector ('all': every sector's "
        "devices); count thresholds are compared scaled by it",
        examples=[{"charging": 0.02, "substation": 0.0232, "ranch": 0.3333, "all": 0.02}],
    )
    note: str = Field(
        examples=[
            "The registry is a simulation of 2.0 % of Shandong's charging stations, ... : "
            "count thresholds are compared scaled by the same share (marked scaled)."
        ]
    )


class OperatorHealthOut(BaseModel):
    """A T/CEC 102 operator's link (docs/adr/0015-tcec102.md)."""

    operator_id: str
    name: str
    connectors: int = Field(description="connectors linked to registry piles")
    healthy: bool = Field(
        description="an accepted push or a successful pull within twice the pull interval: "
        "its piles count as connected unless their last status is offline"
    )
    last_push: datetime | None
    last_pull: datetime | None
    token_expires_at: datetime | None = Field(description="of the last token we issued it")
    failures: int = Field(description="refused requests and failed pulls, in all")
    last_failure: datetime | None
    last_failure_reason: str


class StatusOut(BaseModel):
    """Everything the status page shows, in one answer (also pushed as SSE ``status``)."""

    version: int = Field(description="snapshot number, increasing")
    as_of: datetime
    refresh_s: float
    cities: list[CityOut]
    targets: list[TargetNameOut]
    coverage: list[CoverageOut]
    pipeline: PipelineOut
    simulation: SimulationOut | None = Field(
        description="null for a real registry; else the simulated share of the province"
    )
    operators: list[OperatorHealthOut] = Field(
        default_factory=list, description="charging operators connected over T/CEC 102"
    )


class ApiKeyOut(BaseModel):
    key_id: str = Field(examples=["3f9a0c1b7d2e"])
    name: str
    scopes: list[str]
    cities: list[str]
    sectors: list[str]
    rate_per_s: float | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class Problem(BaseModel):
    """Error body of every non-2xx answer."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"error": "not_found", "detail": "unknown target 'x'"}]}
    )

    error: str = Field(examples=["not_found"])
    detail: str = Field(examples=["unknown target 'x'"])


class Health(BaseModel):
    status: str = Field(examples=["ok"])
    checks: dict[str, str] = Field(default_factory=dict)


# -- reported figures (docs/reported.md) ----------------------------------------------------
class ReportedFigureOut(BaseModel):
    """One reported figure with its provenance and age."""

    value: float = Field(description="count, or ratio 0..1", examples=[243000])
    as_of: date = Field(description="the day the figure is for (统计日期)")
    age_days: int = Field(description="days between as_of and today (China Standard Time)")
    stale: bool = Field(
        description="older than the target's reporting interval: a newer figure was due, so "
        "this one is not current"
    )
    reporter: str = Field(examples=["省通信管理局"])
    reported_on: date
    source: str = Field(description="the document or notice the figure comes from")
    note: str
    simulated: bool = Field(description="made up by the simulation (qilu run), not reported")


class ReportedAreaOut(BaseModel):
    source_kind: str = Field(default="reported", description="always reported")
    area: str = Field(description="a city's code, or 370000 for the province")
    name_en: str
    name_zh: str
    value: float | None
    basis: str = Field(
        description="reported (a figure for this area), sum_of_cities (a count reported per "
        "city, summed), or no_data"
    )
    freshness: str = Field(description="current, stale, or no_data")
    figure: ReportedFigureOut | None = Field(
        description="the newest figure (for the province "
        "when summed: the oldest of the cities' newest figures)"
    )
    judgement: JudgementOut | None = Field(
        description="against the threshold (the province; cities for ratio targets only)"
    )


class ReportedTargetOut(BaseModel):
    id: str = Field(examples=["telecom-5g-stations-2024"])
    source_kind: str = Field(default="reported", description="always reported")
    sector: str = Field(examples=["telecom"])
    name_en: str
    name_zh: str
    kind: str
    comparator: str
    threshold: float
    due: date
    binding: bool
    note: str
    unit_en: str
    unit_zh: str
    reporter: str = Field(description="the body that reports the figure")
    interval_days: int = Field(description="the reporting interval: older figures are stale")
    per_city: bool
    measured: str | None = Field(
        description="the measured target that is this figure's proxy on the platform"
    )
    source: SourceOut
    baseline: BaselineOut | None
    province: ReportedAreaOut
    cities: list[ReportedAreaOut]


class ReportedOut(BaseModel):
    as_of: datetime = Field(description="when this answer was computed")
    targets: list[ReportedTargetOut]


class ReportedAreaFigureOut(ReportedFigureOut):
    area: str


class ReportedHistoryOut(BaseModel):
    target: ReportedTargetOut
    figures: list[ReportedAreaFigureOut] = Field(description="every figure, oldest first")
