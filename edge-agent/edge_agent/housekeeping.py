"""Housekeeping of one agent's buffer, off the send path: the age bound (every 30 s), the
gauges (every 2 s), and the accounting of readings the buffer had to drop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from edge_agent import metrics as m
from edge_agent.buffer import AddResult, Buffer, Quarantined
from qilu.contract import Sector

logger = logging.getLogger(__name__)
T = TypeVar("T")
EXPIRE_EVERY_S = 30.0
GAUGES_EVERY_S = 2.0


class InDb(Protocol):
    """Runs a buffer call on the agent's buffer thread."""

    def __call__(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Awaitable[T]: ...


class Housekeeping:
    def __init__(self, agent_id: str, buffer: Buffer, in_db: InDb) -> None:
        self.agent_id = agent_id
        self.buffer = buffer
        self._in_db = in_db
        self._drop_logged: set[str] = set()  # drop reasons already logged this run
        self._quarantine_sectors: set[Sector] = set()

    def count_drops(self, res: AddResult) -> None:
        for reason, n in res.dropped.items():
            m.READINGS_DROPPED.labels(self.agent_id, reason).inc(n)
        new = res.dropped.keys() - self._drop_logged
        if new:  # once per reason and run: the counter has the numbers
            self._drop_logged |= new
            logger.warning(
                "agent %s: buffer bound reached, dropping readings (%s); gaps are sent upstream",
                self.agent_id,
                ", ".join(f"{k}: {v}" for k, v in sorted(res.dropped.items())),
            )

    def quarantine_gauges(self, quarantine: Sequence[Quarantined]) -> None:
        """Per-sector gauges of the quarantine; a sector gets series once it had something
        quarantined (then 0 after a requeue), the others none."""
        held = {q.sector: q for q in quarantine}
        self._quarantine_sectors |= held.keys()
        for sector in self._quarantine_sectors:
            q = held.get(sector)
            m.QUARANTINE_ENVELOPES.labels(self.agent_id, sector.value).set(q.envelopes if q else 0)
            m.QUARANTINE_READINGS.labels(self.agent_id, sector.value).set(q.readings if q else 0)

    async def update_gauges(self, inflight_bytes: Callable[[], int]) -> None:
        st = await self._in_db(self.buffer.stats)
        a = self.agent_id
        m.BUFFER_READINGS.labels(a).set(st.readings)
        m.BUFFER_BYTES.labels(a).set(st.payload_bytes)
        m.BUFFER_DISK_BYTES.labels(a).set(st.disk_bytes)
        m.BUFFER_LIMIT_BYTES.labels(a).set(self.buffer.max_bytes)
        age = 0.0 if st.oldest_added_us is None else time.time() - st.oldest_added_us / 1e6
        m.OLDEST_UNSENT.labels(a).set(max(0.0, age))
        m.IN_FLIGHT.labels(a).set(inflight_bytes())
        if self._quarantine_sectors:
            self.quarantine_gauges(await self._in_db(self.buffer.quarantine))

    async def run(self, inflight_bytes: Callable[[], int]) -> None:
        """Until cancelled: expire what is past the buffer's age bound, update the gauges."""
        last_expire = 0.0
        while True:
            if time.monotonic() - last_expire > EXPIRE_EVERY_S:
                last_expire = time.monotonic()
                self.count_drops(await self._in_db(self.buffer.expire))
            await self.update_gauges(inflight_bytes)
            await asyncio.sleep(GAUGES_EVERY_S)
