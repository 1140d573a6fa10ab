"""Province mode (many agents in one process, one shared Kafka producer) through a broker outage.

A private broker (never the shared one) is stopped for longer than the producer's delivery
timeout, so every record in flight expires, then started again. kafka-python's idempotent
producer can stall after such an expiry; a single agent replaces its producer, and the agents
of a province replace their shared one once for all (``SharedProducer``). Afterwards every
reading each collector handed over is in Kafka, and a reading appears twice only inside a
resent envelope (same agent, boot and sequence), which the backend drops (ADR 0001).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from edge_agent.agent import Agent, Delivery, SharedProducer, new_producer
from edge_agent.buffer import Buffer

from collectors.base import Collector, ReadingSink
from qilu.contract import Reading, decode
from qilu.settings import KafkaSettings
from tests.integration.test_edge_faults import own_kafka  # noqa: F401 - the private broker

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(400),
]

AGENTS = 3
RATE = 200  # readings/s per agent
OUTAGE_S = 15.0  # longer than the producer's delivery timeout below (6 s)


class CountingCollector(Collector):
    """Reading ``i`` of agent ``a``: (``a-dev-{i mod 10}``, power_kw, t0 + i ms, i)."""

    type_name = "counting"

    def __init__(self, name: str, prefix: str, t0_us: int) -> None:
        super().__init__(name)
        self.prefix, self.t0_us = prefix, t0_us
        self.handed_over = 0  # readings whose hand-over returned (they are on disk)
        self.offered = 0  # readings handed over, returned or not (stop may cut the wait)

    def validate(self) -> None:
        pass

    def reading(self, i: int) -> Reading:
        return Reading(f"{self.prefix}-dev-{i % 10}", "power_kw", self.t0_us + i * 1000, float(i))

    async def collect(self, sink: ReadingSink) -> None:
        began = time.monotonic()
        while True:
            due = int((time.monotonic() - began) * RATE)
            if due > self.handed_over:
                self.offered = due
                await sink([self.reading(i) for i in range(self.handed_over, due)])
                self.handed_over = due
            await asyncio.sleep(0.05)


@pytest.fixture
def private_topics(kafka: KafkaSettings, own_kafka: Any) -> KafkaSettings:  # noqa: F811
    from stream.topics import ensure_topics

    _, bootstrap = own_kafka
    ks = kafka.model_copy(update={"bootstrap": bootstrap})
    ensure_topics(ks)
    return ks


def consume_all(ks: KafkaSettings, expect: int) -> list[bytes]:
    """Every record of the readings topics (waits until ``expect`` readings or 60 s)."""
    from kafka import KafkaConsumer

    from stream.topics import readings_topics

    consumer = KafkaConsumer(
        *readings_topics(ks),
        bootstrap_servers=ks.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
    )
    values: list[bytes] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            values += [r.value for r in consumer]
            if sum(len(decode(v)) for v in values) >= expect:
                break
    finally:
        consumer.close()
    return values


def test_shared_producer_replaced_once_and_every_reading_delivered(
    own_kafka: Any,  # noqa: F811 - the fixture imported above
    private_topics: KafkaSettings,
    tmp_path: Path,
) -> None:
    svc, bootstrap = own_kafka
    ks = private_topics
    shared = SharedProducer(
        partial(
            new_producer, bootstrap, "itest-province", request_timeout_s=3.0, delivery_timeout_s=6.0
        )
    )
    delivery = Delivery(batch_max_delay_s=0.2, retry_initial_s=0.2, retry_max_s=2.0)
    t0 = time.time_ns() // 1000 - 3_600_000_000
    collectors = [CountingCollector(f"c{a}", f"a{a}", t0) for a in range(AGENTS)]
    agents = [
        Agent(
            f"itest-province-{a}",
            [collectors[a]],
            Buffer(
                tmp_path / f"a{a}.db", f"itest-province-{a}", max_bytes=64 << 20, max_age_s=3600
            ),
            shared,
            ks.topic_prefix,
            delivery,
        )
        for a in range(AGENTS)
    ]
    timeline: dict[str, Any] = {}

    async def scenario(stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()

        async def until(cond: Any, within_s: float, what: str) -> None:
            deadline = time.monotonic() + within_s
            while not cond():
                assert time.monotonic() < deadline, f"timed out waiting for {what}"
                await asyncio.sleep(0.2)

        await until(lambda: all(a.sent_readings > 0 for a in agents), 60, "readings flowing")
        await loop.run_in_executor(None, svc.down, ["kafka"])
        await asyncio.sleep(2)  # acknowledgements that arrived before the stop are settled
        timeline["sent_before_outage"] = sum(a.sent_readings for a in agents)
        await asyncio.sleep(OUTAGE_S)
        timeline["sent_during_outage"] = sum(a.sent_readings for a in agents)
        await loop.run_in_executor(None, svc.up, ["kafka"])
        back = time.monotonic()
        for c in collectors:  # let every collector hand over a little after the restart
            target = c.handed_over + RATE
            await until(lambda c=c, t=target: c.handed_over >= t, 30, "collectors after restart")
        stop.set()
        timeline["stopped_after_s"] = time.monotonic() - back

    async def main() -> None:
        stop = asyncio.Event()
        await asyncio.gather(*(a.run(stop) for a in agents), scenario(stop))

    try:
        asyncio.run(main())
    finally:
        shared.close(5.0)
    # what stop left in the buffers is sent by a second run (as a restarted process would)
    left = [a.buffer.path for a in agents]
    assert all(p.exists() for p in left)
    restarted = SharedProducer(partial(new_producer, bootstrap, "itest-province-2"))
    again = [
        Agent(
            f"itest-province-{a}",
            [],
            Buffer(left[a], f"itest-province-{a}", max_bytes=64 << 20, max_age_s=3600),
            restarted,
            ks.topic_prefix,
            Delivery(batch_max_delay_s=0.1),
        )
        for a in range(AGENTS)
    ]

    async def drain() -> None:
        stop = asyncio.Event()
        runs = asyncio.gather(*(a.run(stop) for a in again))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (  # noqa: ASYNC110 - polling plain state
            all(a.boot_id for a in again) and not any(a.buffer.pending for a in again)
        ):
            await asyncio.sleep(0.2)
        timeline["left_after_restart"] = [a.buffer.pending for a in again]
        stop.set()
        await runs

    try:
        asyncio.run(drain())
    finally:
        restarted.close(5.0)

    def keys(upto: str) -> set[tuple[str, int]]:
        return {
            (r.device_id, r.ts_us)
            for c in collectors
            for r in map(c.reading, range(getattr(c, upto)))
        }

    acknowledged, offered = keys("handed_over"), keys("offered")
    envelopes = [decode(v) for v in consume_all(ks, len(acknowledged))]
    readings: Counter[tuple[str, int]] = Counter()
    identities: dict[tuple[str, int], set[tuple[str, str, int]]] = {}
    for env in envelopes:
        for dev, ts in zip(env.devices, env.ts_us, strict=True):
            readings[(dev, ts)] += 1
            identities.setdefault((dev, ts), set()).add((env.agent_id, env.boot_id, env.seq))
    assert timeline["sent_during_outage"] == timeline["sent_before_outage"]  # really cut off
    assert shared.replaced >= 1, "a failed record replaced the shared producer"
    assert sum(a.producers_replaced for a in agents) >= shared.replaced
    seen = set(readings)
    assert timeline["left_after_restart"] == [0] * AGENTS, timeline
    assert acknowledged <= seen, f"{len(acknowledged - seen)} acknowledged readings missing"
    assert seen <= offered, f"{len(seen - offered)} readings nobody handed over"
    # a reading seen twice travelled in one envelope resent as it was: the backend drops it
    assert all(len(ids) == 1 for ids in identities.values())
