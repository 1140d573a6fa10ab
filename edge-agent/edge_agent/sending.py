"""The asyncio side of the agent's sender: the state machine's rounds, performed on threads.

:class:`edge_agent.sender.Sender` decides (no I/O); a :class:`SendLoop` runs its rounds, woken
by an acknowledgement, a full envelope or its tick, and performs each action: buffer jobs on
the agent's buffer thread, producer calls on its send thread (kafka-python through
:mod:`edge_agent.kafka_io`), metrics and log lines on the event loop. One send job per batch
of records, one buffer job per round (acknowledgements and new envelopes together), metrics
incremented per batch: on a small machine a thread's wake-up costs more than its work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from edge_agent import metrics as m
from edge_agent import sender as sm
from edge_agent.buffer import AddResult, Buffer, Outgoing
from edge_agent.housekeeping import Housekeeping, InDb
from edge_agent.kafka_io import (
    Producer,
    ProducerFactory,
    Signer,
    close_producer,
    retire_producer,
    send_records,
)
from qilu.contract import Sector

logger = logging.getLogger(__name__)


class SendLoop:
    """One agent's sender: the state machine (:attr:`sender`), its producer, its wake-up."""

    def __init__(
        self,
        agent_id: str,
        buffer: Buffer,
        cfg: sm.Delivery,
        producer: ProducerFactory,
        *,
        topic: Callable[[Sector], str],
        signer: Signer | None,
        replace_producer: bool,
        house: Housekeeping,
        in_db: InDb,
        net: ThreadPoolExecutor,
    ) -> None:
        self.agent_id = agent_id
        self.buffer = buffer
        self.cfg = cfg
        self.sender = sm.Sender(cfg, replace_producer=replace_producer, now=time.monotonic())
        self.wake = asyncio.Event()  # set: run a round now
        self._producer_factory = producer
        self._producer: Producer | None = None
        self._topic = topic
        self._key = agent_id.encode()
        self._signer = signer
        self._house = house
        self._in_db = in_db
        self._net = net
        self._refused_logged: set[Sector] = set()
        self._sent_counter = m.READINGS_SENT.labels(agent_id)  # labelled once, not per batch

    def inflight_bytes(self) -> int:
        return self.sender.inflight_bytes

    async def run(self) -> None:
        """Rounds until cancelled: on a wake-up, or when the sender's tick runs out."""
        loop = asyncio.get_running_loop()
        wake = self.wake
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

    async def drain(self, timeout_s: float) -> None:
        """On stop (the collectors stopped, their last hand-overs committed): send what is
        live and wait up to ``timeout_s`` for the acknowledgements, unless the broker is
        away; then persist what was settled. The rest waits in the buffer."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.sender.failing:
            await self._drive(self.sender.round(time.monotonic(), draining=True))
            if not self.sender.inflight:
                break
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), 0.1)
        await self._drive(self.sender.settle(time.monotonic()))

    def close_producer(self, timeout_s: float) -> None:
        producer, self._producer = self._producer, None
        self.sender.disconnected()
        if producer is not None:
            close_producer(producer, timeout_s)

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
                self.wake.set()
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
            self.wake.set()

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
