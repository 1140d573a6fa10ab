"""OCPP collector: the agent is the charging station management system (CSMS) for its piles.

Charge points connect over WebSocket to ``ws://<host>:<port>/<path>/<charge point id>`` with
subprotocol ``ocpp1.6`` (OCPP 1.6J) or ``ocpp2.0.1``; the ``ocpp`` library parses, validates
against the official JSON schemas and routes each message. BootNotification, Heartbeat,
StatusNotification and MeterValues (and 2.0.1 TransactionEvent meter values) become readings
of kind ``charging_pile`` (:mod:`.messages`, pure). A message is answered only after its
readings are in the agent's buffer: a charge point that gets no answer keeps the data and
sends it again, as OCPP requires.

Failures: if the listener cannot bind, connect raises RetryableError and the agent marks the
collector unavailable (once) until it can. A charge point that sends malformed messages gets
OCPP error responses from the library and is logged once; the others are unaffected.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar, cast

from edge_agent.schema import bounds, build

from collectors.base import Collector, ReadingSink
from collectors.ocpp.messages import (
    CHARGING_STATE_201,
    DeviceNames,
    meter_readings,
    status_16,
    status_201,
    status_readings,
    time_or,
)
from qilu.contract import Reading
from qilu.errors import ConfigError, RetryableError

logger = logging.getLogger(__name__)
Version = Literal["ocpp1.6", "ocpp2.0.1"]


@dataclass(frozen=True, slots=True)
class OcppConfig:
    """``[collectors.<name>]`` of type ``ocpp`` (see this folder's sample.toml)."""

    type: str = "ocpp"
    host: str = "127.0.0.1"  # "0.0.0.0" to accept charge points from the site network
    port: int = field(default=9000, metadata=bounds(0, 65535))  # 0: any free port (tests)
    path: str = "/ocpp"
    versions: list[Version] = field(default_factory=lambda: ["ocpp2.0.1", "ocpp1.6"])
    heartbeat_interval_s: int = field(default=60, metadata=bounds(10, 86_400))
    device_pattern: str = "{charge_point}"
    devices: dict[str, str] = field(default_factory=dict)  # "<cp id>/<connector>" -> device id


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class OcppCollector(Collector):
    type_name = "ocpp"

    def __init__(self, name: str, config: OcppConfig) -> None:
        super().__init__(name)
        self.config = config
        self.names = DeviceNames(config.device_pattern, dict(config.devices))
        self._server: Any = None
        self._sink: ReadingSink | None = None
        self._sink_ready = asyncio.Event()
        self.status: dict[tuple[str, int], tuple[int, bool]] = {}  # last known per connector
        self.connected: dict[str, str] = {}  # charge point id -> subprotocol
        self._warned: set[str] = set()

    @classmethod
    def from_config(cls, name: str, raw: Mapping[str, Any]) -> OcppCollector:
        return cls(name, build(OcppConfig, raw, f"collectors.{name}"))

    def _key(self, field_: str) -> str:
        return f"collectors.{self.name}.{field_}"

    def validate(self) -> None:
        c = self.config
        if not c.versions:
            raise ConfigError(self._key("versions"), "list at least one OCPP version")
        if not c.path.startswith("/"):
            raise ConfigError(self._key("path"), "must start with '/'")
        try:
            c.device_pattern.format(charge_point="CP", connector=1)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                self._key("device_pattern"),
                f"use only {{charge_point}} and {{connector}}: {exc}",
            ) from exc
        for key in c.devices:
            cp, _, conn = key.rpartition("/")
            if not cp or not conn.isdigit() or int(conn) < 1:
                raise ConfigError(self._key(f"devices.{key}"), "keys are '<charge point>/<n>'")

    @property
    def port(self) -> int:
        """The bound port (useful with ``port = 0``)."""
        if self._server is None:
            return self.config.port
        return int(self._server.sockets[0].getsockname()[1])

    # ------------------------------------------------------------------ server

    async def connect(self) -> None:
        from websockets.asyncio.server import serve

        await self.stop()
        c = self.config
        try:
            self._server = await serve(
                self._handle,
                c.host,
                c.port,
                subprotocols=list(c.versions),  # type: ignore[arg-type]
                ping_interval=max(20, c.heartbeat_interval_s),
            )
        except OSError as exc:
            raise RetryableError(f"cannot listen on {c.host}:{c.port}: {exc}") from exc
        logger.info("%s: OCPP endpoint ws://%s:%d%s/<charge point id> (%s)",
                    self.name, c.host, self.port, c.path, ", ".join(c.versions))  # fmt: skip

    async def collect(self, sink: ReadingSink) -> None:
        if self._server is None:
            await self.connect()
        self._sink = sink
        self._sink_ready.set()
        await asyncio.Event().wait()  # charge points drive everything from here

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        self._sink_ready.clear()

    async def emit(self, readings: Sequence[Reading]) -> None:
        """Hand readings to the agent; returns once they are durable."""
        if not readings:
            return
        await self._sink_ready.wait()
        sink = self._sink
        if sink is not None:
            await sink(readings)

    async def _handle(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        path = ws.request.path.rstrip("/")
        prefix = self.config.path.rstrip("/") + "/"
        cp_id = path[len(prefix) :] if path.startswith(prefix) else ""
        if not cp_id or "/" in cp_id:
            await ws.close(1008, f"connect to {prefix}<charge point id>")
            return
        proto = ws.subprotocol
        if proto not in self.config.versions:
            await ws.close(1002, "no supported OCPP subprotocol")
            return
        cls = _CentralSystem16 if proto == "ocpp1.6" else _CentralSystem201
        cp = cls(cp_id, ws, self)
        self.connected[cp_id] = proto
        logger.info("%s: charge point %s connected (%s)", self.name, cp_id, proto)
        try:
            await cp.start()
        except ConnectionClosed:
            pass
        finally:
            self.connected.pop(cp_id, None)
            logger.info("%s: charge point %s disconnected", self.name, cp_id)

    # ------------------------------------------------------------------ handlers' helpers

    def restate(self, cp_id: str, ts_us: int) -> list[Reading]:
        """Boot/heartbeat: the last known status of each connector, at ``ts_us``."""
        out: list[Reading] = []
        for (cp, connector), (code, fault) in self.status.items():
            device = self.names.device(cp, connector) if cp == cp_id else None
            if device is not None:
                out += status_readings(device, code, fault, ts_us)
        return out

    def note_status(
        self, cp_id: str, connector: int, state: tuple[int, bool] | None, ts_us: int, raw: str
    ) -> list[Reading]:
        device = self.names.device(cp_id, connector)
        if state is None:
            self.warn_once(cp_id, f"unknown connector status {raw!r}")
            return []
        if device is None:
            return []
        self.status[(cp_id, connector)] = state
        return status_readings(device, state[0], state[1], ts_us)

    def warn_once(self, cp_id: str, what: str) -> None:
        if cp_id not in self._warned:
            self._warned.add(cp_id)
            logger.warning("%s: charge point %s: %s (further ones not logged)",
                           self.name, cp_id, what)  # fmt: skip


def _now_us() -> int:
    return time.time_ns() // 1000


F = TypeVar("F", bound=Callable[..., Any])


def _route(action: str) -> Callable[[F], F]:
    """``ocpp.routing.on`` with a type: the library ships none."""
    from ocpp.routing import on

    return cast("Callable[[F], F]", on(action))


class _Answers:
    """What both OCPP versions do with a message, once; the version classes only name the
    library's routes, argument names and result types."""

    id: str
    owner: OcppCollector

    async def booted(self, result: Any, accepted: Any) -> Any:
        await self.owner.emit(self.owner.restate(self.id, _now_us()))
        return result.BootNotification(
            current_time=_now_iso(),
            interval=self.owner.config.heartbeat_interval_s,
            status=accepted,
        )

    async def beat(self, result: Any) -> Any:
        await self.owner.emit(self.owner.restate(self.id, _now_us()))
        return result.Heartbeat(current_time=_now_iso())

    async def status(
        self, connector: int, state: tuple[int, bool] | None, ts: str | None, raw: str
    ) -> None:
        ts_us = time_or(ts, _now_us())
        await self.owner.emit(self.owner.note_status(self.id, connector, state, ts_us, raw))

    async def metered(self, connector: int, meter_value: Sequence[Any]) -> None:
        device = self.owner.names.device(self.id, connector)
        if device is not None:
            await self.owner.emit(meter_readings(device, meter_value, _now_us()))


def _make_16() -> type:
    from ocpp.v16 import ChargePoint, call_result
    from ocpp.v16.enums import Action, RegistrationStatus

    class CentralSystem16(_Answers, ChargePoint):  # type: ignore[misc]
        def __init__(self, cp_id: str, ws: Any, owner: OcppCollector) -> None:
            super().__init__(cp_id, ws)
            self.owner = owner

        @_route(Action.boot_notification)
        async def on_boot(self, **_: Any) -> Any:
            return await self.booted(call_result, RegistrationStatus.accepted)

        @_route(Action.heartbeat)
        async def on_heartbeat(self, **_: Any) -> Any:
            return await self.beat(call_result)

        @_route(Action.status_notification)
        async def on_status(
            self, connector_id: int, error_code: str, status: str, **kw: Any
        ) -> Any:
            await self.status(
                connector_id, status_16(status, error_code), kw.get("timestamp"), status
            )
            return call_result.StatusNotification()

        @_route(Action.meter_values)
        async def on_meter_values(self, connector_id: int, meter_value: list[Any], **_: Any) -> Any:
            await self.metered(connector_id, meter_value)
            return call_result.MeterValues()

    return CentralSystem16


def _make_201() -> type:
    from ocpp.v201 import ChargePoint, call_result
    from ocpp.v201.enums import Action, RegistrationStatusEnumType

    class CentralSystem201(_Answers, ChargePoint):  # type: ignore[misc]
        def __init__(self, cp_id: str, ws: Any, owner: OcppCollector) -> None:
            super().__init__(cp_id, ws)
            self.owner = owner

        @_route(Action.boot_notification)
        async def on_boot(self, **_: Any) -> Any:
            return await self.booted(call_result, RegistrationStatusEnumType.accepted)

        @_route(Action.heartbeat)
        async def on_heartbeat(self, **_: Any) -> Any:
            return await self.beat(call_result)

        @_route(Action.status_notification)
        async def on_status(
            self, timestamp: str, connector_status: str, evse_id: int, **_: Any
        ) -> Any:
            await self.status(evse_id, status_201(connector_status), timestamp, connector_status)
            return call_result.StatusNotification()

        @_route(Action.meter_values)
        async def on_meter_values(self, evse_id: int, meter_value: list[Any], **_: Any) -> Any:
            await self.metered(evse_id, meter_value)
            return call_result.MeterValues()

        @_route(Action.transaction_event)
        async def on_transaction_event(
            self, timestamp: str, transaction_info: dict[str, Any], **kw: Any
        ) -> Any:
            evse = kw.get("evse") or {}
            evse_id = int(evse.get("id", 0)) if isinstance(evse, dict) else 0
            device = self.owner.names.device(self.id, evse_id)
            readings: list[Reading] = []
            if device is not None:
                ts = time_or(timestamp, _now_us())
                state = CHARGING_STATE_201.get(str(transaction_info.get("charging_state")))
                if state is not None:
                    readings += self.owner.note_status(
                        self.id, evse_id, (state, False), ts, "charging_state"
                    )
                readings += meter_readings(device, kw.get("meter_value") or (), ts)
            await self.owner.emit(readings)
            return call_result.TransactionEvent()

    return CentralSystem201


class _Lazy:
    """The handler classes need the ``ocpp`` package: build them on first use only."""

    def __init__(self, make: Any) -> None:
        self._make, self._cls = make, None

    def __call__(self, *args: Any) -> Any:
        if self._cls is None:
            self._cls = self._make()
        return self._cls(*args)  # type: ignore[misc]


_CentralSystem16 = _Lazy(_make_16)
_CentralSystem201 = _Lazy(_make_201)
