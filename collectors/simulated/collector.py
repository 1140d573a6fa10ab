"""The simulated collector: the deterministic feed of a set of registered sites, on a timer.

A thin adapter around :class:`collectors.simulated.models.SimulatedFeed`: it reads the clock,
polls the feed every ``tick_s`` and hands what is due to the sink. Everything it sends is
decided by the feed (seed, start time, silence plan), so tests drive it with a fake clock.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from collectors.base import Collector, ReadingSink
from collectors.simulated.models import SilencePlan, SimulatedFeed
from qilu.errors import ConfigError
from qilu.registry import Device, Registry
from qilu.schema import build

logger = logging.getLogger(__name__)

SILENCE_HORIZON_S = 30 * 86_400.0  # a random silence plan covers 30 days from the start


@dataclass(frozen=True, slots=True)
class SimulatedConfig:
    """``[collectors.<name>]`` of type ``simulated`` (see this folder's sample.toml); checked
    by qilu.schema like the other collectors' tables, so the module imports without pydantic
    (the registry the collector simulates is generated from the catalog, which needs it)."""

    sites: list[str]  # site ids from the registry; must not be empty
    type: str = "simulated"
    seed: int = 1  # same seed and registry: same readings
    tick_s: float = 1.0  # how often the feed is polled; the readings do not depend on it
    silence: Literal["none", "random"] = "random"  # random: ~3 % dead, ~5 % flaky, rare outages


def wall_clock_us() -> int:
    """Now, in integer microseconds UTC."""
    return time.time_ns() // 1000


class SimulatedCollector(Collector):
    """Simulated devices of the configured sites: every reading they are scheduled to send."""

    type_name = "simulated"

    def __init__(
        self,
        name: str,
        config: SimulatedConfig,
        registry: Registry,
        *,
        clock: Callable[[], int] = wall_clock_us,
        silence: SilencePlan | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``silence``, when given, replaces the plan chosen by ``config.silence``."""
        super().__init__(name)
        self.config = config
        self._registry = registry
        self._clock = clock
        self._silence = silence
        self._sleep = sleep
        self._feed: SimulatedFeed | None = None

    @classmethod
    def from_config(
        cls, name: str, raw: Mapping[str, Any], registry: Registry, **kwargs: Any
    ) -> SimulatedCollector:
        """From a ``[collectors.<name>]`` table (its ``type`` key included)."""
        return cls(name, build(SimulatedConfig, raw, f"collectors.{name}"), registry, **kwargs)

    def _key(self, field: str) -> str:
        return f"collectors.{self.name}.{field}"

    def validate(self) -> None:
        cfg = self.config
        if not cfg.sites:
            raise ConfigError(self._key("sites"), "is empty: list the site ids to simulate")
        if not (math.isfinite(cfg.tick_s) and cfg.tick_s > 0):
            raise ConfigError(self._key("tick_s"), f"must be a positive number of seconds, "
                                                   f"got {cfg.tick_s}")  # fmt: skip
        known = {s.site_id for s in self._registry.sites}
        unknown = [s for s in dict.fromkeys(cfg.sites) if s not in known]
        if unknown:
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise ConfigError(self._key("sites"), f"unknown site id(s) {', '.join(unknown[:5])}"
                                                  f"{more}: not in the registry")  # fmt: skip

    def devices(self) -> list[Device]:
        """The registered devices this collector simulates."""
        wanted = set(self.config.sites)
        return [d for d in self._registry.devices if d.site_id in wanted]

    def _build(self) -> SimulatedFeed:
        self.validate()
        start_us = self._clock()
        devices = self.devices()
        seed = self.config.seed
        plan = self._silence
        if plan is None and self.config.silence == "random":
            plan = SilencePlan.random(devices, seed, start_us, SILENCE_HORIZON_S)
        wanted = set(self.config.sites)
        sites = {s.site_id: s for s in self._registry.sites if s.site_id in wanted}
        feed = SimulatedFeed(devices, sites, seed=seed, start_us=start_us, silence=plan)
        dead = len(devices) - len(feed.reporting)
        logger.debug("%s: simulating %d devices at %d sites (%d never report)",
                    self.name, len(devices), len(sites), dead)  # fmt: skip
        return feed

    async def connect(self) -> None:
        """Build the feed (no I/O); the simulation starts now."""
        self._feed = self._build()

    async def collect(self, sink: ReadingSink) -> None:
        if self._feed is None:
            self._feed = self._build()
        feed = self._feed
        while True:
            readings = feed.poll_columns(self._clock())  # no Reading object per row
            if readings:
                await sink(readings)
            await self._sleep(self.config.tick_s)
