"""The agent's intake: hand-overs share one buffer commit within ``group_commit_s``, unless a
collector asks for the next one to commit at once (Collector.commit_next), as the IEC 104
collector does when a station's send window waits for the acknowledgement."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from edge_agent.agent import Agent, Delivery
from edge_agent.buffer import Buffer

from collectors.base import Collector, ReadingSink
from qilu.contract import Reading

HOUR = 3600.0


class Quiet(Collector):
    type_name = "quiet"

    def validate(self) -> None:
        pass

    async def collect(self, sink: ReadingSink) -> None:
        pass


def _no_producer() -> Any:
    raise AssertionError("the intake sends nothing")


def reading(n: int) -> Reading:
    return Reading("CHG-1-01", "power_kw", 1_763_900_000_000_000 + n, float(n))


def test_a_commit_request_commits_the_next_hand_over_and_what_waits_with_it(
    tmp_path: Path,
) -> None:
    buffer = Buffer(tmp_path / "buffer.db", "a", max_bytes=1 << 24, max_age_s=HOUR)
    buffer.open()
    # a group-commit window of an hour: whatever returns sooner was committed on request
    agent = Agent("a", [], buffer, _no_producer, "t", Delivery(group_commit_s=HOUR))
    urgent, other = Quiet("urgent"), Quiet("other")
    sink = agent.attach(urgent)
    assert agent.attach(other) == sink

    async def hand_over(readings: list[Reading]) -> None:
        await sink(readings)

    async def main() -> None:
        waiting = asyncio.create_task(hand_over([reading(1)]))  # the other collector's
        await asyncio.sleep(0)
        assert not waiting.done()  # in the group, waiting for the window's end
        assert buffer.chunk_readings == 0
        urgent.commit_next()
        async with asyncio.timeout(60):  # a hang guard (the window is an hour), no timing
            await sink([reading(2), reading(3)])
            assert buffer.chunk_readings == 3  # on disk when the hand-over returns
            await waiting  # committed in the same transaction
        # the request was for one hand-over: the next waits for the window again
        later = asyncio.create_task(hand_over([reading(4)]))
        await asyncio.sleep(0)
        assert not later.done()
        later.cancel()

    try:
        asyncio.run(main())
    finally:
        agent._db.shutdown()  # run() not used: its buffer thread is ours to end
        buffer.close()


def test_a_collector_without_an_agent_may_ask() -> None:
    Quiet("alone").commit_next()  # nothing registered: nothing happens
