"""Contract tier: the agent against an injected fake Kafka producer (no sockets).

The fake acknowledges or fails each record through the same future interface kafka-python
gives (add_callback / add_errback), so the agent's delivery rules are checked exactly:
an envelope counts as sent only when its own record was acknowledged, and a failed record is
sent again, in order, with the same bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from edge_agent.agent import Agent
from kafka.errors import KafkaTimeoutError

from collectors.base import Collector, ReadingSink
from qilu.contract import Reading, Sector, decode
from qilu.settings import AgentSettings, KafkaSettings


class FakeFuture:
    def __init__(self) -> None:
        self._ok: list[Callable[[Any], None]] = []
        self._err: list[Callable[[BaseException], None]] = []

    def add_callback(self, fn: Callable[[Any], None]) -> None:
        self._ok.append(fn)

    def add_errback(self, fn: Callable[[BaseException], None]) -> None:
        self._err.append(fn)

    def succeed(self) -> None:
        for fn in self._ok:
            fn("metadata")

    def fail(self, exc: BaseException) -> None:
        for fn in self._err:
            fn(exc)


class FakeProducer:
    """Fails the first ``failures`` sends, acknowledges the rest."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.attempts: list[tuple[str, bytes, bytes]] = []
        self.acked: list[bytes] = []

    def send(self, topic: str, key: bytes, value: bytes) -> FakeFuture:
        self.attempts.append((topic, key, value))
        fut = FakeFuture()
        loop = asyncio.get_running_loop()
        if self.failures > 0:
            self.failures -= 1
            loop.call_soon(fut.fail, KafkaTimeoutError("broker unreachable"))
        else:
            self.acked.append(value)
            loop.call_soon(fut.succeed)
        return fut


class ListCollector(Collector):
    type_name = "list"

    def __init__(self, readings: Sequence[Reading]) -> None:
        super().__init__("list")
        self.readings = list(readings)

    def validate(self) -> None:
        pass

    async def collect(self, sink: ReadingSink) -> None:
        await sink(self.readings)
        await asyncio.Event().wait()


def run(producer: FakeProducer, readings: list[Reading]) -> Agent:
    agent = Agent(
        "agent-t",
        [ListCollector(readings)],
        {r.device_id: Sector.CHARGING for r in readings},
        producer,  # type: ignore[arg-type]
        KafkaSettings(topic_prefix="t"),
        AgentSettings(batch_max_readings=4, batch_max_delay_s=0.05),
    )

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.3, stop.set)
        await agent.run(stop)

    asyncio.run(main())
    return agent


def readings(n: int) -> list[Reading]:
    return [Reading(f"pile-{i}", "power_kw", 1_763_900_000_000_000 + i, float(i)) for i in range(n)]


def test_every_reading_is_acknowledged_once_in_order() -> None:
    producer = FakeProducer()
    agent = run(producer, readings(10))
    envs = [decode(v) for v in producer.acked]
    assert [e.seq for e in envs] == [0, 1, 2]
    assert [len(e) for e in envs] == [4, 4, 2]
    assert [r for e in envs for r in e.readings()] == readings(10)
    assert {t for t, _, _ in producer.attempts} == {"t.readings.charging"}
    assert {k for _, k, _ in producer.attempts} == {b"agent-t"}
    assert agent.sent_envelopes == 3


def test_failed_sends_are_retried_with_the_same_bytes() -> None:
    producer = FakeProducer(failures=2)
    agent = run(producer, readings(3))
    assert len(producer.attempts) == 3
    assert producer.attempts[0][2] == producer.attempts[1][2] == producer.attempts[2][2]
    assert producer.acked == [producer.attempts[2][2]]
    assert agent.sent_envelopes == 1
