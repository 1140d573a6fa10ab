"""The agent's run loop: collectors -> batcher -> Kafka, a reading leaves only when acknowledged.

Lifecycle: ``validate`` every collector (no I/O) -> ``connect`` -> run -> on stop, cancel the
collectors, close every open envelope and drain the send queue.

This first version keeps unsent envelopes in memory (bounded queue, collectors wait when it is
full); the durable on-disk buffer replaces the queue in a later version without changing the
collectors or the wire.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Sequence
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError
from prometheus_client import Counter, Gauge

from collectors.base import Collector
from edge_agent.batcher import Batcher, split_by_sector
from qilu.contract import Envelope, Reading, Sector
from qilu.settings import AgentSettings, KafkaSettings
from stream.topics import readings_topic

logger = logging.getLogger(__name__)

READINGS_IN = Counter(
    "qilu_agent_readings_in_total", "Readings handed over by collectors", ["agent"]
)
READINGS_SENT = Counter(
    "qilu_agent_readings_sent_total", "Readings acknowledged by Kafka", ["agent"]
)
SEND_ERRORS = Counter("qilu_agent_send_errors_total", "Failed send attempts (retried)", ["agent"])
QUEUE_DEPTH = Gauge("qilu_agent_queue_envelopes", "Envelopes waiting to be sent", ["agent"])


def new_producer(kafka: KafkaSettings, client_id: str) -> KafkaProducer:
    return KafkaProducer(
        bootstrap_servers=kafka.bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_request_size=1_048_576,
    )


async def send_acknowledged(producer: KafkaProducer, topic: str, key: bytes, value: bytes) -> None:
    """Send one record and wait for the broker's acknowledgement of *this* record."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(exc: BaseException | None) -> None:
        if done.done():
            return
        if exc is None:
            done.set_result(None)
        else:
            done.set_exception(exc)

    def ok(_: Any) -> None:
        loop.call_soon_threadsafe(settle, None)

    def failed(exc: BaseException) -> None:
        loop.call_soon_threadsafe(settle, exc)

    future = producer.send(topic, key=key, value=value)
    future.add_callback(ok)
    future.add_errback(failed)
    await done


class Agent:
    def __init__(
        self,
        agent_id: str,
        collectors: Sequence[Collector],
        sector_of: dict[str, Sector],
        producer: KafkaProducer,
        kafka: KafkaSettings,
        cfg: AgentSettings,
        *,
        default_sector: Sector = Sector.CHARGING,
        queue_size: int = 1000,
    ) -> None:
        self.agent_id = agent_id
        self.boot_id = uuid.uuid4().hex
        self._collectors = list(collectors)
        self._sector_of, self._default = sector_of, default_sector
        self._producer, self._kafka = producer, kafka
        self._batcher = Batcher(
            agent_id,
            self.boot_id,
            max_readings=cfg.batch_max_readings,
            max_delay_us=int(cfg.batch_max_delay_s * 1_000_000),
        )
        self._queue: asyncio.Queue[tuple[Sector, Envelope]] = asyncio.Queue(queue_size)
        self._key = agent_id.encode()
        self.sent_envelopes = 0

    def validate(self) -> None:
        for c in self._collectors:
            c.validate()

    async def _sink(self, readings: Sequence[Reading]) -> None:
        READINGS_IN.labels(self.agent_id).inc(len(readings))
        now = time.time_ns() // 1000
        for sector, part in split_by_sector(readings, self._sector_of, self._default).items():
            for item in self._batcher.add(sector, part, now):
                await self._queue.put(item)
        QUEUE_DEPTH.labels(self.agent_id).set(self._queue.qsize())

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            for item in self._batcher.due(time.time_ns() // 1000):
                await self._queue.put(item)

    async def _sender(self) -> None:
        while True:
            sector, env = await self._queue.get()
            await self._send(sector, env)
            self._queue.task_done()
            QUEUE_DEPTH.labels(self.agent_id).set(self._queue.qsize())

    async def _send(self, sector: Sector, env: Envelope) -> None:
        topic, value, delay = readings_topic(self._kafka, sector), env.encode(), 0.2
        failing = False
        while True:
            try:
                await send_acknowledged(self._producer, topic, self._key, value)
            except KafkaError as exc:
                SEND_ERRORS.labels(self.agent_id).inc()
                if not failing:
                    logger.warning("agent %s: send failed, retrying: %s", self.agent_id, exc)
                    failing = True
                await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter
                delay = min(delay * 2, 30.0)
                continue
            if failing:
                logger.warning("agent %s: sending again", self.agent_id)
            READINGS_SENT.labels(self.agent_id).inc(len(env))
            self.sent_envelopes += 1
            return

    async def run(self, stop: asyncio.Event) -> None:
        self.validate()
        for c in self._collectors:
            await c.connect()
        collecting = [asyncio.create_task(c.collect(self._sink)) for c in self._collectors]
        helpers = [asyncio.create_task(self._flusher()), asyncio.create_task(self._sender())]
        await stop.wait()
        for t in collecting:
            t.cancel()
        await asyncio.gather(*collecting, return_exceptions=True)
        for c in self._collectors:
            await c.stop()
        helpers[0].cancel()
        for item in self._batcher.due(time.time_ns() // 1000, force=True):
            await self._queue.put(item)
        await self._queue.join()  # drain: every envelope acknowledged
        helpers[1].cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
