"""Device kinds as data: a frozen table of what each kind measures, how often, and in what range.

One generic path turns these descriptions into validation (ingest), liveness ("connected" means
a valid reading within ``expected_interval_s``), simulation, metrics and panels. Adding a kind is
adding a row here, not code elsewhere.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from qilu.contract import Sector


class MetricKind(enum.StrEnum):
    GAUGE = "gauge"  # a level that goes up and down
    COUNTER = "counter"  # monotonically increasing total (energy)
    STATE = "state"  # an enumerated status code
    ALARM = "alarm"  # 0 = normal, 1 = alarm; alarms are kept longest at the edge


@dataclass(frozen=True, slots=True)
class MetricSpec:
    key: str
    unit: str
    kind: MetricKind
    low: float  # valid range: readings outside it are rejected as implausible
    high: float
    description: str


@dataclass(frozen=True, slots=True)
class DeviceKind:
    key: str
    sector: Sector
    name_en: str
    name_zh: str
    interval_s: float  # nominal reporting interval of a healthy device
    expected_interval_s: float  # liveness window: silent longer than this = not connected
    metrics: tuple[MetricSpec, ...]

    def metric(self, key: str) -> MetricSpec | None:
        for m in self.metrics:
            if m.key == key:
                return m
        return None


G, C, S, A = MetricKind.GAUGE, MetricKind.COUNTER, MetricKind.STATE, MetricKind.ALARM

# OCPP 1.6 ChargePointStatus, as integer codes on the wire
CONNECTOR_STATES = (
    "Available",
    "Preparing",
    "Charging",
    "SuspendedEVSE",
    "SuspendedEV",
    "Finishing",
    "Reserved",
    "Unavailable",
    "Faulted",
)

DEVICE_KINDS: tuple[DeviceKind, ...] = (
    DeviceKind(
        "charging_pile",
        Sector.CHARGING,
        "Charging pile",
        "充电桩",
        30,
        120,
        (
            MetricSpec(
                "connector_status",
                "",
                S,
                0,
                len(CONNECTOR_STATES) - 1,
                "OCPP connector status code (index into CONNECTOR_STATES)",
            ),
            MetricSpec("power_kw", "kW", G, 0, 1000, "active charging power"),
            MetricSpec("energy_kwh", "kWh", C, 0, 1e9, "energy register, import"),
            MetricSpec("fault", "", A, 0, 1, "1 while the pile reports an error code"),
        ),
    ),
    DeviceKind(
        "transformer",
        Sector.SUBSTATION,
        "Main transformer",
        "主变压器",
        5,
        30,
        (
            MetricSpec("oil_temp_c", "degC", G, -40, 160, "top-oil temperature"),
            MetricSpec("winding_temp_c", "degC", G, -40, 200, "hot-spot winding temperature"),
            MetricSpec("load_pct", "%", G, 0, 200, "load as share of rated capacity"),
        ),
    ),
    DeviceKind(
        "bus_meter",
        Sector.SUBSTATION,
        "Bus voltage meter",
        "母线电压表",
        5,
        30,
        (
            MetricSpec("voltage_kv", "kV", G, 0, 1200, "bus line voltage"),
            MetricSpec("frequency_hz", "Hz", G, 45, 55, "grid frequency"),
        ),
    ),
    DeviceKind(
        "gis_monitor",
        Sector.SUBSTATION,
        "GIS gas and partial-discharge monitor",
        "GIS气体与局放监测",
        10,
        60,
        (
            MetricSpec("sf6_pressure_mpa", "MPa", G, 0, 1.2, "SF6 gas density, 20 degC"),
            MetricSpec("pd_pc", "pC", G, 0, 100_000, "partial discharge apparent charge"),
            MetricSpec("sf6_alarm", "", A, 0, 1, "SF6 low-pressure alarm"),
            MetricSpec("pd_alarm", "", A, 0, 1, "partial discharge alarm"),
        ),
    ),
    # The substation's telecontrol link to the monitoring master (IEC 60870-5-104): reported by
    # the IEC 104 collector about the station it reads (collectors/iec104), every 60 s while the
    # link is up, the last GI completed and data arrives; so "connected" means exactly that.
    DeviceKind(
        "telecontrol_gateway",
        Sector.SUBSTATION,
        "Telecontrol gateway (RTU) link",
        "远动终端通道",
        60,
        180,
        (
            MetricSpec("link_up", "", S, 0, 1, "1 while the IEC 104 link is in data transfer"),
            MetricSpec("gi_complete", "", S, 0, 1, "1 once the last general interrogation ended"),
        ),
    ),
    DeviceKind(
        "collar",
        Sector.RANCH,
        "Cattle collar",
        "牛只项圈",
        300,
        900,
        (
            MetricSpec("body_temp_c", "degC", G, 30, 45, "body temperature"),
            MetricSpec("activity", "steps/h", G, 0, 5000, "activity index"),
            MetricSpec("rumination_min", "min/h", G, 0, 60, "rumination time"),
            MetricSpec("battery_pct", "%", G, 0, 100, "battery"),
        ),
    ),
    DeviceKind(
        "barn_climate",
        Sector.RANCH,
        "Barn climate sensor",
        "牛舍环境传感器",
        60,
        300,
        (
            MetricSpec("temp_c", "degC", G, -40, 60, "air temperature"),
            MetricSpec("humidity_pct", "%", G, 0, 100, "relative humidity"),
            MetricSpec("nh3_ppm", "ppm", G, 0, 500, "ammonia"),
            MetricSpec("co2_ppm", "ppm", G, 0, 20_000, "carbon dioxide"),
        ),
    ),
    DeviceKind(
        "water_trough",
        Sector.RANCH,
        "Water trough",
        "饮水槽",
        60,
        300,
        (
            MetricSpec("level_pct", "%", G, 0, 100, "water level"),
            MetricSpec("flow_l_min", "L/min", G, 0, 500, "inflow"),
        ),
    ),
    DeviceKind(
        "feed_silo",
        Sector.RANCH,
        "Feed silo",
        "饲料仓",
        300,
        900,
        (
            MetricSpec("level_pct", "%", G, 0, 100, "fill level"),
            MetricSpec("feed_kg", "kg", G, 0, 100_000, "feed mass"),
        ),
    ),
)

KINDS: dict[str, DeviceKind] = {k.key: k for k in DEVICE_KINDS}


def all_metric_keys() -> list[tuple[str, str]]:
    """(kind, metric) pairs in a stable order: the metric id table in storage follows it."""
    return [(k.key, m.key) for k in DEVICE_KINDS for m in k.metrics]
