"""Contract tier: collector supervision. A failing source is marked unavailable once and
recovered once (log and metric), retried with backoff, and never stops the other collectors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from edge_agent import metrics as m
from edge_agent.agent import Agent, Delivery
from edge_agent.buffer import Buffer

from collectors.base import Collector, ReadingSink
from qilu.contract import Reading
from qilu.errors import RetryableError


class NullFuture:
    def __init__(self, ok: bool = True) -> None:
        self.ok = ok

    def add_callback(self, fn: Callable[[Any], None]) -> None:
        fn("metadata")

    def add_errback(self, fn: Callable[[BaseException], None]) -> None:
        pass


class AckAll:
    def __init__(self) -> None:
        self.sent = 0

    def send(self, topic: str, *, key: bytes, value: bytes) -> NullFuture:
        self.sent += 1
        return NullFuture()


class Flaky(Collector):
    """Connect fails twice, then it delivers, then the source breaks once more and recovers."""

    type_name = "flaky"

    def __init__(self) -> None:
        super().__init__("flaky")
        self.connects = 0

    def validate(self) -> None:
        pass

    async def connect(self) -> None:
        self.connects += 1
        if self.connects in (1, 2, 4):
            raise RetryableError(f"RTU not answering (attempt {self.connects})")

    async def collect(self, sink: ReadingSink) -> None:
        await sink([Reading("SUB-1-T1", "oil_temp_c", 1_763_900_000_000_000 + self.connects, 60.0)])
        if self.connects == 3:
            raise RetryableError("connection reset by peer")
        await asyncio.Event().wait()


class Steady(Collector):
    type_name = "steady"

    def __init__(self) -> None:
        super().__init__("steady")
        self.handed_over = 0

    def validate(self) -> None:
        pass

    async def collect(self, sink: ReadingSink) -> None:
        while True:
            await sink(
                [Reading("CHG-1", "power_kw", 1_763_900_000_000_000 + self.handed_over, 7.0)]
            )
            self.handed_over += 1
            await asyncio.sleep(0.01)


def test_a_failing_source_is_reported_once_each_way_and_the_others_keep_going(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    flaky, steady = Flaky(), Steady()
    buffer = Buffer(tmp_path / "b.db", "agent-c", max_bytes=16 << 20, max_age_s=3600, fsync="os")
    agent = Agent(
        "agent-c",
        [flaky, steady],
        buffer,
        AckAll,
        "t",
        Delivery(retry_initial_s=0.05, retry_max_s=0.2, batch_max_delay_s=0.05, group_commit_s=0.0),
    )
    states: list[bool] = []

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(2.0, stop.set)
        await agent.run(stop)

    original = agent._availability

    def spy(name: str, up: bool, reason: str) -> None:
        if name == "flaky":
            states.append(up)
        original(name, up, reason)

    agent._availability = spy  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="edge_agent.agent"):
        asyncio.run(main())

    assert flaky.connects == 5
    unavailable = [r for r in caplog.records if "flaky: source unavailable" in r.getMessage()]
    recovered = [r for r in caplog.records if "flaky: source available again" in r.getMessage()]
    # down (connect 1, 2) -> up (3) -> down (collect fails, connect 4) -> up (5): logged twice
    # each way, once per transition, although the source failed four times
    assert len(unavailable) == 2
    assert len(recovered) == 2
    assert states.count(False) == 4  # every failure was reported, only transitions logged
    assert m.COLLECTOR_UP.labels("agent-c", "flaky")._value.get() == 1
    assert m.COLLECTOR_DOWN_EVENTS.labels("agent-c", "flaky")._value.get() == 2
    assert m.COLLECTOR_UP.labels("agent-c", "steady")._value.get() == 1
    assert steady.handed_over > 50  # never held up by the failing one
