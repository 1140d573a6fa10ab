"""Collector supervision: a failing source is marked unavailable once, retried with backoff
and marked recovered once, without stopping the other collectors or the buffer."""

from __future__ import annotations

import asyncio
import logging
import random
import time

from collectors.base import Collector, ReadingSink
from edge_agent import metrics as m

logger = logging.getLogger(__name__)
RESET_AFTER_S = 60.0  # a collector that ran this long starts its backoff over


class Availability:
    """Each collector's source, up or down: a transition is counted and logged once (a
    source failing four times in a row is one outage); nothing is said while stopping."""

    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id
        self.stopping = False  # collectors going down on stop are no news
        self._available: dict[str, bool] = {}

    def changed(self, name: str, up: bool, reason: str) -> None:
        was = self._available.get(name)
        if was is up:
            return
        self._available[name] = up
        if self.stopping:  # a source closing because the agent stops: not an outage
            return
        m.COLLECTOR_UP.labels(self.agent_id, name).set(1 if up else 0)
        if up and was is False:
            logger.warning("collector %s: source available again", name)
        elif not up:
            m.COLLECTOR_DOWN_EVENTS.labels(self.agent_id, name).inc()
            logger.warning("collector %s: source unavailable: %s", name, reason or "no reason")


async def supervise(
    c: Collector, sink: ReadingSink, *, retry_initial_s: float, retry_max_s: float
) -> None:
    """Connect and run ``c`` until it finishes (a finite source) or is cancelled; whatever it
    raises marks its source unavailable and it is retried after a backoff with jitter."""
    delay = retry_initial_s
    while True:
        started = time.monotonic()
        try:
            await c.connect()
            c.available(True)
            await c.collect(sink)
        except asyncio.CancelledError:
            raise
        # a collector is third-party-protocol code: whatever it raises must not stop the
        # other collectors or the buffer; it is logged once (transition) and retried
        except Exception as exc:  # noqa: BLE001
            c.available(False, f"{type(exc).__name__}: {exc}")
        else:
            return  # a finite source finished
        if time.monotonic() - started > RESET_AFTER_S:
            delay = retry_initial_s  # it ran a while: start the backoff over
        with_jitter = delay * (0.5 + random.random())  # noqa: S311 - jitter, not crypto
        await asyncio.sleep(with_jitter)
        delay = min(delay * 2, retry_max_s)
