"""The collector against peers that misbehave on purpose, and against our own station.

c104 always answers correctly, so the silent and the malformed peer are bare asyncio servers
on loopback; after the fault, the connection is handed to :class:`ControlledStation` (our own
station on the same codec) to show the link recovering. The last tests use that station for
what c104 cannot send: integrated totals on counter interrogation, several stations per agent.
"""

# ruff: noqa: S101 - pytest asserts

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from collectors.iec104 import codec
from collectors.iec104.codec import Cot, U
from collectors.iec104.collector import AGENT_REGISTRY, Iec104Collector
from collectors.iec104.station import ControlledStation
from collectors.iec104.tests.test_c104_station import (
    CA,
    Sink,
    collector,
    points_table,
    running,
)
from qilu.contract import Quality
from qilu.devices import KINDS
from qilu.ports import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(port: int, handler: Handler) -> asyncio.Server:
    return await asyncio.start_server(handler, "127.0.0.1", port)


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(2)
    return head + await reader.readexactly(head[1])


def one_point_station(**extra: Any) -> tuple[ControlledStation, Iec104Collector, Sink]:
    """A station with one measured value (IOA 5, 21.5) on a free port, a collector of that
    point (``extra`` as collector options) and an empty sink."""
    port = free_port()
    station = ControlledStation(CA, port=port)
    station.add(5, 13, 21.5)
    return station, collector(port, points_table([5]), **extra), Sink()


async def wait_for(cond: Callable[[], bool]) -> None:
    async with asyncio.timeout(30):
        while not cond():  # noqa: ASYNC110 - collector state, no event to wait on
            await asyncio.sleep(0.02)


def test_a_peer_that_never_answers_startdt_is_dropped_after_t1(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    c = collector(port, points_table([1]), t1=0.3, t2=0.2, t3=5.0)
    sink = Sink()
    connections = 0

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.read()  # takes STARTDT act and says nothing, until the client gives up
        writer.close()

    async def main() -> None:
        server = await serve(port, silent)
        async with server, running(c, sink) as task:
            await wait_for(lambda: c.stations[0].resets >= 2)
            assert not task.done()  # the collector keeps running and retrying

    asyncio.run(main())
    assert connections >= 2
    assert sink.state("link_up") == []  # never up: nothing to report as lost
    downs = [r for r in caplog.records if "link down" in r.getMessage()]
    assert len(downs) == 1  # one outage, logged once however often it is retried
    assert "no answer to a U frame within t1" in downs[0].getMessage()


def test_a_peer_that_falls_silent_is_tested_and_dropped_within_t3_plus_t1() -> None:
    port = free_port()
    c = collector(port, points_table([1]), t1=0.3, t2=0.2, t3=0.3)
    sink = Sink()
    got: list[bytes] = []

    async def falls_silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.append(await read_frame(reader))  # STARTDT act
        writer.write(codec.encode_u(U.STARTDT_CON))
        got.append(await read_frame(reader))  # the GI: acknowledged, never answered
        writer.write(codec.encode_s(1))
        got.append(await read_frame(reader))  # after t3 of silence: TESTFR act, never answered
        await reader.read()
        writer.close()

    async def main() -> None:
        server = await serve(port, falls_silent)
        async with server, running(c, sink):
            await sink.until(lambda: sink.state("link_up")[-1:] == [0.0])

    asyncio.run(main())
    assert got[0] == codec.encode_u(U.STARTDT_ACT)
    assert codec.encode_u(U.TESTFR_ACT) in got
    assert sink.state("link_up")[:2] == [1.0, 0.0]
    assert sink.state("gi_complete")[-1] == 0.0


def test_a_malformed_frame_resets_the_link_and_the_next_one_works() -> None:
    station, c, sink = one_point_station()
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        if connections > 1:
            await station._serve(reader, writer)  # the station takes it over
            return
        await read_frame(reader)
        writer.write(codec.encode_u(U.STARTDT_CON))
        await read_frame(reader)  # the GI
        spont = codec.encode_monitor(13, codec.Cot.SPONTANEOUS, CA, [(5, 99.5, 0, b"")])
        # one good I frame, and garbage where the next frame should start, in one segment
        writer.write(codec.encode_i(0, 1, spont) + bytes.fromhex("00010203"))
        await writer.drain()
        await reader.read()
        writer.close()

    async def main() -> None:
        server = await serve(station.port, handler)
        async with server, running(c, sink) as task:
            await sink.until(lambda: any(r.value == 21.5 for r in sink.data()))  # the 2nd link
            assert not task.done()
        await station.stop()

    asyncio.run(main())
    assert connections == 2
    assert c.stations[0].resets == 1
    assert c.stations[0].last_fault == "frame starts with 0x00, not 0x68"
    # what arrived intact before the garbage is delivered, then the next link's GI
    assert [(r.value, r.quality) for r in sink.data()] == [
        (99.5, Quality.GOOD),
        (21.5, Quality.GOOD),
    ]


def station_config(port: int, name: str, ca: int, points: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": name,
        "host": "127.0.0.1",
        "port": port,
        "common_address": ca,
        "points": points,
        "reconnect_initial_s": 0.1,
        "reconnect_max_s": 0.5,
    }


def test_several_stations_counters_and_clock_sync_with_our_own_station() -> None:
    ports = [free_port(), free_port()]
    a = ControlledStation(1, port=ports[0])
    a.add(100, 13, 230.5)
    a.add(4001, 15, 123456)  # integrated totals, read by counter interrogation only
    b = ControlledStation(2, port=ports[1])
    b.add(7, 31, 2)  # double point, time-tagged
    cfg = {
        "type": "iec104",
        "timezone": "UTC",
        "stations": [
            {
                **station_config(ports[0], "a", 1, [
                    {"ioa": 100, "device_id": "SUB-A-1", "metric": "voltage_kv"},
                    {"ioa": 4001, "device_id": "SUB-A-2", "metric": "pd_pc", "type": "M_IT_NA_1"},
                ]),
                "counter_interrogation_s": 0.2,
                "clock_sync": True,
            },
            station_config(ports[1], "b", 2, [
                {"ioa": 7, "device_id": "SUB-B-1", "metric": "sf6_alarm", "type": "M_DP_TB_1"},
            ]),
        ],
    }  # fmt: skip
    c = Iec104Collector.from_config("subs", cfg)
    c.validate()
    sink = Sink()

    async def main() -> None:
        await a.start()
        await b.start()
        try:
            async with running(c, sink):
                await sink.until(
                    lambda: (
                        {r.device_id for r in sink.readings} >= {"SUB-A-1", "SUB-A-2", "SUB-B-1"}
                    )
                )
                await b.stop()  # one station down: the other keeps delivering
                await wait_for(lambda: not c.stations[1].up)
                a.update([(100, 231.0, 0, b"")])
                await sink.until(lambda: any(r.value == 231.0 for r in sink.readings))
                assert c.stations[0].up
                # on the agent's metrics endpoint (its own registry), per station
                labels = {"collector": "subs", "station": "a"}
                assert AGENT_REGISTRY.get_sample_value("qilu_iec104_link_up", labels) == 1.0
                assert (
                    AGENT_REGISTRY.get_sample_value(
                        "qilu_iec104_link_up", {**labels, "station": "b"}
                    )
                    == 0.0
                )
                objects = AGENT_REGISTRY.get_sample_value("qilu_iec104_objects_total", labels)
                assert objects is not None
                assert objects >= 3
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(main())
    values = {(r.device_id, r.value) for r in sink.readings}
    assert {
        ("SUB-A-1", 230.5),
        ("SUB-A-2", 123456.0),
        ("SUB-B-1", 2.0),
        ("SUB-A-1", 231.0),
    } <= values
    assert (a.clock_syncs, b.clock_syncs) == (1, 0)  # only where configured


def test_link_state_is_reported_on_change_and_periodically_while_healthy() -> None:
    station, c, sink = one_point_station(state_interval_s=1.0)

    async def main() -> None:
        await station.start()
        try:
            async with running(c, sink):
                # up (GI running), GI complete, then the periodic reports of a healthy link
                await sink.until(lambda: len(sink.state("gi_complete")) >= 4)
        finally:
            await station.stop()

    asyncio.run(main())
    assert sink.state("link_up")[:4] == [1.0, 1.0, 1.0, 1.0]
    assert sink.state("gi_complete")[:4] == [0.0, 1.0, 1.0, 1.0]


def test_healthy_means_up_gi_complete_and_fresh_data() -> None:
    c = collector(free_port(), points_table([5]))
    st = c.stations[0]
    now = time.time()
    st.up, st.gi_complete, st.last_data = True, True, now
    assert c._healthy(st)
    st.last_data = now - KINDS["telecontrol_gateway"].expected_interval_s - 1
    assert not c._healthy(st)  # stale data: not connected, whatever the link says
    st.last_data, st.gi_complete = now, False
    assert not c._healthy(st)
    st.gi_complete, st.up = True, False
    assert not c._healthy(st)


def test_unknown_types_and_addresses_are_counted_never_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    c = collector(port, points_table([5]))
    sink = Sink()
    gi = codec.interrogation(CA)
    bitstring = (
        bytes.fromhex("07010300") + CA.to_bytes(2, "little") + bytes.fromhex("0a00000102030400")
    )
    step = bytes.fromhex("05010300") + CA.to_bytes(2, "little") + bytes.fromhex("0b00000500")
    asdus = [
        codec.command_reply(gi, codec.Cot.ACTIVATION_CON),
        bitstring,  # M_BO_NA_1: not decoded
        bitstring,
        step,  # M_ST_NA_1: not decoded
        codec.encode_monitor(
            13, codec.Cot.INTERROGATED, CA, [(5, 1.5, 0, b""), (999, 2.5, 0, b"")]
        ),
        codec.encode_monitor(13, codec.Cot.SPONTANEOUS, CA + 1, [(5, 9.5, 0, b"")]),  # not ours
        codec.command_reply(gi, codec.Cot.ACTIVATION_TERM),
    ]

    async def station(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_frame(reader)
        writer.write(codec.encode_u(U.STARTDT_CON))
        await read_frame(reader)  # the GI
        writer.write(b"".join(codec.encode_i(n, 1, a) for n, a in enumerate(asdus)))
        await reader.read()
        writer.close()

    labels = {"collector": "sub", "station": "rtu1"}  # shared by tests in this process

    def counted() -> tuple[float, float, float]:
        return (
            AGENT_REGISTRY.get_sample_value("qilu_iec104_unknown_types_total", labels) or 0.0,
            AGENT_REGISTRY.get_sample_value("qilu_iec104_unknown_points_total", labels) or 0.0,
            AGENT_REGISTRY.get_sample_value("qilu_iec104_foreign_asdus_total", labels) or 0.0,
        )

    before = counted()

    async def main() -> None:
        server = await serve(port, station)
        async with server, running(c, sink):
            await sink.until(lambda: 1.0 in sink.state("gi_complete"))

    asyncio.run(main())
    after = counted()
    st = c.stations[0]
    assert [(r.device_id, r.value) for r in sink.data()] == [("SUB-370100-00002-0005", 1.5)]
    assert (st.unknown_types, st.unknown_ioas, st.resets) == ({5, 7}, 1, 0)
    # the ASDU for another common address is counted as such, not as an unknown point
    assert tuple(a - b for a, b in zip(after, before, strict=True)) == (3, 1, 1)
    logged = [r.getMessage() for r in caplog.records if "is not decoded" in r.getMessage()]
    assert len(logged) == 2  # once per type


def test_a_gi_value_and_a_change_of_one_point_in_one_read_get_distinct_times() -> None:
    """Untimed objects of one socket read share its time; the platform keeps one value per
    device, metric and instant, so the change (cause 3) after the GI value (cause 20) of the
    same address is moved 1 µs later, in arrival order, instead of being refused."""
    port = free_port()
    c = collector(port, points_table([5, 6]))
    sink = Sink()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_frame(reader)
        writer.write(codec.encode_u(U.STARTDT_CON))
        await read_frame(reader)  # the GI
        gi = codec.encode_monitor(
            13, codec.Cot.INTERROGATED, CA, [(5, 21.5, 0, b""), (6, 1.0, 0, b"")]
        )
        change = codec.encode_monitor(13, codec.Cot.SPONTANEOUS, CA, [(5, 22.0, 0, b"")])
        again = codec.encode_monitor(13, codec.Cot.SPONTANEOUS, CA, [(6, 1.0, 0, b"")])
        writer.write(
            codec.encode_i(0, 1, gi) + codec.encode_i(1, 1, change) + codec.encode_i(2, 1, again)
        )
        await writer.drain()
        await reader.read()
        writer.close()

    async def main() -> None:
        server = await serve(port, handler)
        async with server, running(c, sink):
            await sink.until(lambda: len(sink.data()) == 4)

    asyncio.run(main())
    data = sink.data()
    # one read, one hand-over
    assert [len(b) for b in sink.batches if any(r.metric == "voltage_kv" for r in b)] == [4]
    five = [
        (r.ts_us, r.value) for r in data if r.metric == "voltage_kv" and r.device_id.endswith("5")
    ]
    assert [v for _, v in five] == [21.5, 22.0]
    assert five[1][0] == five[0][0] + 1  # the change is the newer one
    six = [r.ts_us for r in data if r.device_id.endswith("6")]
    assert six[0] == six[1]  # an identical repeat keeps its time (a duplicate, dropped)


class Peer:
    """A bare controlled station answering each general interrogation as ``answers`` says, in
    turn: "silent" (no answer), "refuse" (negative confirmation), "ok" (confirmation, one
    value, activation termination); the last answer repeats."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.gis = 0
        self.connections = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        frames = codec.FrameReader()
        sent = received = 0
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(4096):
                for f in frames.feed(data):
                    if isinstance(f, codec.UFrame):
                        reply = {U.STARTDT_ACT: U.STARTDT_CON, U.TESTFR_ACT: U.TESTFR_CON}
                        if f.function in reply:
                            writer.write(codec.encode_u(reply[f.function]))
                        continue
                    if not isinstance(f, codec.IFrame):
                        continue
                    received += 1
                    if f.asdu[0] != codec.C_IC_NA_1:
                        continue
                    answer = self.answers[min(self.gis, len(self.answers) - 1)]
                    self.gis += 1
                    asdus: list[bytes] = []
                    if answer == "refuse":
                        asdus = [codec.command_reply(f.asdu, Cot.ACTIVATION_CON, negative=True)]
                    elif answer == "ok":
                        value = codec.encode_monitor(13, Cot.INTERROGATED, CA, [(5, 1.0, 0, b"")])
                        asdus = [
                            codec.command_reply(f.asdu, Cot.ACTIVATION_CON),
                            value,
                            codec.command_reply(f.asdu, Cot.ACTIVATION_TERM),
                        ]
                    for a in asdus:
                        writer.write(codec.encode_i(sent, received, a))
                        sent += 1
                await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def test_a_gi_not_ended_or_refused_is_asked_again_after_gi_timeout_s(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    peer = Peer(["silent", "refuse", "refuse", "ok"])
    c = collector(port, points_table([5]), gi_timeout_s=0.2, gi_interval_s=0)
    sink = Sink()

    async def main() -> None:
        server = await serve(port, peer)
        async with server, running(c, sink):
            await sink.until(lambda: sink.state("gi_complete") == [0.0, 1.0])

    asyncio.run(main())
    st = c.stations[0]
    assert (peer.connections, peer.gis, st.gi_count, st.resets) == (1, 4, 1, 0)
    assert (
        AGENT_REGISTRY.get_sample_value(
            "qilu_iec104_gi_retries_total", {"collector": "sub", "station": "rtu1"}
        )
        == 3
    )
    assert [r.value for r in sink.data()] == [1.0]
    trouble = [r.getMessage() for r in caplog.records if "interrogation" in r.getMessage()]
    assert len(trouble) == 2  # the trouble once, however often it is asked again; its end
    assert "did not end within 0.2 s" in trouble[0]
    assert "ended again" in trouble[1]


def test_a_periodic_gi_refreshes_the_image_on_the_same_link() -> None:
    station, c, sink = one_point_station(gi_interval_s=0.1)

    async def main() -> None:
        await station.start()
        async with running(c, sink):
            await sink.until(lambda: len(sink.data()) >= 3)
            # a refresh is no new link: gi_complete went 0 -> 1 once and stays 1 (reported
            # again as each GI ends)
            gi = sink.state("gi_complete")
            assert (gi[0], set(gi[1:])) == (0.0, {1.0})
        await station.stop()

    asyncio.run(main())
    assert station.interrogations >= 3
    assert c.stations[0].resets == 0  # one link
    assert c.stations[0].gi_count >= 3
    assert {r.value for r in sink.data()} == {21.5}


def test_a_hand_over_that_fills_w_asks_the_agent_to_commit_at_once() -> None:
    """A few frames wait for the agent's group commit; once ``w`` frames await their
    acknowledgement (the station's window is filling), the collector asks for the hand-over
    to be committed at once (Collector.commit_next)."""
    port = free_port()
    c = collector(port, points_table([5]), w=4, k=6, t2=1.5)
    sink = Sink()
    requests: list[int] = []  # hand-overs made before each request
    c.on_commit_request(lambda: requests.append(len(sink.batches)))
    go = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_frame(reader)
        writer.write(codec.encode_u(U.STARTDT_CON))
        await read_frame(reader)  # the GI, left unanswered: only changes come
        one = codec.encode_monitor(13, Cot.SPONTANEOUS, CA, [(5, 1.0, 0, b"")])
        writer.write(codec.encode_i(0, 1, one))  # one frame: no hurry
        await go.wait()
        writer.write(b"".join(codec.encode_i(n, 1, one) for n in range(1, 5)))  # w reached
        await writer.drain()
        await reader.read()
        writer.close()

    async def main() -> None:
        server = await serve(port, handler)
        async with server, running(c, sink):
            await sink.until(lambda: len(sink.data()) == 1)
            assert requests == []
            go.set()
            await sink.until(lambda: len(sink.data()) == 5)
            assert len(requests) == 1

    asyncio.run(main())
