"""The Modbus collector against pymodbus's own TCP server acting as a substation RTU.

The server holds the sample register map's words (encoded with the same map), on a free
loopback port; the test reads them back through the real protocol, then stops the server to
see the failure, and starts it again to see the recovery.
"""

# ruff: noqa: S101 - pytest asserts

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from collectors.modbus.collector import ModbusCollector
from collectors.modbus.registers import encode
from qilu.errors import RetryableError
from qilu.ports import free_port

pytestmark = pytest.mark.timeout(60)

SAMPLE = Path(__file__).parent.parent / "sample.toml"
TRUTH = {
    "oil_temp_c": 65.3,
    "winding_temp_c": 78.9,
    "load_pct": 72.4,
    "voltage_kv": 231.5,
    "frequency_hz": 49.987,
    "sf6_pressure_mpa": 0.552,
    "pd_pc": 120_000.0,  # beyond 16 bits: a real uint32
    "sf6_alarm": 0.0,
    "pd_alarm": 1.0,
}


def collector(port: int, **extra: Any) -> ModbusCollector:
    raw = tomllib.loads(SAMPLE.read_text())["collectors"]["sub_rtu"]
    raw = {**raw, "host": "127.0.0.1", "port": port, "timeout_s": 1.0, **extra}
    c = ModbusCollector.from_config("sub_rtu", raw)
    c.validate()
    return c


def rtu_image(c: ModbusCollector) -> SimDevice:
    """The RTU's registers: every point of the map encoded from TRUTH."""
    words: dict[str, dict[int, int]] = {"holding": {}, "input": {}}
    for p in c.config.points:
        for i, w in enumerate(encode(p, TRUTH[p.metric])):
            words[p.table][p.address + i] = words[p.table].get(p.address + i, 0) | w

    def blocks(table: str) -> list[SimData]:
        return [
            SimData(address=a, values=[v], datatype=DataType.REGISTERS)
            for a, v in sorted(words[table].items())
        ]

    bits = [SimData(address=0, values=[False], datatype=DataType.BITS)]  # unused, not empty
    return SimDevice(id=1, simdata=(bits, bits, blocks("holding"), blocks("input")))


async def start_server(c: ModbusCollector, port: int) -> ModbusTcpServer:
    server = ModbusTcpServer(rtu_image(c), address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    return server


def test_polls_the_register_map_through_the_real_protocol() -> None:
    port = free_port()
    c = collector(port)

    async def main() -> list[Any]:
        server = await start_server(c, port)
        try:
            await c.connect()
            first = await c.poll_once()
            second = await c.poll_once()
        finally:
            await c.stop()
            await server.shutdown()  # type: ignore[no-untyped-call]
        return [first, second]

    first, second = asyncio.run(main())
    got = {r.metric: r.value for r in first}
    assert set(got) == set(TRUTH)
    for metric, value in TRUTH.items():
        assert got[metric] == pytest.approx(value, rel=1e-6, abs=1e-3), metric
    assert {r.device_id for r in first if r.metric == "pd_alarm"} == {"SUB-370100-00029-0006"}
    assert len({r.ts_us for r in first}) == 1  # one poll, one time stamp
    assert second[0].ts_us > first[0].ts_us


def test_a_refused_block_is_skipped_and_the_rest_still_read() -> None:
    port = free_port()
    c = collector(port)
    bad = {
        "device_id": "SUB-370100-00001-0002",
        "metric": "load_pct",
        "address": 900,
        "type": "uint16",
        "scale": 0.1,
        "unit": "%",
    }
    raw_points = [
        {
            f: getattr(p, f)
            for f in (
                "device_id",
                "metric",
                "address",
                "type",
                "table",
                "scale",
                "offset",
                "unit",
                "bit",
                "word_order",
            )
        }
        for p in c.config.points
    ]
    wider = collector(port, points=[*raw_points, bad])

    async def main() -> list[Any]:
        server = await start_server(c, port)  # the RTU has no register 900
        try:
            await wider.connect()
            return await wider.poll_once()
        finally:
            await wider.stop()
            await server.shutdown()  # type: ignore[no-untyped-call]

    got = asyncio.run(main())
    assert {r.metric for r in got} == set(TRUTH)  # every point of the readable blocks
    assert len(got) == len(TRUTH)
    assert not [r for r in got if r.device_id == "SUB-370100-00001-0002"]  # the refused one
    assert wider._failing_blocks == {("holding", 900)}


def test_rtu_loss_raises_retryable_and_reconnect_recovers() -> None:
    port = free_port()
    c = collector(port)

    async def main() -> None:
        with pytest.raises(RetryableError):
            await c.connect()  # nothing listens yet
        server = await start_server(c, port)
        await c.connect()
        assert await c.poll_once()
        await server.shutdown()  # type: ignore[no-untyped-call]
        await asyncio.sleep(0.2)

        async def read_three_times() -> None:
            for _ in range(3):  # the client notices the closed connection on the next read
                await c.poll_once()

        with pytest.raises(RetryableError):
            await read_three_times()
        server = await start_server(c, port)
        await c.connect()
        assert len(await c.poll_once()) == len(TRUTH)
        await c.stop()
        await server.shutdown()  # type: ignore[no-untyped-call]

    asyncio.run(main())
