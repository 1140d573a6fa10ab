"""Contract tier: the agent against an injected fake Kafka producer (no sockets).

The fake acknowledges or fails each record through the same future interface kafka-python
gives (add_callback / add_errback), so the agent's delivery rules are checked exactly: a
reading leaves the durable buffer only when its own record was acknowledged, a failed record
is sent again with the same bytes, and after a restart the unacknowledged envelopes go out
again unchanged (same boot id and sequence) before anything new.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from edge_agent.agent import Agent, Delivery, SharedProducer, Threads
from edge_agent.buffer import Buffer
from edge_agent.province import run_agents
from kafka.errors import KafkaTimeoutError

from collectors.base import Collector, ReadingSink
from qilu.contract import Reading, decode


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
    """Fails the sends for which ``fail(attempt_no, value)`` is true, acknowledges the rest.

    Called from the agent's send thread, like kafka-python; settles from a timer thread."""

    def __init__(self, fail: Callable[[int, bytes], bool] = lambda i, v: False) -> None:
        self.fail = fail
        self.attempts: list[tuple[str, bytes, bytes]] = []
        self.acked: list[bytes] = []

    def send(self, topic: str, *, key: bytes, value: bytes) -> FakeFuture:
        import threading

        n = len(self.attempts)
        self.attempts.append((topic, key, value))
        fut = FakeFuture()
        if self.fail(n, value):
            threading.Timer(0.01, fut.fail, (KafkaTimeoutError("broker unreachable"),)).start()
        else:
            self.acked.append(value)
            threading.Timer(0.01, fut.succeed).start()
        return fut


class ListCollector(Collector):
    type_name = "list"

    def __init__(self, readings: Sequence[Reading]) -> None:
        super().__init__("list")
        self.readings = list(readings)
        self.handed_over = 0

    def validate(self) -> None:
        pass

    async def collect(self, sink: ReadingSink) -> None:
        for i in range(0, len(self.readings), 3):
            await sink(self.readings[i : i + 3])
            self.handed_over += len(self.readings[i : i + 3])
        await asyncio.Event().wait()


def make(tmp: Path, producer: FakeProducer, readings: list[Reading]) -> Agent:
    buffer = Buffer(tmp / "buf.db", "agent-t", max_bytes=16 << 20, max_age_s=3600, fsync="os")
    return Agent(
        "agent-t",
        [ListCollector(readings)],
        buffer,
        lambda: producer,
        "t",
        Delivery(batch_max_readings=4, batch_max_delay_s=0.05, retry_initial_s=0.05),
    )


def run(agent: Agent, seconds: float = 0.6) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        await agent.run(stop)

    asyncio.run(main())


def readings(n: int) -> list[Reading]:
    return [Reading(f"pile-{i}", "power_kw", 1_763_900_000_000_000 + i, float(i)) for i in range(n)]


def pending(tmp: Path) -> int:
    b = Buffer(tmp / "buf.db", "agent-t", max_bytes=16 << 20, max_age_s=3600)
    b.open()
    try:
        return b.pending
    finally:
        b.close()


def test_every_reading_is_acknowledged_once(tmp_path: Path) -> None:
    producer = FakeProducer()
    agent = make(tmp_path, producer, readings(10))
    run(agent)
    envs = [decode(v) for v in producer.acked]
    assert sorted(e.seq for e in envs) == list(range(len(envs)))
    assert all(len(e) <= 4 for e in envs)
    assert sorted(r.ts_us for e in envs for r in e.readings()) == [r.ts_us for r in readings(10)]
    assert {t for t, _, _ in producer.attempts} == {"t.readings.charging"}
    assert {k for _, k, _ in producer.attempts} == {b"agent-t"}
    assert agent.sent_readings == 10
    assert pending(tmp_path) == 0


def test_failed_sends_are_retried_with_the_same_bytes(tmp_path: Path) -> None:
    producer = FakeProducer(fail=lambda i, v: i < 2)
    agent = make(tmp_path, producer, readings(3))
    run(agent, 1.5)
    values = [v for _, _, v in producer.attempts]
    assert values[0] == values[1] == values[2]
    assert producer.acked == [values[2]]
    assert agent.sent_readings == 3
    assert pending(tmp_path) == 0


def test_a_reading_leaves_only_when_its_own_record_was_acknowledged(tmp_path: Path) -> None:
    # the broker never acknowledges the envelope holding pile-5: every other one is acked
    def holds_pile_5(_: int, value: bytes) -> bool:
        return "pile-5" in decode(value).devices

    producer = FakeProducer(fail=holds_pile_5)
    agent = make(tmp_path, producer, readings(12))
    run(agent, 1.0)
    stuck = [decode(v) for _, _, v in producer.attempts if holds_pile_5(0, v)]
    assert len(stuck) >= 2  # retried
    assert len({(e.boot_id, e.seq) for e in stuck}) == 1  # the same envelope each time
    acked = {r for v in producer.acked for r in decode(v).readings()}
    assert len(acked) + len(stuck[0]) == 12
    assert pending(tmp_path) == len(stuck[0])  # exactly its readings stayed in the buffer

    # restart with a healthy broker: the same envelope (same boot id and sequence) goes first
    healthy = FakeProducer()
    again = make(tmp_path, healthy, [])
    run(again, 0.5)
    first = decode(healthy.attempts[0][2])
    assert (first.boot_id, first.seq) == (stuck[0].boot_id, stuck[0].seq)
    assert healthy.attempts[0][2] == producer.attempts[-1][2]
    assert pending(tmp_path) == 0


def test_a_shared_producer_is_replaced_once_for_all_its_agents(tmp_path: Path) -> None:
    # province mode: three agents share one producer; the first one fails every record (as a
    # stalled idempotent producer does after a long outage), the next one is healthy
    made: list[FakeProducer] = []

    def factory() -> FakeProducer:
        made.append(FakeProducer(fail=lambda i, v: len(made) == 1))
        return made[-1]

    shared = SharedProducer(factory)
    agents = [
        Agent(
            f"agent-{a}",
            [ListCollector(readings(9))],
            Buffer(tmp_path / f"{a}.db", f"agent-{a}", max_bytes=16 << 20, max_age_s=3600),
            shared,
            "t",
            Delivery(batch_max_readings=4, batch_max_delay_s=0.05, retry_initial_s=0.05),
        )
        for a in range(3)
    ]

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(1.5, stop.set)
        await asyncio.gather(*(a.run(stop) for a in agents))

    asyncio.run(main())
    assert shared.replaced == 1  # however many agents saw their records fail
    assert len(made) == 2
    assert all(a.sent_readings == 9 for a in agents)
    delivered = [decode(v) for v in made[1].acked]
    assert sorted(len(e) for e in delivered if e.agent_id == "agent-0") == sorted(
        len(e) for e in delivered if e.agent_id == "agent-1"
    )
    assert sum(len(e) for e in delivered) == 27  # each reading once, through the new producer


def test_agents_sharing_one_pair_of_threads_each_deliver_everything(tmp_path: Path) -> None:
    """Province mode: the agents of one process share one buffer and one send thread, and
    run_agents shuts that pair down after every agent stopped (a lone agent owns its own)."""
    producer = FakeProducer()
    threads = Threads.new("shared")
    agents = []
    for name in ("agent-a", "agent-b", "agent-c"):
        buffer = Buffer(tmp_path / f"{name}.db", name, max_bytes=16 << 20, max_age_s=3600,
                        fsync="os")  # fmt: skip
        agents.append(
            Agent(
                name, [ListCollector(readings(10))], buffer, lambda: producer, "t",
                Delivery(batch_max_readings=4, batch_max_delay_s=0.05, retry_initial_s=0.05),
                threads=threads,
            )
        )  # fmt: skip
    assert not any(a.owns_threads for a in agents)
    assert make(tmp_path / "lone", producer, []).owns_threads

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.8, stop.set)
        await run_agents(agents, stop)

    asyncio.run(main())
    for a in agents:
        assert a.sent_readings == 10
        envs = [decode(v) for v in producer.acked if decode(v).agent_id == a.agent_id]
        assert [e.seq for e in envs] == list(range(len(envs)))  # each agent's order kept
        assert sorted(r.ts_us for e in envs for r in e.readings()) == [
            r.ts_us for r in readings(10)
        ]
    with pytest.raises(RuntimeError, match="shutdown"):
        threads.buffer.submit(int)
