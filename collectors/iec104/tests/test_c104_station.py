"""The IEC 104 collector against an independent controlled station: c104 (lib60870).

c104 is a test-only dependency (GPL-3.0; docs/adr/0014-iec104-collector.md). Each test runs a
c104 ``Server`` on a free loopback port with one station and its points, runs the collector
against it and checks what reaches the agent's sink: the general interrogation of a few
thousand points, spontaneous changes, time tags in the station's time zone, quality bits,
the station restarting, a slow agent buffer holding the station back through the k window.
The silent peer and the malformed frame come from a bare asyncio server, since c104 always
answers correctly.

What c104 2.2.1 does that shapes these tests: it answers only the station-wide interrogation;
it buffers nothing while no master is connected (``transmit`` returns False); it reads a
``recorded_at`` datetime as the process's local time and puts it on the wire as UTC, so
:func:`wire_time` turns the wall-clock fields wanted on the wire into what it expects.
"""

# ruff: noqa: S101 - pytest asserts

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import c104
import pytest

from collectors.iec104.collector import Iec104Collector
from qilu.contract import Quality, Reading, to_us
from qilu.ports import free_port

pytestmark = pytest.mark.timeout(120)

CA = 47
STATION_DEVICE = "SUB-370100-00001-0000"
SHANGHAI = ZoneInfo("Asia/Shanghai")
Q = c104.Quality


def wire_time(fields: datetime) -> datetime:
    """A naive datetime that c104 puts on the wire with exactly ``fields``' wall clock."""
    return datetime.fromtimestamp(fields.replace(tzinfo=UTC).timestamp())  # noqa: DTZ006


def device(ioa: int) -> str:
    return f"SUB-370100-00002-{ioa:04d}"


class Station:
    """A c104 server with one station of ``n`` short-float points (IOA 1..n) and extras."""

    def __init__(self, port: int, n: int = 0) -> None:
        self.port = port
        self.server = c104.Server(ip="127.0.0.1", port=port)
        st = self.server.add_station(common_address=CA)
        assert st is not None
        self.station = st
        self.points: dict[int, c104.Point] = {}
        for ioa in range(1, n + 1):
            self.add(ioa, c104.Type.M_ME_NC_1, c104.ShortInfo(float(ioa) / 10))

    def add(self, ioa: int, type_: c104.Type, info: c104.Information) -> c104.Point:
        p = self.station.add_point(io_address=ioa, type=type_)
        assert p is not None
        p.info = info
        self.points[ioa] = p
        return p

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()


def points_table(ioas: Sequence[int], metric: str = "voltage_kv") -> list[dict[str, Any]]:
    return [{"ioa": i, "device_id": device(i), "metric": metric} for i in ioas]


def collector(port: int, points: list[dict[str, Any]], **extra: Any) -> Iec104Collector:
    station = {
        "name": "rtu1",
        "host": "127.0.0.1",
        "port": port,
        "common_address": CA,
        "device_id": STATION_DEVICE,
        "points": points,
        "t1": 2.0,
        "t2": 1.0,
        "t3": 3.0,
        "reconnect_initial_s": 0.1,
        "reconnect_max_s": 0.5,
        **extra,
    }
    c = Iec104Collector.from_config("sub", {"type": "iec104", "stations": [station]})
    c.validate()
    return c


class Sink:
    """The agent's side: every hand-over kept in order; optionally slow."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[Reading]] = []
        self.delay = delay
        self.changed = asyncio.Event()

    async def __call__(self, readings: Sequence[Reading]) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        self.batches.append(list(readings))
        self.changed.set()

    @property
    def readings(self) -> list[Reading]:
        return [r for b in self.batches for r in b]

    def data(self) -> list[Reading]:
        return [r for r in self.readings if r.device_id != STATION_DEVICE]

    def state(self, metric: str) -> list[float]:
        return [
            r.value for r in self.readings if r.device_id == STATION_DEVICE and r.metric == metric
        ]

    async def until(self, cond: Callable[[], bool], limit_s: float = 30.0) -> None:
        async with asyncio.timeout(limit_s):
            while not cond():
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def running(c: Iec104Collector, sink: Sink) -> Any:
    task = asyncio.create_task(c.collect(sink))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def station(port: int) -> Iterator[Station]:
    s = Station(port)
    yield s
    s.stop()


def test_general_interrogation_of_thousands_of_points_then_spontaneous(station: Station) -> None:
    n = 3000
    for ioa in range(1, n + 1):
        station.add(ioa, c104.Type.M_ME_NC_1, c104.ShortInfo(float(ioa) / 10))
    station.start()
    c = collector(station.port, points_table(range(1, n + 1)))
    sink = Sink()

    async def main() -> None:
        async with running(c, sink):
            await sink.until(lambda: 1.0 in sink.state("gi_complete"))
            gi = sink.data()
            assert len(gi) == n  # every point exactly once
            assert sorted((r.device_id, round(r.value * 10)) for r in gi) == [
                (device(i), i) for i in range(1, n + 1)
            ]
            assert all(r.quality is Quality.GOOD for r in gi)
            assert sink.state("link_up")[:1] == [1.0]
            # spontaneous: one point changes and is sent with cause 3
            station.points[7].info = c104.ShortInfo(123.5)
            assert station.points[7].transmit(cause=c104.Cot.SPONTANEOUS)
            await sink.until(lambda: len(sink.data()) > n)
            (spont,) = sink.data()[n:]
            assert (spont.device_id, spont.metric, spont.value) == (device(7), "voltage_kv", 123.5)

    asyncio.run(main())
    st = c.stations[0]
    assert st.gi_count == 1
    assert st.unknown_ioas == 0


def test_time_tags_in_the_station_time_zone_and_quality_bits(station: Station) -> None:
    local = datetime(2026, 3, 4, 13, 6, 7, 890000)  # noqa: DTZ001 - wall clock; what the station's clock (Shanghai) said
    tag = wire_time(local)
    station.add(1, c104.Type.M_ME_TF_1, c104.ShortInfo(3.25, recorded_at=tag))
    station.add(2, c104.Type.M_SP_TB_1, c104.SingleInfo(True, recorded_at=tag))
    station.add(3, c104.Type.M_ME_NC_1, c104.ShortInfo(1.0, Q.Invalid))
    station.add(4, c104.Type.M_ME_NB_1, c104.ScaledInfo(c104.Int16(-1234), Q.Overflow))
    station.add(5, c104.Type.M_SP_NA_1, c104.SingleInfo(True, Q.Blocked))
    station.add(6, c104.Type.M_DP_NA_1, c104.DoubleInfo(c104.Double.ON, Q.NonTopical))
    station.add(
        7, c104.Type.M_ME_NA_1, c104.NormalizedInfo(c104.NormalizedFloat(0.5), Q.Substituted)
    )
    station.add(
        8, c104.Type.M_ME_TD_1, c104.NormalizedInfo(c104.NormalizedFloat(-0.25), recorded_at=tag)
    )
    station.add(
        9, c104.Type.M_ME_TE_1, c104.ScaledInfo(c104.Int16(300), Q.Invalid, recorded_at=tag)
    )
    station.add(10, c104.Type.M_DP_TB_1, c104.DoubleInfo(c104.Double.OFF, recorded_at=tag))
    station.start()
    pts = points_table(range(1, 11), metric="oil_temp_c")
    pts[4]["metric"] = pts[1]["metric"] = "sf6_alarm"
    pts[9]["metric"] = pts[5]["metric"] = "pd_alarm"
    pts[3]["scale"] = 0.1  # scaled value in tenths of a degree
    c = collector(station.port, pts, timezone="Asia/Shanghai")
    sink = Sink()

    async def main() -> None:
        async with running(c, sink):
            await sink.until(lambda: 1.0 in sink.state("gi_complete"))

    asyncio.run(main())
    data = sink.data()
    assert len(data) == 10
    readings = {int(r.device_id[-4:]): r for r in data}
    instant = to_us(local.replace(tzinfo=SHANGHAI))
    assert (readings[1].ts_us, readings[1].value) == (instant, 3.25)
    assert (readings[2].ts_us, readings[2].value) == (instant, 1.0)
    assert (readings[8].ts_us, readings[8].value) == (instant, -0.25)
    assert (readings[10].ts_us, readings[10].value) == (instant, 1.0)  # DPI 1: off
    assert readings[3].quality is Quality.BAD  # IV
    assert readings[4].quality is Quality.UNCERTAIN  # OV
    assert readings[4].value == pytest.approx(-123.4)  # scaled -1234 * 0.1
    assert readings[5].quality is Quality.UNCERTAIN  # BL
    assert (readings[6].quality, readings[6].value) == (Quality.UNCERTAIN, 2.0)  # NT; DPI 2: on
    assert (readings[7].quality, readings[7].value) == (Quality.UNCERTAIN, 0.5)  # SB
    assert readings[9].quality is Quality.BAD  # IV with a time tag
    assert all(readings[i].quality is Quality.GOOD for i in (1, 2, 8, 10))


def test_the_station_restarting_mid_stream_is_interrogated_again(
    port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="collectors.iec104")
    n = 500
    first = Station(port, n)
    first.start()
    c = collector(port, points_table(range(1, n + 1)))
    sink = Sink()

    async def main() -> None:
        async with running(c, sink):
            await sink.until(lambda: sink.state("gi_complete") == [0.0, 1.0])
            assert len(sink.data()) == n
            first.stop()  # the RTU restarts: its link ends
            await sink.until(lambda: sink.state("link_up")[-1:] == [0.0])
            second = Station(port, n)  # comes back with one value changed while down
            second.points[42].info = c104.ShortInfo(999.0)
            try:
                second.start()
                await sink.until(
                    lambda: (
                        sink.state("gi_complete")[-1:] == [1.0]
                        and len(sink.state("gi_complete")) > 3
                    )
                )
                second.points[43].info = c104.ShortInfo(-1.0)
                assert second.points[43].transmit(cause=c104.Cot.SPONTANEOUS)
                await sink.until(lambda: len(sink.data()) == 2 * n + 1)
            finally:
                second.stop()

    asyncio.run(main())
    data = sink.data()
    again = data[n : 2 * n]
    assert sorted(r.device_id for r in again) == sorted(device(i) for i in range(1, n + 1))
    assert {r.value for r in again if r.device_id == device(42)} == {999.0}
    assert (data[-1].device_id, data[-1].value) == (device(43), -1.0)
    assert len(data) == 2 * n + 1  # each GI once, nothing doubled
    assert c.stations[0].gi_count == 2
    assert c.stations[0].resets >= 1
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("collectors.iec104")]
    assert [m.split(": ")[1] for m in logged if "link" in m] == [
        "link up, interrogated",
        "link down",
        "link up again, interrogated",
    ]


def test_a_slow_agent_buffer_holds_the_station_back_through_the_k_window(
    station: Station,
) -> None:
    n = 2000
    for ioa in range(1, n + 1):
        station.add(ioa, c104.Type.M_ME_NC_1, c104.ShortInfo(float(ioa)))
    station.start()
    c = collector(station.port, points_table(range(1, n + 1)), k=12, w=8, t1=15.0, t2=10.0, t3=20.0)
    sink = Sink(delay=0.05)  # every hand-over waits, as a saturated buffer would
    unacked: list[int] = []

    async def watch() -> None:
        while True:
            link = c.stations[0].link
            if link is not None:
                unacked.append(link.vr - link._ack_sent)  # received, not yet acknowledged
            await asyncio.sleep(0.01)

    async def main() -> None:
        async with running(c, sink):
            w = asyncio.create_task(watch())
            await sink.until(lambda: 1.0 in sink.state("gi_complete"), limit_s=60)
            w.cancel()

    asyncio.run(main())
    assert sorted(r.value for r in sink.data()) == [float(i) for i in range(1, n + 1)]
    # the station filled its k window and waited for us: held back, not overrun
    assert max(unacked) == 12
    assert c.stations[0].resets == 0  # slow, but within t1: the link held


def test_the_station_accepts_our_clock_synchronisation(station: Station) -> None:
    station.add(1, c104.Type.M_ME_NC_1, c104.ShortInfo(1.0))
    synced: list[datetime] = []

    def on_clock_sync(server: c104.Server, ip: str, date_time: datetime) -> c104.ResponseState:
        del server, ip
        synced.append(date_time)
        return c104.ResponseState.SUCCESS

    # c104 checks a callback's annotations, as objects; this module postpones them (text)
    on_clock_sync.__annotations__ = {
        "server": c104.Server,
        "ip": str,
        "date_time": datetime,
        "return": c104.ResponseState,
    }
    station.server.on_clock_sync(callable=on_clock_sync)
    station.start()
    c = collector(station.port, points_table([1]), clock_sync=True, timezone="UTC")
    sink = Sink()
    before = datetime.now(UTC)

    async def main() -> None:
        async with running(c, sink):
            await sink.until(lambda: 1.0 in sink.state("gi_complete"))

    asyncio.run(main())
    (got,) = synced
    # c104 hands over the wire time as the process's local time: compare as instants
    assert abs(got.timestamp() - before.timestamp()) < 5
