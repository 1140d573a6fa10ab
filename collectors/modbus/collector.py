"""Modbus TCP collector: polls a substation RTU whose register map is data.

Every ``poll_s`` seconds it reads the planned register blocks (:mod:`.registers`, pure) with
pymodbus's asyncio client and hands one reading per point to the agent, stamped with the poll
time. Transformers, bus meters and GIS monitors are all just points: ``device_id`` + ``metric``
(a metric of the device's kind in ``qilu.devices``), address, word type, scale, unit, and for
alarms a bit of a status word.

Failures: a lost connection or a timeout raises RetryableError; the agent marks the collector
unavailable once, reconnects with backoff and marks it available once the RTU answers again.
An exception response (e.g. an illegal address in the map) skips that block's readings and is
logged once per block, while the rest of the map keeps being read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from collectors.base import Collector, ReadingSink
from collectors.modbus.registers import Block, Point, decode, plan
from qilu.contract import Quality, Reading
from qilu.devices import DEVICE_KINDS
from qilu.errors import ConfigError, RetryableError
from qilu.schema import bounds, build

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ModbusConfig:
    """``[collectors.<name>]`` of type ``modbus`` (see this folder's sample.toml)."""

    type: str = "modbus"
    host: str = ""
    port: int = field(default=502, metadata=bounds(1, 65535))
    unit_id: int = field(default=1, metadata=bounds(0, 255))
    poll_s: float = field(default=5.0, metadata=bounds(0.05))
    timeout_s: float = field(default=3.0, metadata=bounds(positive=True))
    max_gap: int = field(default=8, metadata=bounds(0, 100))
    points: list[Point] = field(default_factory=list)


_METRICS = {m.key: m for k in DEVICE_KINDS for m in k.metrics}


class ModbusCollector(Collector):
    type_name = "modbus"

    def __init__(self, name: str, config: ModbusConfig) -> None:
        super().__init__(name)
        self.config = config
        self.blocks: list[Block] = plan(config.points, max_gap=config.max_gap)
        self._client: Any = None
        self._failing_blocks: set[tuple[str, int]] = set()
        self.polls = 0

    @classmethod
    def from_config(cls, name: str, raw: Mapping[str, Any]) -> ModbusCollector:
        return cls(name, build(ModbusConfig, raw, f"collectors.{name}"))

    def _key(self, field_: str) -> str:
        return f"collectors.{self.name}.{field_}"

    def validate(self) -> None:
        c = self.config
        if not c.host:
            raise ConfigError(self._key("host"), "is required (the RTU's address)")
        if not c.points:
            raise ConfigError(self._key("points"), "is empty: list the register map")
        seen: set[tuple[str, str]] = set()
        for i, p in enumerate(c.points):
            key = f"points[{i}]"
            spec = _METRICS.get(p.metric)
            if spec is None:
                raise ConfigError(self._key(f"{key}.metric"), f"{p.metric!r} is not a metric key")
            if p.unit != spec.unit:
                raise ConfigError(
                    self._key(f"{key}.unit"),
                    f"{p.unit!r} is not the unit of {p.metric} ({spec.unit!r}): "
                    "set scale so the value is in that unit",
                )
            if p.scale == 0:
                raise ConfigError(self._key(f"{key}.scale"), "must not be 0")
            if p.address + p.words > 65536:
                raise ConfigError(self._key(f"{key}.address"), "runs past register 65535")
            if (p.device_id, p.metric) in seen:
                raise ConfigError(self._key(key), f"{p.device_id} {p.metric} is mapped twice")
            seen.add((p.device_id, p.metric))

    async def connect(self) -> None:
        from pymodbus.client import AsyncModbusTcpClient

        await self.stop()
        c = self.config
        client = AsyncModbusTcpClient(
            c.host,
            port=c.port,
            timeout=c.timeout_s,
            retries=1,
            reconnect_delay=0,  # the agent's supervisor owns reconnecting and its backoff
        )
        if not await client.connect():
            client.close()
            raise RetryableError(f"cannot connect to the RTU at {c.host}:{c.port}")
        self._client = client

    async def poll_once(self) -> list[Reading]:
        """Read every block once; RetryableError when the RTU does not answer."""
        from pymodbus.exceptions import ModbusException

        client = self._client
        if client is None or not client.connected:
            raise RetryableError("not connected to the RTU")
        now = time.time_ns() // 1000
        out: list[Reading] = []
        for b in self.blocks:
            read = (
                client.read_holding_registers
                if b.table == "holding"
                else client.read_input_registers
            )
            try:
                rr = await read(b.address, count=b.count, device_id=self.config.unit_id)
            except ModbusException as exc:  # connection lost, timeout
                raise RetryableError(f"RTU read failed: {exc}") from exc
            key = (b.table, b.address)
            if rr.isError():
                if key not in self._failing_blocks:
                    self._failing_blocks.add(key)
                    logger.warning(
                        "%s: RTU refused %s registers %d-%d (%s); skipping them",
                        self.name, b.table, b.address, b.address + b.count - 1, rr,
                    )  # fmt: skip
                continue
            self._failing_blocks.discard(key)
            for p, value in decode(b, rr.registers):
                out.append(Reading(p.device_id, p.metric, now, value, Quality.GOOD))
        self.polls += 1
        return out

    async def collect(self, sink: ReadingSink) -> None:
        if self._client is None:
            await self.connect()
        period = self.config.poll_s
        next_at = time.monotonic()
        while True:
            readings = await self.poll_once()
            self.available(True)
            if readings:
                await sink(readings)
            next_at += period
            delay = next_at - time.monotonic()
            if delay < 0:  # fell behind (slow RTU): skip the missed slots, never burst
                next_at = time.monotonic()
                delay = 0
            await asyncio.sleep(delay)

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
