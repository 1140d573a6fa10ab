"""Simulated substations that speak IEC 104: the simulated feed behind our own stations.

For the simulated province (``qilu agent province --iec104-city``): each substation site gets
a :class:`ControlledStation` on a loopback port, whose process image the deterministic feed of
collectors/simulated keeps current (every reading a spontaneous, time-tagged change), and the
agent reads the stations through the real :class:`Iec104Collector`, point tables and all.
So ``qilu run`` exercises the protocol path end to end for those cities; no GPL code runs.

:func:`build` returns the two collectors of such an agent: ``SimulatedStations`` (it runs the
stations and feeds them; it hands nothing to the agent itself) and the IEC 104 collector. The
sites' ``telecontrol_gateway`` devices are not simulated here: their ``link_up`` and
``gi_complete`` readings come from the IEC 104 collector, about the real link.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from collectors.base import Collector, ReadingSink
from collectors.iec104 import codec
from collectors.iec104.collector import Iec104Collector, Iec104Config, PointConfig, StationConfig
from collectors.iec104.station import ControlledStation
from collectors.simulated.collector import SimulatedCollector, SimulatedConfig
from qilu.contract import Quality, Reading
from qilu.devices import KINDS, MetricKind
from qilu.ports import free_port
from qilu.registry import Registry

logger = logging.getLogger(__name__)

GATEWAY_KIND = "telecontrol_gateway"
TIMEZONE = "Asia/Shanghai"  # the simulated stations' clocks, as real ones in Shandong
_QUALIFIER = {Quality.GOOD: 0, Quality.UNCERTAIN: 0x40, Quality.BAD: 0x80}  # -, NT, IV


class SimulatedStations(Collector):
    """Runs one controlled station per site and keeps its image current from the feed."""

    type_name = "iec104_simulated_stations"  # not a registered type: built by :func:`build`

    def __init__(
        self,
        name: str,
        feed: SimulatedCollector,
        stations: dict[str, ControlledStation],
        points: dict[tuple[str, str], tuple[str, int]],
    ) -> None:
        super().__init__(name)
        self.feed = feed
        self.stations = stations  # site id -> station
        self.points = points  # (device id, metric) -> (site id, ioa)
        self.tz = ZoneInfo(TIMEZONE)

    def validate(self) -> None:
        self.feed.validate()

    async def connect(self) -> None:
        await self.stop()
        for st in self.stations.values():
            await st.start()
        await self.feed.connect()

    async def collect(self, sink: ReadingSink) -> None:
        del sink  # the agent gets the readings through the IEC 104 collector
        await self.feed.collect(self._to_stations)

    async def _to_stations(self, readings: Sequence[Reading]) -> None:
        changes: dict[str, list[tuple[int, float, int, bytes]]] = {}
        for r in readings:
            where = self.points.get((r.device_id, r.metric))
            if where is None:
                continue  # the gateway's own link state: the IEC 104 collector reports it
            site, ioa = where
            tag = codec.encode_cp56(datetime.fromtimestamp(r.ts_us / 1e6, self.tz))
            changes.setdefault(site, []).append((ioa, r.value, _QUALIFIER[r.quality], tag))
        for site, objs in changes.items():
            self.stations[site].update(objs)

    async def stop(self) -> None:
        for st in self.stations.values():
            await st.stop()


def build(
    agent_id: str, sites: Sequence[str], registry: Registry, *, seed: int, silence: str
) -> list[Collector]:
    """The collectors of a simulated substation agent that speaks IEC 104 (see the module)."""
    feed = SimulatedCollector(
        f"{agent_id}-feed",
        SimulatedConfig(sites=list(sites), seed=seed, silence=silence),  # type: ignore[arg-type]
        registry,
    )
    wanted = set(sites)
    by_site: dict[str, list[tuple[str, str]]] = {s: [] for s in sites}
    gateway: dict[str, str] = {}
    for d in registry.devices:
        if d.site_id not in wanted:
            continue
        if d.kind == GATEWAY_KIND:
            gateway[d.site_id] = d.device_id
            continue
        by_site[d.site_id].extend((d.device_id, m.key) for m in KINDS[d.kind].metrics)
    stations: dict[str, ControlledStation] = {}
    points: dict[tuple[str, str], tuple[str, int]] = {}
    configs: list[StationConfig] = []
    for n, site in enumerate((s for s in sites if by_site[s]), start=1):
        port = free_port()
        st = ControlledStation(n, port=port, tz=ZoneInfo(TIMEZONE))
        table: list[PointConfig] = []
        for ioa, (device_id, metric) in enumerate(by_site[site], start=1):
            alarm = _is_alarm(metric)
            type_id = 30 if alarm else 36  # time-tagged single point / short float
            st.add(ioa, type_id, None)
            points[(device_id, metric)] = (site, ioa)
            table.append(PointConfig(ioa, device_id, metric, type=codec.TYPES[type_id].name))
        stations[site] = st
        configs.append(
            StationConfig(
                name=site,
                host="127.0.0.1",
                port=port,
                common_address=n,
                device_id=gateway.get(site, ""),
                points=table,
            )
        )
    iec = Iec104Collector(f"{agent_id}-iec104", Iec104Config(timezone=TIMEZONE, stations=configs))
    return [SimulatedStations(f"{agent_id}-stations", feed, stations, points), iec]


def _is_alarm(metric: str) -> bool:
    return any(
        m.key == metric and m.kind is MetricKind.ALARM for k in KINDS.values() for m in k.metrics
    )
