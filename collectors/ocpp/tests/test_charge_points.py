"""The OCPP collector as CSMS, with charge points built from the same ``ocpp`` library.

Real WebSocket connections on loopback: OCPP 1.6J and 2.0.1 charge points boot, report
status, meter values and heartbeats; the readings that come out are checked, and so is the
rule that a message is answered only once its readings are durable.
"""

# ruff: noqa: S101 - pytest asserts

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from collectors.ocpp.collector import OcppCollector
from qilu.contract import Reading

pytestmark = pytest.mark.timeout(60)


class Sink:
    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, rs: Sequence[Reading]) -> None:
        await self.gate.wait()
        self.readings += rs


async def running(devices: dict[str, str] | None = None) -> tuple[OcppCollector, Sink, Any]:
    c = OcppCollector.from_config(
        "piles",
        {
            "type": "ocpp",
            "port": 0,
            "device_pattern": "{charge_point}-{connector}",
            "devices": devices or {},
        },
    )
    c.validate()
    await c.connect()
    sink = Sink()
    task = asyncio.create_task(c.collect(sink))
    return c, sink, task


async def charge_point(cls: type, c: OcppCollector, cp_id: str, proto: str) -> tuple[Any, Any]:
    ws = await connect(f"ws://127.0.0.1:{c.port}/ocpp/{cp_id}", subprotocols=[Subprotocol(proto)])
    cp = cls(cp_id, ws)
    listener = asyncio.create_task(cp.start())
    return cp, (ws, listener)


def by_metric(rs: list[Reading], device: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for r in rs:
        if r.device_id == device:
            out.setdefault(r.metric, []).append(r.value)
    return out


def test_ocpp16_charge_point_session_becomes_readings() -> None:
    async def main() -> list[Reading]:
        c, sink, task = await running({"CP-16/1": "CHG-370100-00001-0001"})
        cp, (ws, listener) = await charge_point(ChargePoint16, c, "CP-16", "ocpp1.6")
        boot = await cp.call(
            call16.BootNotification(charge_point_model="AC7", charge_point_vendor="Qilu")
        )
        assert boot.status == "Accepted"
        assert boot.interval == 60
        await cp.call(
            call16.StatusNotification(
                connector_id=1,
                error_code="NoError",
                status="Charging",
                timestamp="2026-11-23T08:00:00Z",
            )
        )
        await cp.call(
            call16.StatusNotification(connector_id=2, error_code="GroundFailure", status="Faulted")
        )
        await cp.call(
            call16.MeterValues(
                connector_id=1,
                transaction_id=7,
                meter_value=[
                    {
                        "timestamp": "2026-11-23T08:00:30Z",
                        "sampledValue": [
                            {
                                "value": "15000",
                                "measurand": "Energy.Active.Import.Register",
                                "unit": "Wh",
                            },
                            {"value": "7000", "measurand": "Power.Active.Import", "unit": "W"},
                        ],
                    }
                ],
            )
        )
        await cp.call(call16.Heartbeat())
        await ws.close()
        listener.cancel()
        task.cancel()
        await c.stop()
        return sink.readings

    rs = asyncio.run(main())
    one = by_metric(rs, "CHG-370100-00001-0001")
    # Charging (2) from the StatusNotification, then re-stated by the heartbeat
    assert one["connector_status"] == [2.0, 2.0]
    assert one["fault"] == [0.0, 0.0]
    assert one["energy_kwh"] == [15.0]
    assert one["power_kw"] == [7.0]
    two = by_metric(rs, "CP-16-2")
    assert two["connector_status"] == [8.0, 8.0]  # Faulted
    assert two["fault"] == [1.0, 1.0]


def test_ocpp201_charging_station_session_becomes_readings() -> None:
    async def main() -> list[Reading]:
        c, sink, task = await running()
        cp, (ws, listener) = await charge_point(ChargePoint201, c, "CS-201", "ocpp2.0.1")
        boot = await cp.call(
            call201.BootNotification(
                charging_station={"model": "DC120", "vendor_name": "Qilu"}, reason="PowerUp"
            )
        )
        assert boot.status == "Accepted"
        await cp.call(
            call201.StatusNotification(
                timestamp="2026-11-23T08:00:00Z",
                connector_status="Occupied",
                evse_id=1,
                connector_id=1,
            )
        )
        await cp.call(
            call201.TransactionEvent(
                event_type="Updated",
                timestamp="2026-11-23T08:01:00Z",
                trigger_reason="MeterValuePeriodic",
                seq_no=1,
                transaction_info={"transactionId": "T-1", "chargingState": "Charging"},
                evse={"id": 1, "connectorId": 1},
                meter_value=[
                    {
                        "timestamp": "2026-11-23T08:01:00Z",
                        "sampledValue": [
                            {
                                "value": 42.5,
                                "measurand": "Energy.Active.Import.Register",
                                "unitOfMeasure": {"unit": "kWh"},
                            },
                            {
                                "value": 118.0,
                                "measurand": "Power.Active.Import",
                                "unitOfMeasure": {"unit": "kW"},
                            },
                        ],
                    }
                ],
            )
        )
        await cp.call(
            call201.MeterValues(
                evse_id=1,
                meter_value=[
                    {
                        "timestamp": "2026-11-23T08:01:30Z",
                        "sampledValue": [
                            {"value": 43500.0, "measurand": "Energy.Active.Import.Register"}
                        ],
                    }
                ],
            )
        )
        await ws.close()
        listener.cancel()
        task.cancel()
        await c.stop()
        return sink.readings

    rs = asyncio.run(main())
    one = by_metric(rs, "CS-201-1")
    assert one["connector_status"] == [1.0, 2.0]  # Occupied -> Preparing, then Charging
    assert one["energy_kwh"] == [42.5, 43.5]  # kWh, then the default Wh
    assert one["power_kw"] == [118.0]


def test_a_message_is_answered_only_once_its_readings_are_durable() -> None:
    async def main() -> None:
        c, sink, task = await running()
        cp, (ws, listener) = await charge_point(ChargePoint16, c, "CP-SLOW", "ocpp1.6")
        sink.gate.clear()  # the buffer has not committed yet
        pending = asyncio.create_task(
            cp.call(
                call16.StatusNotification(connector_id=1, error_code="NoError", status="Available")
            )
        )
        await asyncio.sleep(0.5)
        assert not pending.done()  # no answer while the readings are not on disk
        sink.gate.set()
        await asyncio.wait_for(pending, 5)
        assert [r.metric for r in sink.readings] == ["connector_status", "fault"]
        await ws.close()
        listener.cancel()
        task.cancel()
        await c.stop()

    asyncio.run(main())


def test_connections_without_ocpp_or_charge_point_id_are_refused() -> None:
    from websockets.exceptions import ConnectionClosed, InvalidHandshake

    async def main() -> None:
        c, _, task = await running()
        ws = await connect(
            f"ws://127.0.0.1:{c.port}/ocpp/", subprotocols=[Subprotocol("ocpp1.6")]
        )  # no id
        with pytest.raises(ConnectionClosed):
            await ws.recv()

        async def without_subprotocol() -> None:
            ws2 = await connect(f"ws://127.0.0.1:{c.port}/ocpp/CP1")
            await ws2.recv()

        with pytest.raises((InvalidHandshake, ConnectionClosed)):
            await without_subprotocol()
        task.cancel()
        await c.stop()

    asyncio.run(main())
