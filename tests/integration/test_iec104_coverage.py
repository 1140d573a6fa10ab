"""A substation's telecontrol link counts as connected only while its latest report says link
up and general interrogation complete (storage/coverage.py, docs/targets.md): the IEC 104
collector's reports go through Kafka and the real ingest into PostgreSQL, and the 220 kV
monitoring target (site rule "all devices connected") is computed from what was stored.

Three 220 kV substations, one per city: a healthy station; one that accepts STARTDT but drops
the link before any GI ends, again and again (each connection reports link_up = 1 and then 0,
so its gateway always has a fresh reading); one that is healthy and then goes away."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import pytest
from kafka import KafkaProducer

from collectors.iec104 import codec
from collectors.iec104.codec import U
from collectors.iec104.collector import Iec104Collector
from collectors.iec104.station import ControlledStation
from dashboards.macros import expand_sql
from dashboards.sectors import online_now, target_figures
from qilu.catalog import load_catalog
from qilu.contract import Envelope, Reading, Sector
from qilu.devices import KINDS
from qilu.ports import free_port
from qilu.registry import Device, Registry, Site
from qilu.settings import Settings
from storage import coverage
from storage.db import connect
from storage.registry_store import load_registry
from stream.topics import readings_topic
from tests.helpers import signing_headers
from tests.integration.test_dashboards_sql import _context, as_grafana

pytestmark = pytest.mark.integration
AGENT = "agent-iec104-cov"
TARGET = "substation-220kv-monitoring-2024"
CA = 7
# (station, city): one 220 kV substation each, whose only device is its telecontrol gateway
STATIONS = {"healthy": "370100", "flapping": "370200", "leaving": "370300"}
METER = "SUB-T-110-BUS"  # the points' device, on a 110 kV substation outside the target


def gateway(name: str) -> str:
    return f"SUB-T-{name}-GW"


def registry() -> Registry:
    reg = Registry()
    for name, city in STATIONS.items():
        reg.sites.append(Site(f"SUB-T-{name}", Sector.SUBSTATION, city, name, voltage_kv=220))
        reg.devices.append(Device(gateway(name), f"SUB-T-{name}", "telecontrol_gateway"))
    reg.sites.append(Site("SUB-T-110", Sector.SUBSTATION, "370100", "110", voltage_kv=110))
    reg.devices.append(Device(METER, "SUB-T-110", "bus_meter"))
    return reg


class KafkaSink:
    """The agent's hand-over, as far as the platform sees it: signed envelopes on the topic."""

    def __init__(self, settings: Settings) -> None:
        self.topic = readings_topic(settings.kafka, Sector.SUBSTATION)
        self.headers = signing_headers(settings, AGENT)
        self.producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all")
        self.seq = itertools.count()

    async def __call__(self, readings: Sequence[Reading]) -> None:
        env = Envelope(AGENT, "boot-1", next(self.seq), time.time_ns() // 1000)
        env.extend(readings)
        data = env.encode()
        self.producer.send(self.topic, key=AGENT.encode(), value=data, headers=self.headers(data))
        await asyncio.to_thread(self.producer.flush)


def connected(settings: Settings) -> dict[str, int]:
    """The target's numerator per city now (each city holds one of the three substations)."""
    with connect(settings.db) as conn:
        figures = coverage.compute(conn, load_catalog(), datetime.now(UTC))
    (tc,) = [t for t in figures if t.target.id == TARGET]
    return {c.city_code: c.numerator for c in tc.cities if c.city_code in STATIONS.values()}


def on_dashboard(settings: Settings) -> tuple[object, object]:
    """The substation dashboard's "Telecontrol links online now" and its 220 kV+
    substations under centralized monitoring (the target's figures), run as Grafana would."""
    ctx = _context(60)
    links = expand_sql(online_now(KINDS["telecontrol_gateway"], "links").sql, ctx)
    target = load_catalog().target(TARGET)
    assert target is not None
    figures = target_figures(target.measure)
    sites = expand_sql(f"SELECT sum(f.numerator) FROM ({figures}) f", ctx)  # noqa: S608 - the dashboard's SQL
    with as_grafana(settings) as conn:
        a, b = conn.execute(links).fetchone(), conn.execute(sites).fetchone()
    assert a is not None
    assert b is not None
    return a[0], b[0]


def latest_state(settings: Settings, name: str) -> tuple[float, float] | None:
    """(link_up, gi_complete) stored at the gateway's newest reading."""
    with connect(settings.db) as conn:
        rows = conn.execute(
            "SELECT m.key, r.value FROM readings r JOIN devices d USING (device_pk)"
            " JOIN metrics m USING (metric_id) JOIN device_liveness l USING (device_pk)"
            " WHERE d.device_id = %s AND r.ts = l.last_seen",
            (gateway(name),),
        ).fetchall()
    state: dict[str, float] = dict(rows)
    if set(state) != {"link_up", "gi_complete"}:
        return None
    return state["link_up"], state["gi_complete"]


def count_state(settings: Settings, name: str, metric: str, value: float) -> int:
    with connect(settings.db) as conn:
        row = conn.execute(
            "SELECT count(*) FROM readings r JOIN devices d USING (device_pk)"
            " JOIN metrics m USING (metric_id)"
            " WHERE d.device_id = %s AND m.key = %s AND r.value = %s",
            (gateway(name), metric, value),
        ).fetchone()
    return int(row[0]) if row else 0


async def until(cond: Callable[[], bool], what: str, limit_s: float = 90.0) -> None:
    """Poll the database (``what``: for the reader of a timeout's traceback)."""
    async with asyncio.timeout(limit_s):
        while not await asyncio.to_thread(cond):  # noqa: ASYNC110 - rows, no event to wait on
            await asyncio.sleep(0.2)


def test_telecontrol_links_count_only_while_up_and_interrogated(
    settings: Settings, start_ingest: Callable[[], object]
) -> None:
    with connect(settings.db) as conn:
        load_registry(conn, registry())
    start_ingest()
    sink = KafkaSink(settings)
    ports = {name: free_port() for name in STATIONS}
    flaps = 0

    async def flapping(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Accepts STARTDT, takes the GI and hangs up before answering it."""
        nonlocal flaps
        flaps += 1
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            head = await reader.readexactly(2)
            await reader.readexactly(head[1])  # STARTDT act
            writer.write(codec.encode_u(U.STARTDT_CON))
            head = await reader.readexactly(2)
            await reader.readexactly(head[1])  # the GI, never answered
        writer.close()

    def station(name: str) -> dict[str, object]:
        return {
            "name": name,
            "host": "127.0.0.1",
            "port": ports[name],
            "common_address": CA,
            "device_id": gateway(name),
            "points": [{"ioa": 1, "device_id": METER, "metric": "voltage_kv"}],
            "reconnect_initial_s": 0.5,
            "reconnect_max_s": 1.0,
        }

    collector = Iec104Collector.from_config(
        "sub", {"type": "iec104", "stations": [station(n) for n in STATIONS]}
    )
    collector.validate()

    async def main() -> None:
        healthy = ControlledStation(CA, port=ports["healthy"])
        leaving = ControlledStation(CA, port=ports["leaving"])
        for s in (healthy, leaving):
            s.add(1, 13, 221.5)
            await s.start()
        server = await asyncio.start_server(flapping, "127.0.0.1", ports["flapping"])
        task = asyncio.create_task(collector.collect(sink))
        try:
            await until(
                lambda: (
                    latest_state(settings, "healthy") == (1.0, 1.0)
                    and latest_state(settings, "leaving") == (1.0, 1.0)
                    and count_state(settings, "flapping", "link_up", 0.0) >= 3
                ),
                "both good links interrogated, the bad one dropped three times",
            )
            assert count_state(settings, "flapping", "gi_complete", 1.0) == 0
            # the flapping station has fresh readings all the time, and does not count
            assert connected(settings) == {"370100": 1, "370200": 0, "370300": 1}
            assert on_dashboard(settings) == (2, 2)  # the dashboards count the same

            await leaving.stop()  # the link goes down: it stops counting at once
            await until(
                lambda: latest_state(settings, "leaving") == (0.0, 0.0), "the link-down report"
            )
            assert connected(settings) == {"370100": 1, "370200": 0, "370300": 0}
            assert on_dashboard(settings) == (1, 1)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            server.close()
            await healthy.stop()
            sink.producer.close()

    asyncio.run(main())
    assert flaps >= 3
