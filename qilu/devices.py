"""Device kinds as data: a frozen table of what each kind measures, how often, and in what range.

One generic path turns these descriptions into validation (ingest), liveness ("connected" means
a valid reading within ``expected_interval_s``; the rule is SQL, migration 066), simulation,
metrics and panels: each sector's dashboard is built from its kinds (dashboards/sectors.py:
who is online, each metric's :class:`Chart`, a STATE metric's ``states``, the ALARM metrics, the
``rank_by`` table). Adding a kind or a metric is adding a row here, not code elsewhere.
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


class Aggregate(enum.StrEnum):
    """How a chart folds the devices of a city (and a time bucket) into one value."""

    MAX = "max"  # the highest device (hottest transformer)
    MIN = "min"  # the lowest device (emptiest trough)
    MEAN = "mean"  # the reading-weighted mean over the devices
    SUM = "sum"  # the sum of the devices' means (power of all piles)
    RISE = "rise"  # a counter's rise per device and bucket, summed (energy delivered)
    TOTAL_NOW = "total_now"  # one figure: the sum of each device's latest value (feed in silos)


Steps = tuple[tuple[float | None, str], ...]  # threshold colours from a value up: (None = base)


@dataclass(frozen=True, slots=True)
class Chart:
    """How a metric appears on its sector's dashboard (dashboards/sectors.py builds the panel
    from this: a series per city, or for TOTAL_NOW one figure)."""

    title: str
    aggregate: Aggregate
    steps: Steps = ((None, "green"),)
    hourly: bool = False  # from the hour rollup (a counter's rise per hour); else the minute one
    description: str = ""


@dataclass(frozen=True, slots=True)
class MetricSpec:
    key: str
    unit: str
    kind: MetricKind
    low: float  # valid range: readings outside it are rejected as implausible
    high: float
    description: str
    chart: Chart | None = None  # a panel on the sector's dashboard
    label: str = ""  # short name in tables and legends (alarms: the alarm's name); else the key
    states: tuple[str, ...] = ()  # a STATE metric's names by code: panels of the states

    @property
    def short(self) -> str:
        return self.label or self.key


@dataclass(frozen=True, slots=True)
class DeviceKind:
    key: str
    sector: Sector
    name_en: str
    name_zh: str
    interval_s: float  # nominal reporting interval of a healthy device
    expected_interval_s: float  # liveness window: silent longer than this = not connected
    metrics: tuple[MetricSpec, ...]
    plural_en: str = ""  # "Piles": panel titles ("Piles online now"); else name_en
    rank_by: str = ""  # a metric: a table of the devices highest in it (last 15 minutes)

    @property
    def plural(self) -> str:
        return self.plural_en or self.name_en

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
                chart=Chart(
                    "Connector states",
                    Aggregate.MAX,
                    description="OCPP 1.6 status of each pile's newest 1-minute bucket.",
                ),
                states=CONNECTOR_STATES,
            ),
            MetricSpec(
                "power_kw",
                "kW",
                G,
                0,
                1000,
                "active charging power",
                chart=Chart(
                    "Charging power", Aggregate.SUM, description="Sum of the piles' mean power."
                ),
                label="power",
            ),
            MetricSpec(
                "energy_kwh",
                "kWh",
                C,
                0,
                1e9,
                "energy register, import",
                chart=Chart(
                    "Energy delivered per hour",
                    Aggregate.RISE,
                    hourly=True,
                    description=(
                        "Per pile and hour, the rise of the energy register (max - min of the "
                        "hour), summed by city. The rise between two hours' last and first "
                        "reading (one reporting interval) is not counted."
                    ),
                ),
                label="energy",
            ),
            MetricSpec("fault", "", A, 0, 1, "1 while the pile reports an error code"),
        ),
        plural_en="Piles",
    ),
    DeviceKind(
        "transformer",
        Sector.SUBSTATION,
        "Main transformer",
        "主变压器",
        5,
        30,
        (
            MetricSpec(
                "oil_temp_c",
                "degC",
                G,
                -40,
                160,
                "top-oil temperature",
                chart=Chart(
                    "Top-oil temperature (hottest transformer)",
                    Aggregate.MAX,
                    ((None, "green"), (85.0, "orange"), (95.0, "red")),
                ),
                label="oil",
            ),
            MetricSpec(
                "winding_temp_c",
                "degC",
                G,
                -40,
                200,
                "hot-spot winding temperature",
                chart=Chart(
                    "Winding hot-spot temperature (hottest transformer)",
                    Aggregate.MAX,
                    ((None, "green"), (98.0, "orange"), (120.0, "red")),
                ),
                label="winding",
            ),
            MetricSpec("load_pct", "%", G, 0, 200, "load as share of rated capacity", label="load"),
        ),
        plural_en="Transformers",
        rank_by="oil_temp_c",
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
        plural_en="Bus meters",
    ),
    DeviceKind(
        "gis_monitor",
        Sector.SUBSTATION,
        "GIS gas and partial-discharge monitor",
        "GIS气体与局放监测",
        10,
        60,
        (
            MetricSpec(
                "sf6_pressure_mpa",
                "MPa",
                G,
                0,
                1.2,
                "SF6 gas density, 20 degC",
                chart=Chart(
                    "SF6 gas density (lowest)",
                    Aggregate.MIN,
                    ((None, "red"), (0.45, "orange"), (0.5, "green")),
                ),
                label="SF6",
            ),
            MetricSpec(
                "pd_pc",
                "pC",
                G,
                0,
                100_000,
                "partial discharge apparent charge",
                chart=Chart(
                    "Partial discharge (highest)",
                    Aggregate.MAX,
                    ((None, "green"), (500.0, "orange"), (1000.0, "red")),
                ),
                label="PD",
            ),
            MetricSpec(
                "sf6_alarm", "", A, 0, 1, "SF6 low-pressure alarm", label="SF6 low pressure"
            ),
            MetricSpec(
                "pd_alarm", "", A, 0, 1, "partial discharge alarm", label="partial discharge"
            ),
        ),
        plural_en="GIS monitors",
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
        plural_en="Telecontrol links",
    ),
    DeviceKind(
        "collar",
        Sector.RANCH,
        "Cattle collar",
        "牛只项圈",
        300,
        900,
        (
            MetricSpec(
                "body_temp_c",
                "degC",
                G,
                30,
                45,
                "body temperature",
                chart=Chart(
                    "Cattle body temperature (highest)",
                    Aggregate.MAX,
                    ((None, "blue"), (38.0, "green"), (39.5, "orange"), (40.5, "red")),
                ),
                label="body",
            ),
            MetricSpec("activity", "steps/h", G, 0, 5000, "activity index"),
            MetricSpec("rumination_min", "min/h", G, 0, 60, "rumination time"),
            MetricSpec("battery_pct", "%", G, 0, 100, "battery"),
        ),
        plural_en="Collars",
    ),
    DeviceKind(
        "barn_climate",
        Sector.RANCH,
        "Barn climate sensor",
        "牛舍环境传感器",
        60,
        300,
        (
            MetricSpec(
                "temp_c",
                "degC",
                G,
                -40,
                60,
                "air temperature",
                chart=Chart(
                    "Barn temperature (mean)",
                    Aggregate.MEAN,
                    ((None, "blue"), (5.0, "green"), (25.0, "orange"), (30.0, "red")),
                ),
                label="temperature",
            ),
            MetricSpec(
                "humidity_pct",
                "%",
                G,
                0,
                100,
                "relative humidity",
                chart=Chart(
                    "Barn humidity (mean)",
                    Aggregate.MEAN,
                    ((None, "orange"), (40.0, "green"), (80.0, "orange")),
                ),
                label="humidity",
            ),
            MetricSpec(
                "nh3_ppm",
                "ppm",
                G,
                0,
                500,
                "ammonia",
                chart=Chart(
                    "Ammonia (highest)",
                    Aggregate.MAX,
                    ((None, "green"), (15.0, "orange"), (25.0, "red")),
                ),
                label="NH3",
            ),
            MetricSpec(
                "co2_ppm",
                "ppm",
                G,
                0,
                20_000,
                "carbon dioxide",
                chart=Chart(
                    "Carbon dioxide (highest)",
                    Aggregate.MAX,
                    ((None, "green"), (2500.0, "orange"), (3000.0, "red")),
                ),
                label="CO2",
            ),
        ),
        plural_en="Barn climate sensors",
    ),
    DeviceKind(
        "water_trough",
        Sector.RANCH,
        "Water trough",
        "饮水槽",
        60,
        300,
        (
            MetricSpec(
                "level_pct",
                "%",
                G,
                0,
                100,
                "water level",
                chart=Chart(
                    "Water trough level (lowest)",
                    Aggregate.MIN,
                    ((None, "red"), (20.0, "orange"), (40.0, "green")),
                ),
                label="level",
            ),
            MetricSpec(
                "flow_l_min",
                "L/min",
                G,
                0,
                500,
                "inflow",
                chart=Chart("Water inflow (mean per trough)", Aggregate.MEAN),
                label="inflow",
            ),
        ),
        plural_en="Water troughs",
    ),
    DeviceKind(
        "feed_silo",
        Sector.RANCH,
        "Feed silo",
        "饲料仓",
        300,
        900,
        (
            MetricSpec(
                "level_pct",
                "%",
                G,
                0,
                100,
                "fill level",
                chart=Chart(
                    "Feed silo level (lowest)",
                    Aggregate.MIN,
                    ((None, "red"), (15.0, "orange"), (30.0, "green")),
                ),
                label="level",
            ),
            MetricSpec(
                "feed_kg",
                "kg",
                G,
                0,
                100_000,
                "feed mass",
                chart=Chart("Feed in silos now", Aggregate.TOTAL_NOW),
                label="feed",
            ),
        ),
        plural_en="Feed silos",
    ),
)

KINDS: dict[str, DeviceKind] = {k.key: k for k in DEVICE_KINDS}


def all_metric_keys() -> list[tuple[str, str]]:
    """(kind, metric) pairs in a stable order: the metric id table in storage follows it."""
    return [(k.key, m.key) for k in DEVICE_KINDS for m in k.metrics]
