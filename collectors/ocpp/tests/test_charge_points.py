"""The OCPP collector as CSMS, with charge points built from the same ``ocpp`` library.

Real WebSocket connections on loopback: OCPP 1.6J and 2.0.1 charge points boot, report
status, meter values and heartbeats, authorise and run charging sessions, disconnect and
come back; the readings that come out are checked, and so are the rule that a message is
answered only once its readings are durable, the authorisation policies, the transaction map
across reconnects and agent restarts, and what is logged at which level.
"""

# ruff: noqa: S101 - pytest asserts

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from collectors.ocpp.collector import AGENT_REGISTRY, OcppCollector
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


async def running(
    devices: dict[str, str] | None = None, name: str = "piles", **options: Any
) -> tuple[OcppCollector, Sink, Any]:
    c = OcppCollector.from_config(
        name,
        {
            "type": "ocpp",
            "port": 0,
            "device_pattern": "{charge_point}-{connector}",
            "devices": devices or {},
            **options,
        },
    )
    c.validate()
    await c.connect()
    sink = Sink()
    task = asyncio.create_task(c.collect(sink))
    return c, sink, task


STATION_LOG = logging.getLogger("test.station")  # the station side's lines, apart from the CSMS's


async def charge_point(cls: type, c: OcppCollector, cp_id: str, proto: str) -> tuple[Any, Any]:
    ws = await connect(f"ws://127.0.0.1:{c.port}/ocpp/{cp_id}", subprotocols=[Subprotocol(proto)])
    cp = cls(cp_id, ws, logger=STATION_LOG)
    listener = asyncio.create_task(cp.start())
    return cp, (ws, listener)


@asynccontextmanager
async def station(cls: type, c: OcppCollector, cp_id: str, proto: str) -> AsyncIterator[Any]:
    """One connection of a charge point; closed (the station goes away) on exit."""
    cp, (ws, listener) = await charge_point(cls, c, cp_id, proto)
    try:
        yield cp
    finally:
        await ws.close()
        listener.cancel()


async def shut(c: OcppCollector, task: Any) -> None:
    task.cancel()
    await c.stop()


def unplaced(c: OcppCollector, reason: str) -> float:
    """``qilu_ocpp_unplaced_readings_total`` of the collector, as the agent's endpoint serves it."""
    labels = {"collector": c.name, "reason": reason}
    value = AGENT_REGISTRY.get_sample_value("qilu_ocpp_unplaced_readings_total", labels)
    return value or 0.0


def energy(value_wh: float, ts: str) -> list[dict[str, Any]]:
    """A meter value of the energy register, OCPP JSON (the station side sends camelCase)."""
    return [
        {
            "timestamp": ts,
            "sampledValue": [
                {"value": str(value_wh), "measurand": "Energy.Active.Import.Register"}
            ],
        }
    ]


def energy_201(value_wh: float, ts: str) -> list[dict[str, Any]]:
    return [
        {
            "timestamp": ts,
            "sampledValue": [{"value": value_wh, "measurand": "Energy.Active.Import.Register"}],
        }
    ]


def tx_event(event: str, seq: int, tx: str, ts: str, **kw: Any) -> Any:
    return call201.TransactionEvent(
        event_type=event,
        timestamp=ts,
        trigger_reason={"Started": "CablePluggedIn", "Ended": "EVCommunicationLost"}.get(
            event, "MeterValuePeriodic"
        ),
        seq_no=seq,
        transaction_info={"transactionId": tx, **kw.pop("info", {})},
        **kw,
    )


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


def test_two_statuses_stamped_with_one_second_both_arrive_in_order() -> None:
    """Preparing -> Charging within a second: real piles stamp both with the same whole second;
    both readings reach the agent, the later 1 µs after the earlier, so neither is refused."""

    async def main() -> list[Reading]:
        c, sink, task = await running({"CP-S/1": "CHG-370100-00001-0001"})
        cp, (ws, listener) = await charge_point(ChargePoint16, c, "CP-S", "ocpp1.6")
        for status in ("Preparing", "Charging"):
            await cp.call(
                call16.StatusNotification(
                    connector_id=1,
                    error_code="NoError",
                    status=status,
                    timestamp="2026-11-23T08:00:00Z",
                )
            )
        await ws.close()
        listener.cancel()
        task.cancel()
        await c.stop()
        return sink.readings

    rs = [r for r in asyncio.run(main()) if r.metric == "connector_status"]
    assert [r.value for r in rs] == [1.0, 2.0]
    assert rs[1].ts_us == rs[0].ts_us + 1
    assert len({(r.device_id, r.metric, r.ts_us) for r in rs}) == 2


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


def test_ocpp201_events_without_evse_land_on_the_connector_their_transaction_started_on() -> None:
    """Updated and Ended may omit ``evse``; a reconnect in between changes nothing."""

    async def main() -> tuple[list[Reading], OcppCollector, float, float]:
        c, sink, task = await running(name="tx201")
        before = unplaced(c, "unknown_transaction")
        async with station(ChargePoint201, c, "CS-TX", "ocpp2.0.1") as cp:
            await cp.call(
                tx_event(
                    "Started", 0, "T-9", "2026-11-23T09:00:00Z",
                    evse={"id": 2, "connectorId": 1},
                    meter_value=energy_201(10_000, "2026-11-23T09:00:00Z"),
                )
            )  # fmt: skip
            await cp.call(
                tx_event(
                    "Updated", 1, "T-9", "2026-11-23T09:05:00Z",
                    info={"chargingState": "Charging"},
                    meter_value=energy_201(11_000, "2026-11-23T09:05:00Z"),
                )
            )  # fmt: skip
        # the station lost its connection and comes back
        async with station(ChargePoint201, c, "CS-TX", "ocpp2.0.1") as cp:
            await cp.call(
                tx_event(
                    "Updated", 2, "T-9", "2026-11-23T09:10:00Z",
                    meter_value=energy_201(12_000, "2026-11-23T09:10:00Z"),
                )
            )  # fmt: skip
            await cp.call(
                tx_event(
                    "Ended", 3, "T-9", "2026-11-23T09:15:00Z",
                    meter_value=energy_201(13_000, "2026-11-23T09:15:00Z"),
                )
            )  # fmt: skip
            # a transaction this agent never saw start, twice: nowhere to put its readings
            for seq in (7, 8):
                await cp.call(
                    tx_event(
                        "Updated", seq, "T-ELSEWHERE", "2026-11-23T09:16:00Z",
                        meter_value=energy_201(99_000, "2026-11-23T09:16:00Z"),
                    )
                )  # fmt: skip
        after = unplaced(c, "unknown_transaction")
        await shut(c, task)
        return sink.readings, c, before, after

    rs, c, before, after = asyncio.run(main())
    two = by_metric(rs, "CS-TX-2")
    assert two["energy_kwh"] == [10.0, 11.0, 12.0, 13.0]
    assert two["connector_status"] == [2.0]  # Charging, from the Updated event
    assert {r.device_id for r in rs} == {"CS-TX-2"}
    assert c.unplaced == {"unknown_transaction": 2}
    assert after - before == 2


def test_unplaced_readings_are_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="collectors.ocpp")

    async def main() -> OcppCollector:
        c, _, task = await running(name="unplaced16")
        async with station(ChargePoint16, c, "CP-U", "ocpp1.6") as cp:
            for wh in (1000, 2000):  # connector 0: the charge point's own meter, no device
                await cp.call(
                    call16.MeterValues(
                        connector_id=0, meter_value=energy(wh, "2026-11-23T09:00:00Z")
                    )
                )
            await cp.call(
                call16.StopTransaction(
                    meter_stop=5000,
                    timestamp="2026-11-23T09:30:00Z",
                    transaction_id=424242,  # never started here
                    transaction_data=energy(5000, "2026-11-23T09:30:00Z"),
                )
            )
        await shut(c, task)
        return c

    c = asyncio.run(main())
    assert c.unplaced == {"connector_0": 2, "unknown_transaction": 1}
    assert unplaced(c, "connector_0") == 2
    assert unplaced(c, "unknown_transaction") == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if "connector 0" in w]) == 1, warnings
    assert len([w for w in warnings if "'424242'" in w]) == 1, warnings


def test_ocpp16_meter_values_on_connector_0_with_a_transaction_go_through_the_map() -> None:
    """Connector 0 with a transactionId: the readings belong on that transaction's connector;
    with a transaction never seen here they count as unknown_transaction, not connector_0."""

    async def main() -> tuple[list[Reading], OcppCollector]:
        c, sink, task = await running(name="tx16zero")
        async with station(ChargePoint16, c, "CP-Z", "ocpp1.6") as cp:
            start = await cp.call(
                call16.StartTransaction(
                    connector_id=2, id_tag="TAG", meter_start=1_000,
                    timestamp="2026-11-23T10:00:00Z",
                )
            )  # fmt: skip
            for tx in (start.transaction_id, 777):  # 777: never started here
                await cp.call(
                    call16.MeterValues(
                        connector_id=0,
                        transaction_id=tx,
                        meter_value=energy(3_000, "2026-11-23T10:10:00Z"),
                    )
                )
        await shut(c, task)
        return sink.readings, c

    rs, c = asyncio.run(main())
    assert by_metric(rs, "CP-Z-2")["energy_kwh"] == [3.0]
    assert {r.device_id for r in rs} == {"CP-Z-2"}
    assert c.unplaced == {"unknown_transaction": 1}
    assert unplaced(c, "unknown_transaction") == 1
    assert unplaced(c, "connector_0") == 0


def test_ocpp201_charging_state_of_an_unknown_transaction_is_counted() -> None:
    """A TransactionEvent whose transaction cannot be placed: its chargingState (the
    connector_status and fault readings it would give) is counted, not silently dropped."""

    async def main() -> tuple[list[Reading], OcppCollector]:
        c, sink, task = await running(name="state201")
        async with station(ChargePoint201, c, "CS-Q", "ocpp2.0.1") as cp:
            await cp.call(
                tx_event(
                    "Updated", 1, "T-NOWHERE", "2026-11-23T09:05:00Z",
                    info={"chargingState": "Charging"},
                )
            )  # fmt: skip
        await shut(c, task)
        return sink.readings, c

    rs, c = asyncio.run(main())
    assert rs == []
    assert c.unplaced == {"unknown_transaction": 2}
    assert unplaced(c, "unknown_transaction") == 2


def test_ocpp16_charging_session_with_an_allow_list() -> None:
    async def main() -> tuple[list[Reading], list[Any]]:
        c, sink, task = await running(
            name="session16", authorization="allow_list", id_tags=["TAG-OK"]
        )
        answers: list[Any] = []
        async with station(ChargePoint16, c, "CP-S", "ocpp1.6") as cp:
            answers.append(await cp.call(call16.Authorize(id_tag="tag-ok")))  # any case
            answers.append(await cp.call(call16.Authorize(id_tag="TAG-STOLEN")))
            start = await cp.call(
                call16.StartTransaction(
                    connector_id=2,
                    id_tag="TAG-OK",
                    meter_start=20_000,
                    timestamp="2026-11-23T10:00:00Z",
                )
            )
            answers.append(start)
            await cp.call(
                call16.MeterValues(
                    connector_id=2,
                    transaction_id=start.transaction_id,
                    meter_value=energy(21_000, "2026-11-23T10:10:00Z"),
                )
            )
            answers.append(
                await cp.call(
                    call16.StopTransaction(
                        meter_stop=22_500,
                        timestamp="2026-11-23T10:20:00Z",
                        transaction_id=start.transaction_id,
                        id_tag="TAG-OK",
                        reason="EVDisconnected",
                        transaction_data=[
                            *energy(20_000, "2026-11-23T10:00:00Z"),
                            *energy(22_500, "2026-11-23T10:20:00Z"),
                        ],
                    )
                )
            )
            # a stranger's tag: refused, yet the transaction gets its id (OCPP requires one)
            answers.append(
                await cp.call(
                    call16.StartTransaction(
                        connector_id=1,
                        id_tag="TAG-STOLEN",
                        meter_start=0,
                        timestamp="2026-11-23T11:00:00Z",
                    )
                )
            )
        await shut(c, task)
        return sink.readings, answers

    rs, (ok, stolen, start, stop, refused) = asyncio.run(main())
    assert ok.id_tag_info["status"] == "Accepted"
    assert stolen.id_tag_info["status"] == "Invalid"
    assert start.id_tag_info["status"] == "Accepted"
    assert isinstance(start.transaction_id, int)
    assert stop.id_tag_info["status"] == "Accepted"
    assert refused.id_tag_info["status"] == "Invalid"
    assert refused.transaction_id > start.transaction_id
    # MeterValues, then StopTransaction's transactionData, on the transaction's connector
    assert by_metric(rs, "CP-S-2")["energy_kwh"] == [21.0, 20.0, 22.5]


@pytest.mark.parametrize(("policy", "expected"), [("accept", "Accepted"), ("reject", "Invalid")])
def test_ocpp16_authorisation_policies(policy: str, expected: str) -> None:
    async def main() -> Any:
        c, _, task = await running(name=f"auth-{policy}", authorization=policy)
        async with station(ChargePoint16, c, "CP-A", "ocpp1.6") as cp:
            answer = await cp.call(call16.Authorize(id_tag="ANY-TAG"))
        await shut(c, task)
        return answer

    assert asyncio.run(main()).id_tag_info["status"] == expected


def test_ocpp201_authorize_and_transaction_id_tokens_follow_the_policy() -> None:
    async def main() -> list[Any]:
        c, _, task = await running(name="auth201", authorization="allow_list", id_tags=["04A1B2C3"])
        async with station(ChargePoint201, c, "CS-A", "ocpp2.0.1") as cp:
            answers = [
                await cp.call(call201.Authorize(id_token={"idToken": token, "type": "ISO14443"}))
                for token in ("04a1b2c3", "DEADBEEF")
            ]
            answers.append(
                await cp.call(
                    tx_event(
                        "Started", 0, "T-A", "2026-11-23T12:00:00Z",
                        evse={"id": 1},
                        id_token={"idToken": "04A1B2C3", "type": "ISO14443"},
                    )
                )
            )  # fmt: skip
        await shut(c, task)
        return answers

    ok, unknown, started = asyncio.run(main())
    assert ok.id_token_info["status"] == "Accepted"
    assert unknown.id_token_info["status"] == "Invalid"
    assert started.id_token_info["status"] == "Accepted"


def test_the_transaction_map_survives_an_agent_restart_in_its_state_file(tmp_path: Path) -> None:
    state = tmp_path / "state" / "ocpp-piles.json"

    async def main() -> tuple[list[Reading], int, int]:
        c, sink, task = await running(name="restart", state_file=str(state))
        async with station(ChargePoint201, c, "CS-R", "ocpp2.0.1") as cp:
            await cp.call(tx_event("Started", 0, "T-R", "2026-11-23T13:00:00Z", evse={"id": 3}))
        async with station(ChargePoint16, c, "CP-R", "ocpp1.6") as cp:
            first = await cp.call(
                call16.StartTransaction(
                    connector_id=2, id_tag="X", meter_start=0, timestamp="2026-11-23T13:00:00Z"
                )
            )
        await shut(c, task)

        # a new agent process: nothing in memory, the same state file
        c, sink2, task = await running(name="restart", state_file=str(state))
        async with station(ChargePoint201, c, "CS-R", "ocpp2.0.1") as cp:
            await cp.call(
                tx_event(
                    "Ended", 1, "T-R", "2026-11-23T13:30:00Z",
                    meter_value=energy_201(7_000, "2026-11-23T13:30:00Z"),
                )
            )  # fmt: skip
        async with station(ChargePoint16, c, "CP-R", "ocpp1.6") as cp:
            await cp.call(
                call16.StopTransaction(
                    meter_stop=8_000,
                    timestamp="2026-11-23T13:30:00Z",
                    transaction_id=first.transaction_id,
                    transaction_data=energy(8_000, "2026-11-23T13:30:00Z"),
                )
            )
            second = await cp.call(
                call16.StartTransaction(
                    connector_id=2, id_tag="X", meter_start=8_000, timestamp="2026-11-23T14:00:00Z"
                )
            )
        await shut(c, task)
        return sink.readings + sink2.readings, first.transaction_id, second.transaction_id

    rs, first, second = asyncio.run(main())
    assert by_metric(rs, "CS-R-3")["energy_kwh"] == [7.0]
    assert by_metric(rs, "CP-R-2")["energy_kwh"] == [8.0]
    assert second > first  # no transaction id is handed out twice


def test_messages_are_logged_at_debug_and_refusals_once_with_the_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)

    async def main() -> None:
        c, _, task = await running(name="quiet")
        async with station(ChargePoint16, c, "CP-Q", "ocpp1.6") as cp:
            await cp.call(
                call16.BootNotification(charge_point_model="AC7", charge_point_vendor="Qilu")
            )
            await cp.call(call16.Heartbeat())
        for _ in range(2):
            with pytest.raises(InvalidStatus) as err:
                await connect(
                    f"ws://127.0.0.1:{c.port}/charger/CP-Q", subprotocols=[Subprotocol("ocpp1.6")]
                )
            assert err.value.response.status_code == 404
            with pytest.raises(InvalidStatus):
                await connect(
                    f"ws://127.0.0.1:{c.port}/ocpp/", subprotocols=[Subprotocol("ocpp1.6")]
                )
            with pytest.raises(InvalidHandshake):
                await connect(f"ws://127.0.0.1:{c.port}/ocpp/CP-Q")  # no subprotocol
            with pytest.raises(InvalidHandshake):
                await connect(
                    f"ws://127.0.0.1:{c.port}/ocpp/CP-Q", subprotocols=[Subprotocol("ocpp1.5")]
                )
        # two malformed messages: the first problem is logged, the second only at DEBUG
        ws = await connect(
            f"ws://127.0.0.1:{c.port}/ocpp/CP-Q", subprotocols=[Subprotocol("ocpp1.6")]
        )
        for n in (1, 2):
            await ws.send(f'[2,"bad-{n}","StatusNotification",{{"connectorId":"one"}}]')
            assert str(await ws.recv()).startswith(f'[4,"bad-{n}"')  # a CALLERROR answer
        await ws.close()
        await shut(c, task)

    asyncio.run(main())
    ours = [
        r for r in caplog.records if r.name.split(".")[0] in ("ocpp", "websockets", "collectors")
    ]
    loud = [r.getMessage() for r in ours if r.levelno >= logging.INFO]
    assert not [m for m in loud if "BootNotification" in m or "Heartbeat" in m], loud
    assert not [m for m in loud if m.startswith(("connection open", "connection rejected"))], loud
    wire = [
        r.getMessage()
        for r in ours
        if r.name == "collectors.ocpp.collector.wire" and r.levelno == logging.DEBUG
    ]
    assert [m for m in wire if "BootNotification" in m], wire
    refusals = [
        r.getMessage() for r in ours if r.levelno == logging.WARNING and "refused" in r.getMessage()
    ]
    assert len(refusals) == 4, refusals  # one per path and reason, not one per attempt
    assert any("/charger/CP-Q" in m and "wrong path" in m for m in refusals)
    assert any("/ocpp/ " in m and "wrong path" in m for m in refusals)
    assert any("offers no WebSocket subprotocol" in m for m in refusals)
    assert any("offers only the subprotocol(s) ocpp1.5" in m for m in refusals)
    problems = [r for r in ours if r.levelno >= logging.WARNING and "bad-" in r.getMessage()]
    assert len(problems) == 1, [r.getMessage() for r in problems]
    assert [r for r in ours if r.levelno == logging.DEBUG and "bad-2" in r.getMessage()]


def test_connections_are_refused_in_the_handshake_without_id_or_subprotocol() -> None:
    async def main() -> None:
        c, _, task = await running()
        with pytest.raises(InvalidStatus) as err:
            await connect(f"ws://127.0.0.1:{c.port}/ocpp/", subprotocols=[Subprotocol("ocpp1.6")])
        assert err.value.response.status_code == 404  # OCPP 1.6J: unknown charge point id
        with pytest.raises((InvalidHandshake, ConnectionClosed)):
            await connect(f"ws://127.0.0.1:{c.port}/ocpp/CP1")
        await shut(c, task)

    asyncio.run(main())
