"""MQTT collector: LoRaWAN uplinks of ranch collars and barn sensors, via ChirpStack v4.

Subscribes (QoS 1, persistent session) to ``application/<id>/device/+/event/up`` on the MQTT
broker ChirpStack publishes to, and turns each uplink's decoded ``object`` into readings
(:mod:`collectors.mqtt.chirpstack`, pure). An uplink is acknowledged to the broker (PUBACK)
only after the agent's buffer committed its readings, so uplinks that arrive while the agent
is down or busy stay queued in the broker's session and are redelivered, never lost.

paho-mqtt runs its network loop in its own thread; messages cross into the agent's event loop
through a queue. Connection loss marks the collector unavailable (once) and paho reconnects
with backoff; the first successful CONNACK marks it available again (once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter as PromCounter

from collectors import metrics as agent_metrics
from collectors.base import Collector, ReadingSink
from collectors.mqtt.chirpstack import TOPIC, DeviceMap, LoraDevice, UplinkError, decode_uplink
from qilu.devices import KINDS
from qilu.errors import ConfigError
from qilu.schema import bounds, build

logger = logging.getLogger(__name__)
# on the agent's metrics endpoint (its own registry)
REFUSED = PromCounter(
    "qilu_mqtt_refused_total",
    "Uplinks without readings and metric fields the MQTT collector refused (not stored)",
    ["collector", "reason"],
    registry=agent_metrics.REGISTRY,
)
# (device, reason) pairs remembered as logged, per collector; beyond, new ones go to DEBUG
# (random devEUIs on a shared broker cannot grow the memory or flood the log)
MAX_LOGGED = 1024


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    device_id: str
    kind: str


@dataclass(frozen=True, slots=True)
class MqttConfig:
    """``[collectors.<name>]`` of type ``mqtt`` (see this folder's sample.toml)."""

    type: str = "mqtt"
    host: str = "127.0.0.1"
    port: int = field(default=1883, metadata=bounds(1, 65535))
    application_id: str = "+"  # "+": every application
    # default: qilu-<agent id>-<collector name>; fixed, so the session persists, and distinct
    # between agents, so two agents' same-named collectors do not take each other's session
    client_id: str = ""
    username: str = ""
    password: str = ""
    qos: int = field(default=1, metadata=bounds(0, 1))
    keepalive_s: int = field(default=30, metadata=bounds(5, 3600))
    max_batch: int = field(default=500, metadata=bounds(1, 10_000))
    devices: dict[str, DeviceEntry] = field(default_factory=dict)  # devEUI -> device
    aliases: dict[str, str] = field(default_factory=dict)  # object field -> metric key


class MqttCollector(Collector):
    type_name = "mqtt"

    def __init__(self, name: str, config: MqttConfig, *, agent_id: str = "") -> None:
        super().__init__(name)
        self.config = config
        self.agent_id = agent_id
        self.devices = DeviceMap(
            {k.lower(): LoraDevice(v.device_id, v.kind) for k, v in config.devices.items()},
            dict(config.aliases),
        )
        self._client: Any = None
        self._queue: asyncio.Queue[Any] | None = None
        # reason -> uplinks without readings, or metric fields refused (not_a_number)
        self.rejected: dict[str, int] = {}
        self._warned: set[tuple[str, str]] = set()  # (devEUI, reason) logged once
        self._last_received_us = 0  # the last uplink's receipt time as given (µs)

    @classmethod
    def from_config(cls, name: str, raw: Mapping[str, Any], agent_id: str = "") -> MqttCollector:
        return cls(name, build(MqttConfig, raw, f"collectors.{name}"), agent_id=agent_id)

    @property
    def client_id(self) -> str:
        """The configured client id, or ``qilu-<agent id>-<collector name>``: the broker
        keeps one session per client id and disconnects the older of two connections with
        the same id, so a default shared by two agents would knock both off in turn."""
        if self.config.client_id:
            return self.config.client_id
        return f"qilu-{self.agent_id}-{self.name}" if self.agent_id else f"qilu-{self.name}"

    def _key(self, field_: str) -> str:
        return f"collectors.{self.name}.{field_}"

    @property
    def topic(self) -> str:
        return f"application/{self.config.application_id}/device/+/event/up"

    def validate(self) -> None:
        c = self.config
        if not c.host:
            raise ConfigError(self._key("host"), "is empty")
        if "/" in c.application_id or "#" in c.application_id:
            raise ConfigError(self._key("application_id"), "one application id, or '+' for all")
        for eui, dev in c.devices.items():
            if len(eui) != 16 or any(ch not in "0123456789abcdefABCDEF" for ch in eui):
                raise ConfigError(self._key(f"devices.{eui}"), "a devEUI is 16 hex digits")
            if dev.kind not in KINDS:
                raise ConfigError(
                    self._key(f"devices.{eui}.kind"),
                    f"unknown device kind {dev.kind!r} (known: {', '.join(sorted(KINDS))})",
                )
        metrics = {m.key for k in KINDS.values() for m in k.metrics}
        for src, dst in c.aliases.items():
            if dst not in metrics:
                raise ConfigError(self._key(f"aliases.{src}"), f"{dst!r} is not a metric key")

    async def connect(self) -> None:
        from paho.mqtt import client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        await self.stop()  # a reconnect after a failure: drop the old client first
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._queue = queue
        c = self.config
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=False,  # the broker keeps our subscription and unacked uplinks
            manual_ack=True,  # PUBACK only once the readings are in the buffer
        )
        if c.username:
            client.username_pw_set(c.username, c.password or None)
        client.reconnect_delay_set(1, 30)

        def on_connect(cl: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
            if rc.is_failure:
                loop.call_soon_threadsafe(self.available, False, f"CONNACK refused: {rc}")
                return
            cl.subscribe(self.topic, qos=c.qos)
            loop.call_soon_threadsafe(self.available, True, "")

        def on_disconnect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(self.available, False, f"disconnected: {rc}")

        def on_connect_fail(_c: Any, _u: Any) -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(
                    self.available, False, f"cannot connect to {c.host}:{c.port}"
                )

        def on_message(_c: Any, _u: Any, msg: Any) -> None:
            if not loop.is_closed():
                # stamped on arrival: an uplink without ``time`` takes its own receipt time
                loop.call_soon_threadsafe(queue.put_nowait, (time.time_ns() // 1000, msg))

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_connect_fail = on_connect_fail
        client.on_message = on_message
        client.connect_async(c.host, c.port, keepalive=c.keepalive_s)
        client.loop_start()
        self._client = client

    async def collect(self, sink: ReadingSink) -> None:
        if self._queue is None:
            await self.connect()
        queue = self._queue
        assert queue is not None  # noqa: S101 - set by connect
        while True:
            batch = [await queue.get()]
            while not queue.empty() and len(batch) < self.config.max_batch:
                batch.append(queue.get_nowait())
            readings = []
            for received_us, msg in batch:
                # distinct per uplink: two uplinks of a device (without ``time``) handed over
                # in one batch took the batch's time, and the second's readings were dropped
                # as duplicates of the first's (same device, metric, time)
                now = self._last_received_us = max(received_us, self._last_received_us + 1)
                try:
                    up = decode_uplink(msg.topic, msg.payload, self.devices, now)
                except UplinkError as exc:
                    self._reject(exc, msg.topic)
                    continue
                readings += up.readings
                for refused in up.refused:  # the uplink's other fields are kept
                    self._reject(refused, msg.topic)
            if readings:
                await sink(readings)  # on disk when this returns
            for _, msg in batch:
                if msg.qos > 0:
                    self._client.ack(msg.mid, msg.qos)

    def _reject(self, exc: UplinkError, topic: str) -> None:
        """Count a refusal (``qilu_mqtt_refused_total``); log it once per device and reason,
        never per uplink."""
        self.rejected[exc.reason] = self.rejected.get(exc.reason, 0) + 1
        REFUSED.labels(self.name, exc.reason).inc()
        m = TOPIC.match(topic)
        key = (m.group(2).lower() if m else topic, exc.reason)
        if key in self._warned:
            return
        if len(self._warned) >= MAX_LOGGED:
            logger.debug("%s: uplink of %r refused (%s)", self.name, key[0], exc)
            return
        self._warned.add(key)
        logger.warning(
            "%s: uplink of device %r refused (%s); further ones of this device and reason are "
            "only counted (qilu_mqtt_refused_total)%s",
            self.name, key[0], exc,
            "; more devices and reasons are logged at DEBUG only"
            if len(self._warned) == MAX_LOGGED else "",
        )  # fmt: skip

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            await asyncio.get_running_loop().run_in_executor(None, client.loop_stop)
        self._queue = None
