"""The agent's run loop: collectors -> durable buffer -> Kafka, a reading leaves only when acked.

Lifecycle: ``validate`` every collector (no I/O) -> open the buffer -> connect and run the
collectors (each supervised, :mod:`edge_agent.supervision`: a failing source is marked
unavailable once, retried with backoff and marked recovered once, without stopping the
others) -> on stop, stop the collectors, commit what they handed over, send what is live and
return; the rest waits on disk.

This module assembles the parts; one event loop runs the collectors and two tasks, and two
helper threads keep blocking calls off it:

- intake (:mod:`edge_agent.intake`, group commit, no task of its own): the first hand-over of
  a group arms a timer of ``group_commit_s``; when it fires, everything handed over meanwhile
  goes to the buffer in one transaction, and every hand-over returns once that transaction
  committed; a collector whose peer waits for the acknowledgement (an IEC 104 station with a
  full window) asks for its next hand-over to commit at once (``Collector.commit_next``);
- sender: the decisions are :class:`edge_agent.sender.Sender`, a state machine without I/O
  (forming envelopes, the in-flight window, retries with backoff, the refusal hold-off,
  producer replacement); :mod:`edge_agent.sending` runs its rounds and performs their actions
  on the threads (buffer jobs, sends through the producer, :mod:`edge_agent.kafka_io`, where
  every kafka-python workaround lives). Each record is settled by its own future; a failed
  one is sent again, byte for byte, after a backoff with jitter. At most
  ``max_in_flight_bytes`` of envelopes are outside the buffer at any time, so producer memory
  stays bounded however long the broker is away. A record the broker refuses for good
  (``TopicAuthorizationFailed``: the agent is not authorised for that sector's topic) is no
  outage: its envelope goes to the buffer's quarantine (kept, counted per sector, re-sent
  after ``requeue-quarantine``; past its share of the buffer the oldest are evicted with a
  ``quarantine_full`` gap), it is logged once per sector, and everything else keeps flowing;
- housekeeping (:mod:`edge_agent.housekeeping`): the age bound and the gauges.

The ``buffer`` thread runs every SQLite call; the ``send`` thread creates the producer (which
blocks while no broker answers) and calls ``send`` (which may block on metadata). On a small
machine every wake-up of a thread costs more than the work it does at 1,000 readings/s, so
the loop is built to wake rarely: a timer rather than a task per commit, one buffer job per
sender round, one send job per batch of records, metrics incremented per batch. The agents of
one process (the simulated province) share one pair of these threads (:class:`Threads`):
dozens of threads each waking for a few readings cost more in hand-offs of the interpreter
lock and kernel wake-ups than the work they did.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from collectors.base import Collector, ReadingSink
from edge_agent import metrics as m
from edge_agent.buffer import AddResult, Buffer
from edge_agent.housekeeping import Housekeeping
from edge_agent.intake import GroupCommit
from edge_agent.kafka_io import (
    HeaderProducer,
    Producer,
    ProducerFactory,
    RecordFuture,
    SharedProducer,
    Signer,
    close_producer,
    new_producer,
)
from edge_agent.sender import (
    REFUSAL_HOLD_S,
    TOPIC_AUTHORIZATION_FAILED,
    Delivery,
    Sender,
    refusal_of,
)
from edge_agent.sending import SendLoop
from edge_agent.supervision import Availability, supervise
from qilu.contract import Sector, readings_topic_name
from qilu.errors import ConfigError

# the names other modules import from here (the producer side moved to edge_agent.kafka_io,
# the sender's rules to edge_agent.sender)
__all__ = [
    "REFUSAL_HOLD_S",
    "TOPIC_AUTHORIZATION_FAILED",
    "Agent",
    "Delivery",
    "HeaderProducer",
    "Producer",
    "ProducerFactory",
    "RecordFuture",
    "SharedProducer",
    "Signer",
    "Threads",
    "close_producer",
    "new_producer",
    "refusal_of",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Threads:
    """An agent's two helper threads: ``buffer`` runs every SQLite call, ``send`` creates the
    producer and sends. One agent makes its own pair and shuts it down when its run ends;
    agents of one process may share one pair (province mode: one producer too, so a blocked
    send blocked them all anyway), which whoever made it shuts down after every run ended.
    One thread per job kind keeps each agent's jobs in order either way."""

    buffer: ThreadPoolExecutor
    send: ThreadPoolExecutor

    @classmethod
    def new(cls, name: str) -> Threads:
        return cls(
            ThreadPoolExecutor(1, thread_name_prefix=f"buffer-{name}"),
            ThreadPoolExecutor(1, thread_name_prefix=f"send-{name}"),
        )

    def shutdown(self) -> None:
        self.buffer.shutdown(wait=True)
        self.send.shutdown(wait=False, cancel_futures=True)


class Agent:
    def __init__(
        self,
        agent_id: str,
        collectors: Sequence[Collector],
        buffer: Buffer,
        producer: ProducerFactory,
        topic_prefix: str,
        delivery: Delivery | None = None,
        *,
        default_sector: Sector = Sector.CHARGING,
        replace_producer: bool = True,
        signer: Signer | None = None,
        threads: Threads | None = None,
    ) -> None:
        """``replace_producer``: after a failed record, close the producer and make a new one;
        a :class:`SharedProducer` factory is replaced once for all the agents sharing it
        (False only for a producer that must never be replaced, e.g. a test fake). ``signer``:
        signs every record at send time (docs/adr/0010); None sends unsigned records, which an
        authenticating ingest dead-letters. ``threads``: a pair shared with other agents of
        the process (the caller shuts it down after every run returned); None: its own."""
        self.agent_id = agent_id
        self.collectors = list(collectors)
        self.buffer = buffer
        self._prefix = topic_prefix
        self.cfg = delivery or Delivery()
        self.owns_threads = threads is None
        self.threads = threads or Threads.new(agent_id)
        self._db, self._net = self.threads.buffer, self.threads.send
        self._sources = Availability(agent_id)
        self._house = Housekeeping(agent_id, buffer, self._in_db)
        self._sending = SendLoop(
            agent_id, buffer, self.cfg, producer,
            topic=self._topic, signer=signer, replace_producer=replace_producer,
            house=self._house, in_db=self._in_db, net=self._net,
        )  # fmt: skip
        self._intake = GroupCommit(
            buffer, self._db,
            group_commit_s=self.cfg.group_commit_s,
            batch_max_readings=self.cfg.batch_max_readings,
            default_sector=default_sector,
            committed=self._committed,
        )  # fmt: skip
        self._full_signalled = False
        self.boot_id = ""
        self._in_counter = m.READINGS_IN.labels(agent_id)  # labelled once, not per batch

    # ------------------------------------------------------------------ the sender's figures

    @property
    def sender(self) -> Sender:
        """The sender's state machine (edge_agent/sender.py)."""
        return self._sending.sender

    @property
    def replace_producer(self) -> bool:
        return self.sender.replace_producer

    @property
    def refusal_hold_s(self) -> float:
        return self.sender.refusal_hold_s

    @refusal_hold_s.setter
    def refusal_hold_s(self, value: float) -> None:
        self.sender.refusal_hold_s = value

    @property
    def sent_envelopes(self) -> int:
        return self.sender.counters.sent_envelopes

    @property
    def sent_readings(self) -> int:
        return self.sender.counters.sent_readings

    @property
    def refused_envelopes(self) -> int:
        return self.sender.counters.refused_envelopes

    @property
    def producers_replaced(self) -> int:
        return self.sender.counters.producers_replaced

    # ------------------------------------------------------------------ helpers

    async def _in_db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db, lambda: fn(*args, **kwargs))

    def _topic(self, sector: Sector) -> str:
        return readings_topic_name(self._prefix, sector)

    def validate(self) -> None:
        names = [c.name for c in self.collectors]
        if len(set(names)) != len(names):
            raise ConfigError("collectors", "collector names must be unique")
        for c in self.collectors:
            c.validate()

    def _availability(self, name: str, up: bool, reason: str) -> None:
        self._sources.changed(name, up, reason)

    def attach(self, c: Collector) -> ReadingSink:
        """Register the agent's listeners on ``c`` (availability, commit requests); returns
        the sink its readings go to (what :meth:`run` does for each collector)."""
        c.on_availability(self._availability)
        c.on_commit_request(self._intake.commit_next)
        return self._intake.sink

    def _committed(self, res: AddResult) -> None:
        """A group of hand-overs is on disk: count it, and wake the sender when a full
        envelope waits (otherwise its tick forms one) or the buffer had to drop readings."""
        self._in_counter.inc(res.accepted)
        self._house.count_drops(res)
        full = self.buffer.chunk_readings >= self.cfg.batch_max_readings
        if (full and not self._full_signalled) or res.dropped:
            self._sending.wake.set()
        self._full_signalled = full

    async def update_gauges(self) -> None:
        await self._house.update_gauges(self._sending.inflight_bytes)

    def close_producer(self, timeout_s: float = 10.0) -> None:
        """Close the producer this agent created (call after :meth:`run` returned)."""
        self._sending.close_producer(timeout_s)

    # ------------------------------------------------------------------ run

    async def run(self, stop: asyncio.Event) -> None:
        self.validate()
        report = await self._in_db(self.buffer.open)
        self.boot_id = report.boot_id
        if report.quarantined is not None:
            m.BUFFER_DAMAGE.labels(self.agent_id).inc()
            if report.lost:
                m.READINGS_DROPPED.labels(self.agent_id, "corrupt_buffer").inc(report.lost)
        logger.info(
            "agent %s boot %s (#%d): %d readings and %d envelopes waiting in %s",
            self.agent_id, report.boot_id, report.boot_no, report.pending, report.outbox,
            self.buffer.path,
        )  # fmt: skip
        self._sending.sender.restore(await self._in_db(self.buffer.unsent_outbox))
        held = await self._in_db(self.buffer.quarantine)
        for q in held:  # said once at start: the quarantine does not empty itself
            logger.warning(
                "agent %s: %d envelopes (%d readings) of sector %s are quarantined (%s); "
                "`python -m edge_agent requeue-quarantine --config FILE` sends them again",
                self.agent_id, q.envelopes, q.readings, q.sector.value, q.reason,
            )  # fmt: skip
        self._house.quarantine_gauges(held)
        for c in self.collectors:
            self.attach(c)
        tasks = [
            asyncio.create_task(self._sending.run(), name="sender"),
            asyncio.create_task(self._house.run(self._sending.inflight_bytes), name="housekeeping"),
        ]
        retry = {"retry_initial_s": self.cfg.retry_initial_s, "retry_max_s": self.cfg.retry_max_s}
        collecting = [
            asyncio.create_task(
                supervise(c, self._intake.sink, **retry), name=f"collector-{c.name}"
            )
            for c in self.collectors
        ]
        try:
            await stop.wait()
        finally:
            await self._shutdown(collecting, tasks)

    async def _shutdown(self, collecting: list[asyncio.Task[None]], tasks: list[Any]) -> None:
        self._sources.stopping = True
        for t in collecting:
            t.cancel()
        await asyncio.gather(*collecting, return_exceptions=True)
        for c in self.collectors:
            try:
                await c.stop()
            except Exception as exc:  # noqa: BLE001 - one collector's stop must not skip the rest
                logger.warning("collector %s: stop failed: %s", c.name, exc)
        tasks[0].cancel()  # the sender: the drain below sends what is live
        await asyncio.gather(tasks[0], return_exceptions=True)
        await self._intake.flush()  # what the collectors handed over last
        await self._sending.drain(self.cfg.drain_timeout_s)
        tasks[1].cancel()
        await asyncio.gather(*tasks[1:], return_exceptions=True)
        left = await self._in_db(lambda: self.buffer.pending)
        await self._in_db(self.buffer.close)
        if self.owns_threads:
            self.threads.shutdown()
        # one line per agent only when something is left for the next start
        logger.log(
            logging.INFO if left else logging.DEBUG,
            "agent %s stopped; %d readings stay in the buffer",
            self.agent_id,
            left,
        )
