"""The MQTT collector against real Mosquitto brokers, uplinks published with ``mosquitto_pub``.

Uses the platform's Mosquitto (``qilu services up``) with a fresh application id per test, and
for the availability test a broker of its own on a free port that it stops and starts.
"""

# ruff: noqa: S101 - pytest asserts

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from collectors.metrics import REGISTRY
from collectors.mqtt import collector as mqtt_collector
from collectors.mqtt.collector import MqttCollector
from ops.services.mosquitto import _binary
from qilu.contract import Reading
from qilu.ports import free_port
from qilu.settings import load

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

EUI = "0004a30b001c0530"


def uplink(temp: float, fcnt: int) -> str:
    return json.dumps(
        {
            "deduplicationId": str(uuid.uuid4()),
            "time": f"2026-11-23T08:{fcnt // 60:02d}:{fcnt % 60:02d}.000000000Z",
            "deviceInfo": {"devEui": EUI, "deviceName": "collar-0001", "tags": {}},
            "fCnt": fcnt,
            "fPort": 2,
            "object": {"temperature": temp, "battery": 80},
        }
    )


def publish(port: int, app: str, payload: str, eui: str = EUI) -> None:
    subprocess.run(
        [
            "mosquitto_pub",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-q",
            "1",
            "-t",
            f"application/{app}/device/{eui}/event/up",
            "-m",
            payload,
        ],
        check=True,
        timeout=10,
    )


def collector(port: int, app: str, client_id: str, name: str = "lora") -> MqttCollector:
    c = MqttCollector.from_config(
        name,
        {
            "type": "mqtt",
            "port": port,
            "application_id": app,
            "client_id": client_id,
            "devices": {EUI: {"device_id": "RAN-370100-00001-0001", "kind": "collar"}},
            "aliases": {"temperature": "body_temp_c", "battery": "battery_pct"},
        },
    )
    c.validate()
    return c


class Sink:
    def __init__(self, fail_first: int = 0) -> None:
        self.readings: list[Reading] = []
        self.fail_first = fail_first

    async def __call__(self, rs: object) -> None:
        if self.fail_first:
            self.fail_first -= 1
            raise OSError("buffer unavailable (test)")
        self.readings += list(rs)  # type: ignore[call-overload]


async def wait_until(cond: object, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def shared_port() -> int:
    return load().services.mosquitto_port


def test_uplinks_published_with_mosquitto_pub_become_readings(shared_port: int) -> None:
    app = uuid.uuid4().hex
    c = collector(shared_port, app, f"qilu-test-{app[:8]}")
    states: list[bool] = []
    c.on_availability(lambda _n, up, _r: states.append(up))
    sink = Sink()

    async def main() -> None:
        await c.connect()
        task = asyncio.create_task(c.collect(sink))
        await wait_until(lambda: states == [True])
        for i in range(5):
            publish(shared_port, app, uplink(38.5 + i / 10, i))
        await wait_until(lambda: len(sink.readings) == 10)
        task.cancel()
        await c.stop()

    asyncio.run(main())
    temps = sorted(r.value for r in sink.readings if r.metric == "body_temp_c")
    assert temps == [38.5, 38.6, 38.7, 38.8, 38.9]
    assert {r.metric for r in sink.readings} == {"body_temp_c", "battery_pct"}


def test_numeric_strings_become_readings_and_other_strings_are_refused_with_a_reason(
    shared_port: int,
) -> None:
    """A codec that sends numbers as text ("38.6"): readings; "abc": refused, counted under
    ``not_a_number``, while the uplink's other fields are still stored."""
    app = uuid.uuid4().hex
    c = collector(shared_port, app, f"qilu-test-{app[:8]}")
    states: list[bool] = []
    c.on_availability(lambda _n, up, _r: states.append(up))
    sink = Sink()

    def text_uplink(fcnt: int, temp: str, battery: str) -> str:
        up = json.loads(uplink(0.0, fcnt))
        up["object"] = {"temperature": temp, "battery": battery}
        return json.dumps(up)

    async def main() -> None:
        await c.connect()
        task = asyncio.create_task(c.collect(sink))
        await wait_until(lambda: states == [True])
        publish(shared_port, app, text_uplink(1, "38.6", "80"))
        publish(shared_port, app, text_uplink(2, "abc", "79"))
        await wait_until(lambda: len(sink.readings) == 3)
        task.cancel()
        await c.stop()

    asyncio.run(main())
    assert sorted((r.metric, r.value) for r in sink.readings) == [
        ("battery_pct", 79.0),
        ("battery_pct", 80.0),
        ("body_temp_c", 38.6),
    ]
    assert c.rejected == {"not_a_number": 1}


def test_uplinks_without_time_handed_over_together_keep_their_own_receipt_times(
    shared_port: int,
) -> None:
    """Two uplinks of one device without ``time`` that wait in the collector together (an
    agent busy for a moment) become readings at the times they arrived, one after the other:
    sharing one time, the second's readings were the first's duplicates and the platform kept
    only the first (the walk-through's battery 86 after 87)."""
    app = uuid.uuid4().hex
    c = collector(shared_port, app, f"qilu-test-{app[:8]}")
    states: list[bool] = []
    c.on_availability(lambda _n, up, _r: states.append(up))
    sink = Sink()

    def untimed(battery: int) -> str:
        up = json.loads(uplink(38.5, 0))
        del up["time"]
        up["object"] = {"battery": battery}
        return json.dumps(up)

    async def main() -> None:
        await c.connect()
        await wait_until(lambda: states == [True])
        await asyncio.sleep(0.2)  # SUBACK
        publish(shared_port, app, untimed(87))
        publish(shared_port, app, untimed(86))
        queue = c._queue  # both uplinks wait there before collect takes a batch
        assert queue is not None
        await wait_until(lambda: queue.qsize() == 2)
        task = asyncio.create_task(c.collect(sink))
        await wait_until(lambda: len(sink.readings) == 2)
        task.cancel()
        await c.stop()

    asyncio.run(main())
    first, second = sink.readings
    assert (first.value, second.value) == (87.0, 86.0)
    assert first.ts_us < second.ts_us


def test_refusals_are_counted_on_the_agent_endpoint_and_logged_once_per_device_and_reason(
    shared_port: int, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every refusal counts in qilu_mqtt_refused_total{collector,reason}; the log says it once
    per (devEUI, reason), and remembers at most MAX_LOGGED pairs (here 3): a fourth pair is
    counted but logged at DEBUG only."""
    monkeypatch.setattr(mqtt_collector, "MAX_LOGGED", 3)
    app = uuid.uuid4().hex
    name = f"lora-{app[:8]}"
    c = collector(shared_port, app, f"qilu-test-{app[:8]}", name)
    states: list[bool] = []
    c.on_availability(lambda _n, up, _r: states.append(up))
    sink = Sink()
    strangers = ["00000000000000a1", "00000000000000a2", "00000000000000a3"]

    def refused(reason: str) -> float:
        labels = {"collector": name, "reason": reason}
        return REGISTRY.get_sample_value("qilu_mqtt_refused_total", labels) or 0.0

    def bad_uplink(fcnt: int) -> str:
        up = json.loads(uplink(0.0, fcnt))
        up["object"] = {"temperature": "abc", "battery": 80}
        return json.dumps(up)

    async def main() -> None:
        await c.connect()
        task = asyncio.create_task(c.collect(sink))
        await wait_until(lambda: states == [True])
        for i in range(3):
            publish(shared_port, app, bad_uplink(i))  # the known collar: battery kept
            for eui in strangers:
                up = json.loads(uplink(38.5, i))
                up["deviceInfo"]["devEui"] = eui
                publish(shared_port, app, json.dumps(up), eui)
        await wait_until(lambda: refused("unknown_device") == 9 and len(sink.readings) == 3)
        task.cancel()
        await c.stop()

    with caplog.at_level("DEBUG", logger="collectors.mqtt.collector"):
        asyncio.run(main())
    assert refused("not_a_number") == 3
    assert refused("unknown_device") == 9
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 3, warned  # 4 (device, reason) pairs; the memory holds 3
    assert sum("not_a_number" in w for w in warned) == 1
    assert "logged at DEBUG only" in warned[-1]
    debug = [r.getMessage() for r in caplog.records if r.levelname == "DEBUG"]
    assert any(strangers[2] in d for d in debug)  # the fourth pair: counted, at DEBUG


def test_uplinks_wait_in_the_broker_until_they_are_in_the_buffer(shared_port: int) -> None:
    """Persistent session + PUBACK after the sink: nothing is lost while the agent is away or
    while its buffer refuses a hand-over."""
    app = uuid.uuid4().hex
    client_id = f"qilu-test-{app[:8]}"
    first = collector(shared_port, app, client_id)
    states: list[bool] = []
    first.on_availability(lambda _n, up, _r: states.append(up))

    async def subscribe_then_leave() -> None:
        await first.connect()
        await wait_until(lambda: states == [True])
        await asyncio.sleep(0.2)  # SUBACK
        await first.stop()

    asyncio.run(subscribe_then_leave())
    for i in range(3):  # published while the agent is down
        publish(shared_port, app, uplink(39.0 + i, i))

    again = collector(shared_port, app, client_id)
    sink = Sink(fail_first=1)  # the buffer refuses the first hand-over: no PUBACK for it

    async def come_back() -> None:
        await again.connect()
        with pytest.raises(OSError, match="buffer unavailable"):
            await again.collect(sink)
        await again.connect()  # what the agent's supervisor does
        task = asyncio.create_task(again.collect(sink))
        await wait_until(lambda: len(sink.readings) >= 6)
        await asyncio.sleep(0.3)
        task.cancel()
        await again.stop()

    asyncio.run(come_back())
    temps = sorted(r.value for r in sink.readings if r.metric == "body_temp_c")
    assert temps == [39.0, 40.0, 41.0]


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[tuple[int, list[subprocess.Popen[bytes]], Path]]:
    binary = _binary() or shutil.which("mosquitto")
    if binary is None:
        pytest.fail("mosquitto is not installed: run `qilu services up` first")
    port = free_port()
    conf = tmp_path / "m.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    procs: list[subprocess.Popen[bytes]] = []
    yield port, procs, conf
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)


def start_broker(conf: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    binary = str(_binary() or "mosquitto")
    procs.append(subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL))


def test_broker_loss_marks_unavailable_once_and_recovered_once(
    own_broker: tuple[int, list[subprocess.Popen[bytes]], Path],
) -> None:
    port, procs, conf = own_broker
    c = collector(port, "app", "qilu-test-avail")
    calls: list[bool] = []
    c.on_availability(lambda _n, up, _r: calls.append(up))

    def transitions() -> list[bool]:
        out: list[bool] = []
        for up in calls:
            if not out or out[-1] != up:
                out.append(up)
        return out

    async def main() -> None:
        await c.connect()  # no broker yet
        await wait_until(lambda: transitions() == [False], 15)
        start_broker(conf, procs)
        await wait_until(lambda: transitions() == [False, True], 20)
        procs[-1].kill()
        procs[-1].wait()
        await wait_until(lambda: transitions() == [False, True, False], 20)
        start_broker(conf, procs)
        await wait_until(lambda: transitions() == [False, True, False, True], 40)
        await c.stop()

    asyncio.run(main())


def agent_collector(agent_id: str, port: int, app: str) -> MqttCollector:
    """The ``lora`` collector of agent ``agent_id``, built by the agent runtime from a
    configuration without a client id (the default)."""
    from edge_agent import config, runtime

    from qilu import signing

    table = {
        "agent": {"id": agent_id, "metrics_port": 0},
        "auth": {"key_no": 1, "signing_key": signing.generate_key().private_b64},
        "collectors": {
            "lora": {
                "type": "mqtt",
                "port": port,
                "application_id": app,
                "devices": {EUI: {"device_id": "RAN-370100-00001-0001", "kind": "collar"}},
                "aliases": {"temperature": "body_temp_c", "battery": "battery_pct"},
            }
        },
    }
    (c,) = runtime.build_collectors(config.parse(table, environ={}))
    assert isinstance(c, MqttCollector)
    return c


def test_two_agents_with_a_same_named_collector_both_stay_connected(shared_port: int) -> None:
    """Issue 12 item 4: the default client id carries the agent id. With a shared default the
    broker would hand the session to each new connection and drop the other agent's."""
    app = uuid.uuid4().hex
    agents = {f"gw-{app[:6]}-{n}": Sink() for n in ("a", "b")}
    collectors = {a: agent_collector(a, shared_port, app) for a in agents}
    states: dict[str, list[bool]] = {a: [] for a in agents}
    for a, c in collectors.items():
        c.on_availability(lambda _n, up, _r, a=a: states[a].append(up))  # type: ignore[misc]
    assert {c.client_id for c in collectors.values()} == {f"qilu-{a}-lora" for a in agents}

    async def main() -> None:
        tasks = []
        for a, c in collectors.items():
            await c.connect()
            await wait_until(lambda a=a: states[a] == [True])
            tasks.append(asyncio.create_task(c.collect(agents[a])))
        await asyncio.sleep(0.2)  # SUBACKs
        for i in range(5):  # both subscribe to the same application: each gets every uplink
            publish(shared_port, app, uplink(38.0 + i, i))
        await wait_until(lambda: all(len(s.readings) == 10 for s in agents.values()), 20)
        # connected once each, never knocked off (a disconnect is reported as False)
        connected.update({a: list(v) for a, v in states.items()})
        for t in tasks:
            t.cancel()
        for c in collectors.values():
            await c.stop()

    connected: dict[str, list[bool]] = {}
    asyncio.run(main())
    assert connected == {a: [True] for a in agents}
    for sink in agents.values():
        temps = sorted(r.value for r in sink.readings if r.metric == "body_temp_c")
        assert temps == [38.0, 39.0, 40.0, 41.0, 42.0]
