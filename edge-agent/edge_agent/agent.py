"""The agent's run loop: collectors -> durable buffer -> Kafka, a reading leaves only when acked.

Lifecycle: ``validate`` every collector (no I/O) -> open the buffer -> connect and run the
collectors (each supervised, :mod:`edge_agent.supervision`: a failing source is marked
unavailable once, retried with backoff and marked recovered once, without stopping the
others) -> on stop, stop the collectors, commit what they handed over, send what is live and
return; the rest waits on disk.

One event loop runs the collectors and two tasks, and two helper threads keep blocking calls
off it:

- intake (group commit, no task of its own): the first hand-over of a group arms a timer of
  ``group_commit_s``; when it fires, everything handed over meanwhile goes to the buffer in one
  transaction, and every hand-over returns once that transaction committed; a collector whose
  peer waits for the acknowledgement (an IEC 104 station with a full window) asks for its
  next hand-over to commit at once (``Collector.commit_next``), with whatever waits with it;
- sender: the decisions are :class:`edge_agent.sender.Sender`, a state machine without I/O
  (forming envelopes, the in-flight window, retries with backoff, the refusal hold-off,
  producer replacement); this module drives it: each round is a generator of actions that
  the agent performs on its threads (buffer jobs, sends through the producer, see
  :mod:`edge_agent.kafka_io`) and answers. Each record is settled by its own future; a failed
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
sender round, one send job per batch of records, metrics incremented per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from collectors.base import Collector, ReadingSink
from edge_agent import metrics as m
from edge_agent import sender as sm
from edge_agent.buffer import AddResult, Buffer, Outgoing
from edge_agent.chunks import split
from edge_agent.housekeeping import Housekeeping
from edge_agent.kafka_io import (
    HeaderProducer,
    Producer,
    ProducerFactory,
    RecordFuture,
    SharedProducer,
    Signer,
    close_producer,
    new_producer,
    retire_producer,
    send_records,
)
from edge_agent.sender import REFUSAL_HOLD_S, TOPIC_AUTHORIZATION_FAILED, Delivery, refusal_of
from edge_agent.supervision import Availability, supervise
from qilu.contract import Reading, Sector
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
    "close_producer",
    "new_producer",
    "refusal_of",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")
_HandOver = tuple[Sequence[Reading], "asyncio.Future[None]"]


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
    ) -> None:
        """``replace_producer``: after a failed record, close the producer and make a new one;
        a :class:`SharedProducer` factory is replaced once for all the agents sharing it
        (False only for a producer that must never be replaced, e.g. a test fake). ``signer``:
        signs every record at send time (docs/adr/0010); None sends unsigned records, which an
        authenticating ingest dead-letters."""
        self.agent_id = agent_id
        self._signer = signer
        self.collectors = list(collectors)
        self.buffer = buffer
        self._producer_factory = producer
        self._producer: Producer | None = None
        self._prefix = topic_prefix
        self.cfg = delivery or Delivery()
        self._default = default_sector
        self._key = agent_id.encode()
        self._db = ThreadPoolExecutor(1, thread_name_prefix=f"buffer-{agent_id}")
        self._net = ThreadPoolExecutor(1, thread_name_prefix=f"send-{agent_id}")
        self._intake: list[_HandOver] = []
        self._commit_timer: asyncio.TimerHandle | None = None
        self._commit_asap = False  # a collector asked for the next hand-over to commit at once
        self._send_wake = asyncio.Event()
        self._full_signalled = False
        self.sender = sm.Sender(self.cfg, replace_producer=replace_producer, now=time.monotonic())
        self._sources = Availability(agent_id)
        self._house = Housekeeping(agent_id, buffer, self._in_db)
        self._refused_logged: set[Sector] = set()
        self.boot_id = ""
        self._in_counter = m.READINGS_IN.labels(agent_id)  # labelled once, not per batch
        self._sent_counter = m.READINGS_SENT.labels(agent_id)

    # ------------------------------------------------------------------ the sender's figures

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
        return f"{self._prefix}.readings.{sector.value}"

    def validate(self) -> None:
        names = [c.name for c in self.collectors]
        if len(set(names)) != len(names):
            raise ConfigError("collectors", "collector names must be unique")
        for c in self.collectors:
            c.validate()

    def _availability(self, name: str, up: bool, reason: str) -> None:
        self._sources.changed(name, up, reason)

    # ------------------------------------------------------------------ intake

    def attach(self, c: Collector) -> ReadingSink:
        """Register the agent's listeners on ``c`` (availability, commit requests); returns
        the sink its readings go to (what :meth:`run` does for each collector)."""
        c.on_availability(self._availability)
        c.on_commit_request(self._commit_next)
        return self._sink

    def _commit_next(self) -> None:
        self._commit_asap = True

    async def _sink(self, readings: Sequence[Reading]) -> None:
        """A collector's hand-over: returns once the readings are on disk.

        Hand-overs share one commit within ``group_commit_s``, unless the collector asked
        for this one to commit at once (:meth:`Collector.commit_next`: a peer is waiting for
        its acknowledgement); then it commits now, with whatever else is waiting."""
        asap, self._commit_asap = self._commit_asap, False
        if not readings:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._intake.append((readings, fut))
        if asap:
            self._start_commit()
        elif self._commit_timer is None:  # the first hand-over of a group schedules its commit
            self._commit_timer = loop.call_later(self.cfg.group_commit_s, self._start_commit)
        await fut

    def _start_commit(self) -> asyncio.Future[AddResult] | None:
        """Hand what was handed over to the buffer thread as one transaction (one fsync).

        Commits queue on the single buffer thread in order; each settles its hand-overs in
        :meth:`_committed`. No task and no extra wake-up per commit: the timer starts it, the
        buffer thread's completion finishes it."""
        if self._commit_timer is not None:
            self._commit_timer.cancel()
            self._commit_timer = None
        batch, self._intake = self._intake, []
        if not batch:
            return None
        readings = [r for rs, _ in batch for r in rs] if len(batch) > 1 else batch[0][0]
        size, default, buffer = self.cfg.batch_max_readings, self._default, self.buffer
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(self._db, lambda: buffer.add(split(readings, size, default)))
        done.add_done_callback(lambda f: self._committed(batch, f))
        return done

    def _committed(
        self,
        batch: list[tuple[Sequence[Reading], asyncio.Future[None]]],
        done: asyncio.Future[AddResult],
    ) -> None:
        exc = done.exception() if not done.cancelled() else asyncio.CancelledError()
        for _, fut in batch:
            if fut.done():
                continue
            if exc is None:
                fut.set_result(None)
            else:  # handed back to every waiting collector
                fut.set_exception(exc)
        if exc is not None:
            return
        res = done.result()
        self._in_counter.inc(res.accepted)
        self._house.count_drops(res)
        full = self.buffer.chunk_readings >= self.cfg.batch_max_readings
        if (full and not self._full_signalled) or res.dropped:
            self._send_wake.set()  # a full envelope is waiting; otherwise the tick forms it
        self._full_signalled = full

    async def _commit_intake(self) -> None:
        """Commit whatever is waiting now and wait for it (used on stop)."""
        done = self._start_commit()
        if done is not None:
            with contextlib.suppress(Exception):  # already handed back to the collectors
                await done

    # ------------------------------------------------------------------ sending

    async def _drive(self, steps: sm.Steps) -> None:
        """Perform the actions of one round of the sender (:mod:`edge_agent.sender`) and
        answer them; an action's own failure (a buffer job) ends the round with it."""
        answer: Any = None
        while True:
            try:
                action = steps.send(answer)
            except StopIteration:
                return
            answer = await self._perform(action)

    async def _perform(self, action: sm.Action) -> Any:
        """The I/O of one action and its answer (None for the actions that want none)."""
        match action:
            case sm.Look():
                c, now_us = self.cfg, time.time_ns() // 1000
                due = self.buffer.due(now_us, c.batch_max_readings, int(c.batch_max_delay_s * 1e6))
                return sm.View(due, self.buffer.oldest_chunk_us, now_us, time.monotonic())
            case sm.PersistAcks(acked):
                await self._in_db(self.buffer.ack, [s.out for s in acked])
                self._acks_persisted(acked)
            case sm.AckAndForm():
                formed = await self._in_db(self._ack_and_form, action)
                self._acks_persisted(action.acked)
                return formed, time.monotonic()
            case sm.Quarantine(refused):
                return await self._quarantine(refused)
            case sm.Connect():
                return await self._connect()
            case _:
                self._act(action)
        return None

    def _act(self, action: sm.Action) -> None:
        """The actions that need no answer: sends, the producer's retirement, wake-ups, news."""
        match action:
            case sm.Transmit(records):
                self._transmit(records)
            case sm.Retire():
                self._retire()
            case sm.Wake():
                self._send_wake.set()
            case sm.Failing(error, first):
                m.SEND_ERRORS.labels(self.agent_id).inc()
                if first:  # the text: a kept record must not keep a traceback (sockets)
                    logger.warning(
                        "agent %s: broker unavailable, buffering: %s", self.agent_id, error
                    )
            case sm.Recovered(after_s):
                logger.warning(
                    "agent %s: broker reachable again after %.0f s", self.agent_id, after_s
                )
            case sm.Readmitted(sector):
                logger.warning(
                    "agent %s: the broker accepts topic %s again; what was quarantined waits "
                    "for `python -m edge_agent requeue-quarantine --config FILE`",
                    self.agent_id, self._topic(sector),
                )  # fmt: skip

    async def _connect(self) -> sm.Connected:
        loop = asyncio.get_running_loop()
        try:
            self._producer = await loop.run_in_executor(self._net, self._producer_factory)
        except Exception as exc:  # noqa: BLE001 - kafka-python raises assorted types at bootstrap
            return sm.Connected(exc, time.monotonic())
        return sm.Connected(None, time.monotonic())

    def _transmit(self, records: list[tuple[sm.Send, int]]) -> None:
        """Hand records to the producer in one job on the send thread."""
        loop = asyncio.get_running_loop()
        producer = self._producer
        if producer is None:  # pragma: no cover - the sender connects first
            raise RuntimeError("no producer")

        def settle(s: sm.Send, attempt: int, exc: BaseException | None) -> None:
            if not loop.is_closed():  # a late ack after shutdown: the row simply stays
                loop.call_soon_threadsafe(self._settled, s, attempt, exc)

        send = partial(
            send_records, producer, records,
            topic=self._topic, key=self._key, signer=self._signer, settle=settle,
        )  # fmt: skip
        loop.run_in_executor(self._net, send)

    def _settled(self, s: sm.Send, attempt: int, exc: BaseException | None) -> None:
        if self.sender.settled(s, attempt, exc):
            self._send_wake.set()

    def _retire(self) -> None:
        """Close the producer whose records failed, off the loop (a shared one once for all)."""
        old, self._producer = self._producer, None
        if old is not None:
            asyncio.get_running_loop().run_in_executor(
                self._net, retire_producer, self._producer_factory, old
            )

    def _ack_and_form(self, a: sm.AckAndForm) -> list[tuple[Outgoing, bool]]:
        """On the buffer thread: delete the acknowledged envelopes and form new ones (one
        hand-off to the buffer thread however many envelopes are due)."""
        b = self.buffer
        b.ack([s.out for s in a.acked])

        def form(r: sm.FormRequest) -> sm.Formed:
            o = b.form(
                live=r.live, now_us=r.now_us, live_window_us=r.live_window_us,
                max_readings=r.max_readings, max_delay_us=r.max_delay_us, force=r.force,
            )  # fmt: skip
            return sm.Formed(o, b.oldest_chunk_us, time.time_ns() // 1000)

        now_us = time.time_ns() // 1000
        plan = sm.form_plan(self.cfg, a.room, a.allowance, draining=a.draining, now_us=now_us)
        return sm.drive_form(plan, form)

    def _acks_persisted(self, acked: Sequence[sm.Send]) -> None:
        kinds = {"gaps": 0, "live": 0, "backlog": 0}
        readings = 0
        for s in acked:
            kinds["gaps" if s.out.gaps else ("live" if s.live else "backlog")] += 1
            readings += s.out.readings
        for kind, n in kinds.items():  # metrics once per batch of acknowledgements
            if n:
                m.ENVELOPES_SENT.labels(self.agent_id, kind).inc(n)
        self._sent_counter.inc(readings)

    async def _quarantine(self, refused: Sequence[sm.Refused]) -> float:
        """Move refused envelopes to the buffer's quarantine; log each sector once per run.
        Returns the monotonic time they were stored (the hold-off starts then)."""
        by_reason: dict[str, list[Outgoing]] = {}
        for r in refused:
            by_reason.setdefault(r.reason, []).append(r.send.out)

        def store() -> AddResult:
            evicted = AddResult()
            for reason, outs in by_reason.items():
                for why, n in self.buffer.refuse(outs, reason).dropped.items():
                    evicted.drop(why, n)
            return evicted

        self._house.count_drops(await self._in_db(store))  # past the quarantine's share
        stored = time.monotonic()
        for r in refused:
            sector = r.send.out.sector
            m.REFUSED.labels(self.agent_id, sector.value).inc()
            if sector not in self._refused_logged:
                self._refused_logged.add(sector)
                logger.error(
                    "agent %s: the broker refuses topic %s (%s): the agent is not authorised "
                    "for sector %s. This is not an outage: its envelopes are quarantined in the "
                    "buffer and the other sectors keep flowing. Fix the collector "
                    "configuration or the agent's sites (`qilu agents update`), then re-send "
                    "them with `python -m edge_agent requeue-quarantine --config FILE`",
                    self.agent_id, self._topic(sector), r.reason, sector.value,
                )  # fmt: skip
        self._house.quarantine_gauges(await self._in_db(self.buffer.quarantine))
        return stored

    async def _sender(self) -> None:
        loop = asyncio.get_running_loop()
        wake = self._send_wake
        while True:
            if not wake.is_set():  # a plain timer, not wait_for (no task per round)
                wait = self.sender.wait_s(
                    time.monotonic(), time.time(), self.buffer.oldest_chunk_us
                )
                tick = loop.call_later(wait, wake.set)
                await wake.wait()
                tick.cancel()
            wake.clear()
            await self._drive(self.sender.round(time.monotonic()))

    def _inflight_bytes(self) -> int:
        return self.sender.inflight_bytes

    async def update_gauges(self) -> None:
        await self._house.update_gauges(self._inflight_bytes)

    def close_producer(self, timeout_s: float = 10.0) -> None:
        """Close the producer this agent created (call after :meth:`run` returned)."""
        producer, self._producer = self._producer, None
        self.sender.disconnected()
        if producer is not None:
            close_producer(producer, timeout_s)

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
        self.sender.restore(await self._in_db(self.buffer.unsent_outbox))
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
            asyncio.create_task(self._sender(), name="sender"),
            asyncio.create_task(self._house.run(self._inflight_bytes), name="housekeeping"),
        ]
        retry = {"retry_initial_s": self.cfg.retry_initial_s, "retry_max_s": self.cfg.retry_max_s}
        collecting = [
            asyncio.create_task(supervise(c, self._sink, **retry), name=f"collector-{c.name}")
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
        await self._commit_intake()  # what the collectors handed over last
        deadline = time.monotonic() + self.cfg.drain_timeout_s
        while time.monotonic() < deadline and not self.sender.failing:
            await self._drive(self.sender.round(time.monotonic(), draining=True))
            if not self.sender.inflight:
                break
            self._send_wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._send_wake.wait(), 0.1)
        await self._drive(self.sender.settle(time.monotonic()))
        tasks[1].cancel()
        await asyncio.gather(*tasks[1:], return_exceptions=True)
        left = await self._in_db(lambda: self.buffer.pending)
        await self._in_db(self.buffer.close)
        self._db.shutdown(wait=True)
        self._net.shutdown(wait=False, cancel_futures=True)
        # one line per agent only when something is left for the next start
        logger.log(
            logging.INFO if left else logging.DEBUG,
            "agent %s stopped; %d readings stay in the buffer",
            self.agent_id,
            left,
        )
