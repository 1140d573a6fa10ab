"""OCPP collector: the agent is the charging station management system (CSMS) for its piles.

Charge points connect over WebSocket to ``ws://<host>:<port>/<path>/<charge point id>`` with
subprotocol ``ocpp1.6`` (OCPP 1.6J) or ``ocpp2.0.1``; the ``ocpp`` library parses, validates
against the official JSON schemas and routes each message. A connection to another path, or
one that offers no supported subprotocol, is refused in the handshake (HTTP 404 / 400) and
logged once per path and reason.

BootNotification, Heartbeat, StatusNotification, MeterValues, 1.6 StopTransaction
(``transactionData``) and 2.0.1 TransactionEvent become readings of kind ``charging_pile``
(:mod:`.messages`, pure). Authorize, StartTransaction and the id token of a TransactionEvent
are answered by the configured authorisation policy (:class:`.messages.Authorization`). A
message is answered only after its readings are in the agent's buffer: a charge point that
gets no answer keeps the data and sends it again, as OCPP requires.

Transactions: the connector each transaction runs on (:mod:`.transactions`) is kept per
charge point across its connections and, with ``state_file``, across agent restarts, so that
2.0.1 TransactionEvents without ``evse`` and 1.6 StopTransaction land on the right device.
Readings that still cannot be placed are counted (``qilu_ocpp_unplaced_readings_total``) and
logged once per charge point and reason.

Logging: each OCPP message (the ``ocpp`` library's lines) and each WebSocket handshake
(``websockets``' lines) at DEBUG, under ``collectors.ocpp.collector.wire``; a charge point
connecting and disconnecting at INFO; the first problem of each kind per charge point at
WARNING, later ones at DEBUG.

Failures: if the listener cannot bind, connect raises RetryableError and the agent marks the
collector unavailable (once) until it can. A charge point that sends malformed messages gets
OCPP error responses from the library; the others are unaffected.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any, Literal, TypeVar, cast
from urllib.parse import unquote

from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import CollectorRegistry
from prometheus_client import Counter as PromCounter

from collectors import metrics as agent_metrics
from collectors.base import Collector, DistinctTimes, ReadingSink
from collectors.ocpp.messages import (
    CHARGING_STATE_201,
    Authorization,
    DeviceNames,
    Policy,
    meter_readings,
    status_16,
    status_201,
    status_readings,
    time_or,
)
from collectors.ocpp.transactions import Transactions
from qilu.contract import Reading
from qilu.errors import ConfigError, RetryableError
from qilu.fileio import write_atomic
from qilu.schema import bounds, build

logger = logging.getLogger(__name__)
wire_logger = logger.getChild("wire")
Version = Literal["ocpp1.6", "ocpp2.0.1"]
# the registry on the agent's metrics endpoint: its own where the agent keeps one
AGENT_REGISTRY: CollectorRegistry = getattr(agent_metrics, "REGISTRY", DEFAULT_REGISTRY)
UNPLACED = PromCounter(
    "qilu_ocpp_unplaced_readings_total",
    "Readings of OCPP messages that could not be placed on a connector's device (not stored)",
    ["collector", "reason"],
    registry=AGENT_REGISTRY,
)
# reasons: the transaction's connector is unknown (no evse, its start was not seen), or the
# message is for connector 0, the charge point as a whole, which is no device
UNKNOWN_TRANSACTION, CONNECTOR_0 = "unknown_transaction", "connector_0"
_MAX_ONCE = 1024  # remembered "logged once" keys per collector; beyond, problems go to DEBUG


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
    authorization: Policy = "reject"  # who may charge: "accept" all, an "allow_list", nobody
    id_tags: list[str] = field(default_factory=list)  # the allow-list (case-insensitive)
    state_file: str = ""  # where the transaction map survives agent restarts; "": memory only


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class _Quiet(logging.LoggerAdapter[logging.Logger]):
    """A library's log lines: per-message INFO lines at DEBUG; with ``first_problem``, only
    the first warning or error (per charge point) at its level, later ones at DEBUG."""

    def __init__(
        self, target: logging.Logger, first_problem: Callable[[], bool] | None = None
    ) -> None:
        super().__init__(target, {})
        self._first_problem = first_problem

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if level == logging.INFO:
            level = logging.DEBUG
        elif level >= logging.WARNING and self._first_problem is not None:
            level = level if self._first_problem() else logging.DEBUG
        super().log(level, msg, *args, **kwargs)


class OcppCollector(Collector):
    type_name = "ocpp"

    def __init__(self, name: str, config: OcppConfig) -> None:
        super().__init__(name)
        self.config = config
        self.names = DeviceNames(config.device_pattern, dict(config.devices))
        self.auth = Authorization.of(config.authorization, config.id_tags)
        self.transactions = Transactions()
        self.times = DistinctTimes()
        self.unplaced: Counter[str] = Counter()  # readings not placed, by reason
        self._server: Any = None
        self._sink: ReadingSink | None = None
        self._sink_ready = asyncio.Event()
        self._loaded = False
        self._save_lock = asyncio.Lock()
        self.status: dict[tuple[str, int], tuple[int, bool]] = {}  # last known per connector
        self.connected: dict[str, str] = {}  # charge point id -> subprotocol
        self._once: set[Hashable] = set()

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
        for i, tag in enumerate(c.id_tags):
            if not tag.strip():
                raise ConfigError(self._key(f"id_tags[{i}]"), "is empty")
        if c.authorization == "allow_list" and not c.id_tags:
            raise ConfigError(
                self._key("id_tags"), "list the id tags allowed to charge (authorization is "
                "'allow_list'), or set authorization to 'reject'"
            )  # fmt: skip
        if c.id_tags and c.authorization != "allow_list":
            raise ConfigError(
                self._key("authorization"),
                f"is {c.authorization!r}, so id_tags would be ignored: set 'allow_list'",
            )

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
        self._load_transactions()
        c = self.config
        try:
            self._server = await serve(
                self._handle,
                c.host,
                c.port,
                subprotocols=list(c.versions),  # type: ignore[arg-type]
                select_subprotocol=self._select_subprotocol,
                process_request=self._check_path,
                ping_interval=max(20, c.heartbeat_interval_s),
                logger=_Quiet(logging.getLogger("websockets.server")),
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
        readings = self.times.apply(readings)
        await self._sink_ready.wait()
        sink = self._sink
        if sink is not None:
            await sink(readings)

    def charge_point_id(self, path: str) -> str | None:
        """``<path>/<charge point id>`` (URL-encoded, query ignored) -> the id, else None."""
        prefix = self.config.path.rstrip("/") + "/"
        path = path.partition("?")[0].rstrip("/")
        cp_id = unquote(path[len(prefix) :]) if path.startswith(prefix) else ""
        return cp_id if cp_id and "/" not in cp_id else None

    def _check_path(self, connection: Any, request: Any) -> Any:
        """The handshake's first step: refuse (HTTP 404) a path without a charge point id."""
        if self.charge_point_id(request.path) is not None:
            return None
        where = self.config.path.rstrip("/") + "/<charge point id>"
        self._refused(connection, request.path, "path", f"wrong path, connect to {where}")
        return connection.respond(HTTPStatus.NOT_FOUND, f"connect to {where}\n")

    def _select_subprotocol(self, connection: Any, offered: Sequence[str]) -> Any:
        """The first of ``versions`` the charge point offers; else refuse (HTTP 400)."""
        from websockets.exceptions import NegotiationError

        for version in self.config.versions:
            if version in offered:
                return version
        supported = ", ".join(self.config.versions)
        reason = (
            f"offers only the subprotocol(s) {', '.join(offered)}; supported: {supported}"
            if offered
            else f"offers no WebSocket subprotocol; supported: {supported}"
        )
        kind = "unsupported subprotocol" if offered else "no subprotocol"
        self._refused(connection, connection.request.path, kind, reason)
        raise NegotiationError(reason)

    def _refused(self, connection: Any, path: str, kind: str, reason: str) -> None:
        peer = connection.remote_address
        self._log_once(
            ("refused", path, kind),
            "%s: refused a charge point connection to %s from %s: %s "
            "(further refusals of this path for this reason not logged)",
            self.name, path, peer[0] if peer else "?", reason,
        )  # fmt: skip

    async def _handle(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        cp_id = self.charge_point_id(ws.request.path)
        proto = ws.subprotocol
        if cp_id is None or proto not in self.config.versions:  # refused in the handshake
            await ws.close(1002, "no charge point id or no supported OCPP subprotocol")
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

    # ------------------------------------------------------------------ transactions

    def _load_transactions(self) -> None:
        """The map a previous run left in ``state_file`` (once, at the first connect)."""
        path = self.config.state_file
        if self._loaded or not path:
            return
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            self._loaded = True
            return
        except OSError as exc:
            raise RetryableError(f"{self._key('state_file')}: cannot read {path}: {exc}") from exc
        self._loaded = True
        try:
            self.transactions = Transactions.loads(text)
        except ValueError as exc:
            logger.warning(
                "%s: %s is not a transaction map (%s); starting without one, it is replaced at "
                "the next transaction", self.name, path, exc,
            )  # fmt: skip

    async def _save_transactions(self) -> None:
        path = self.config.state_file
        if not path:
            return
        async with self._save_lock:
            try:
                await asyncio.to_thread(write_atomic, Path(path), self.transactions.dumps())
            except OSError as exc:
                self._log_once(
                    ("state_file",),
                    "%s: cannot write %s (%s): transactions are kept in memory only "
                    "(further failures not logged)", self.name, path, exc,
                )  # fmt: skip

    async def place(self, cp_id: str, tx_id: str, connector: int | None) -> int | None:
        """The connector of a transaction's message (see :meth:`Transactions.place`); a
        change of the map is saved before the message is answered."""
        where, changed = self.transactions.place(cp_id, tx_id, connector)
        if changed:
            await self._save_transactions()
        return where

    async def start_transaction(self, cp_id: str, connector: int) -> int:
        """A new 1.6 transaction id on ``connector``, saved before it is handed out."""
        tx_id = self.transactions.new_id(int(time.time()))
        self.transactions.place(cp_id, str(tx_id), connector)
        await self._save_transactions()
        return tx_id

    def count_unplaced(self, cp_id: str, reason: str, n: int, tx_id: str) -> None:
        self.unplaced[reason] += n
        UNPLACED.labels(self.name, reason).inc(n)
        what = (
            f"transaction {tx_id!r} names no connector and its start was not seen"
            if reason == UNKNOWN_TRANSACTION
            else "connector 0 (the charge point as a whole) is no device"
        )
        self._log_once(
            ("unplaced", cp_id, reason),
            "%s: charge point %s: %d reading(s) not stored: %s (counted in "
            "qilu_ocpp_unplaced_readings_total{reason=%r}, further ones not logged)",
            self.name, cp_id, n, what, reason,
        )  # fmt: skip

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

    def first_problem(self, key: Hashable) -> bool:
        """True the first time ``key`` is seen (at most _MAX_ONCE keys are remembered)."""
        if key in self._once or len(self._once) >= _MAX_ONCE:
            return False
        self._once.add(key)
        return True

    def _log_once(self, key: Hashable, msg: str, *args: object) -> None:
        level = logging.WARNING if self.first_problem(key) else logging.DEBUG
        logger.log(level, msg, *args)

    def warn_once(self, cp_id: str, what: str) -> None:
        self._log_once(("status", cp_id), "%s: charge point %s: %s (further ones not logged)",
                       self.name, cp_id, what)  # fmt: skip


def _now_us() -> int:
    return time.time_ns() // 1000


F = TypeVar("F", bound=Callable[..., Any])


def _route(action: str) -> Callable[[F], F]:
    """``ocpp.routing.on`` with a type: the library ships none."""
    from ocpp.routing import on

    return cast("Callable[[F], F]", on(action))


def _id_tag_info(auth: Authorization, id_tag: object) -> dict[str, str]:
    return {"status": auth.status(str(id_tag or ""))}


class _Answers:
    """What both OCPP versions do with a message, once; the version classes only name the
    library's routes, argument names and result types."""

    id: str
    owner: OcppCollector

    def _wire_log(self, cp_id: str, owner: OcppCollector) -> _Quiet:
        return _Quiet(wire_logger, lambda: owner.first_problem(("ocpp", cp_id)))

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

    def meter(
        self, connector: int | None, meter_value: Any, now_us: int, tx_id: str = ""
    ) -> list[Reading]:
        """Meter values on the connector's device; counted and logged when there is none."""
        device = None if connector is None else self.owner.names.device(self.id, connector)
        readings = meter_readings(device or "", meter_value or (), now_us)
        if device is None and readings:
            reason = UNKNOWN_TRANSACTION if connector is None else CONNECTOR_0
            self.owner.count_unplaced(self.id, reason, len(readings), tx_id)
            return []
        return readings


def _make_16() -> type:
    from ocpp.v16 import ChargePoint, call_result
    from ocpp.v16.enums import Action, RegistrationStatus

    class CentralSystem16(_Answers, ChargePoint):  # type: ignore[misc]
        def __init__(self, cp_id: str, ws: Any, owner: OcppCollector) -> None:
            super().__init__(cp_id, ws, logger=self._wire_log(cp_id, owner))
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
        async def on_meter_values(
            self, connector_id: int, meter_value: list[Any], **kw: Any
        ) -> Any:
            tx = kw.get("transaction_id")
            tx_id = "" if tx is None else str(tx)
            connector: int | None = connector_id
            if tx_id:  # through the transaction map: on connector > 0 it learns the connector
                # of a transaction started before a restart; connector 0 with a transaction
                # means that transaction's connector (None, not placed, when it is unknown)
                connector = await self.owner.place(
                    self.id, tx_id, connector_id if connector_id > 0 else None
                )
            await self.owner.emit(self.meter(connector, meter_value, _now_us(), tx_id))
            return call_result.MeterValues()

        @_route(Action.authorize)
        async def on_authorize(self, id_tag: str, **_: Any) -> Any:
            return call_result.Authorize(id_tag_info=_id_tag_info(self.owner.auth, id_tag))

        @_route(Action.start_transaction)
        async def on_start_transaction(self, connector_id: int, id_tag: str, **_: Any) -> Any:
            tx_id = await self.owner.start_transaction(self.id, connector_id)
            return call_result.StartTransaction(
                transaction_id=tx_id, id_tag_info=_id_tag_info(self.owner.auth, id_tag)
            )

        @_route(Action.stop_transaction)
        async def on_stop_transaction(self, timestamp: str, transaction_id: int, **kw: Any) -> Any:
            tx_id = str(transaction_id)
            connector = await self.owner.place(self.id, tx_id, None)
            data = kw.get("transaction_data")
            await self.owner.emit(self.meter(connector, data, time_or(timestamp, _now_us()), tx_id))
            id_tag = kw.get("id_tag")
            return call_result.StopTransaction(
                id_tag_info=None if id_tag is None else _id_tag_info(self.owner.auth, id_tag)
            )

    return CentralSystem16


def _make_201() -> type:
    from ocpp.v201 import ChargePoint, call_result
    from ocpp.v201.enums import Action, RegistrationStatusEnumType

    class CentralSystem201(_Answers, ChargePoint):  # type: ignore[misc]
        def __init__(self, cp_id: str, ws: Any, owner: OcppCollector) -> None:
            super().__init__(cp_id, ws, logger=self._wire_log(cp_id, owner))
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
            await self.owner.emit(self.meter(evse_id, meter_value, _now_us()))
            return call_result.MeterValues()

        @_route(Action.authorize)
        async def on_authorize(self, id_token: dict[str, Any], **_: Any) -> Any:
            return call_result.Authorize(
                id_token_info=_id_tag_info(self.owner.auth, id_token.get("id_token"))
            )

        @_route(Action.transaction_event)
        async def on_transaction_event(
            self, timestamp: str, transaction_info: dict[str, Any], **kw: Any
        ) -> Any:
            tx_id = str(transaction_info.get("transaction_id") or "")
            evse = kw.get("evse")
            named = int(evse["id"]) if isinstance(evse, dict) and "id" in evse else None
            connector = await self.owner.place(self.id, tx_id, named)
            ts = time_or(timestamp, _now_us())
            readings: list[Reading] = []
            state = CHARGING_STATE_201.get(str(transaction_info.get("charging_state")))
            if state is not None and connector is not None:
                readings += self.owner.note_status(
                    self.id, connector, (state, False), ts, "charging_state"
                )
            elif state is not None:  # its status readings have no device either
                n = len(status_readings("", state, False, ts))
                self.owner.count_unplaced(self.id, UNKNOWN_TRANSACTION, n, tx_id)
            readings += self.meter(connector, kw.get("meter_value"), ts, tx_id)
            await self.owner.emit(readings)
            token = kw.get("id_token")
            return call_result.TransactionEvent(
                id_token_info=None
                if not isinstance(token, dict)
                else _id_tag_info(self.owner.auth, token.get("id_token"))
            )

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
