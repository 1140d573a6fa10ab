"""The agent's run loop: collectors -> durable buffer -> Kafka, a reading leaves only when acked.

Lifecycle: ``validate`` every collector (no I/O) -> open the buffer -> connect and run the
collectors (each supervised: a failing source is marked unavailable once, retried with backoff
and marked recovered once, without stopping the others) -> on stop, stop the collectors,
commit what they handed over, send what is live and return; the rest waits on disk.

Three tasks share one event loop, and two helper threads keep blocking calls off it:

- intake (group commit): every collector hand-over waits until the buffer transaction that
  holds it committed; hand-overs arriving meanwhile join the next transaction;
- sender: forms envelopes from the buffer (live readings first, the backlog behind them under a
  token-bucket rate cap), hands them to the producer and persists acknowledgements. Each record
  is settled by its own future; a failed one is sent again, byte for byte, after a backoff with
  jitter. At most ``max_in_flight_bytes`` of envelopes are outside the buffer at any time, so
  producer memory stays bounded however long the broker is away;
- housekeeping: the age bound and the gauges.

The ``buffer`` thread runs every SQLite call; the ``send`` thread creates the producer (which
blocks while no broker answers) and calls ``send`` (which may block on metadata).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from collectors.base import Collector
from edge_agent import metrics as m
from edge_agent.buffer import AddResult, Buffer, Outgoing
from edge_agent.chunks import split
from qilu.contract import Reading, Sector
from qilu.errors import ConfigError

logger = logging.getLogger(__name__)
T = TypeVar("T")


class RecordFuture(Protocol):
    def add_callback(self, fn: Callable[[Any], None]) -> Any: ...
    def add_errback(self, fn: Callable[[BaseException], None]) -> Any: ...


class Producer(Protocol):
    def send(self, topic: str, *, key: bytes, value: bytes) -> RecordFuture: ...


ProducerFactory = Callable[[], Producer]


@dataclass(frozen=True, slots=True)
class Delivery:
    """How the sender behaves (``[delivery]`` in the agent's TOML)."""

    batch_max_readings: int = 500
    batch_max_delay_s: float = 1.0
    backlog_rate: float = 0.0  # readings/s for the backlog; 0 = uncapped
    live_window_s: float = 10.0
    max_in_flight_bytes: int = 1 << 20
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0
    drain_timeout_s: float = 10.0  # on stop: how long to wait for in-flight acks
    # hand-overs arriving within this window share one buffer commit (one fsync); a
    # collector waits at most this long (plus the commit) for its acknowledgement
    group_commit_s: float = 0.05


def new_producer(
    bootstrap: str,
    client_id: str,
    *,
    request_timeout_s: float = 10.0,
    delivery_timeout_s: float = 30.0,
) -> Producer:
    """An idempotent producer, acks from all in-sync replicas. Blocks until a broker answers."""
    from kafka import KafkaProducer

    request_ms = int(request_timeout_s * 1000)
    return KafkaProducer(  # type: ignore[no-any-return]
        bootstrap_servers=bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        # several envelopes (~26 KB each) per batch: with the 5 requests in flight that an
        # idempotent producer allows, 16 KB batches would carry one envelope each
        batch_size=131_072,
        max_request_size=1_048_576,
        request_timeout_ms=request_ms,
        delivery_timeout_ms=max(int(delivery_timeout_s * 1000), request_ms + 5),
        max_block_ms=request_ms,
        bootstrap_timeout_ms=request_ms,
        reconnect_backoff_max_ms=5000,
        metrics_enabled=False,
    )


def close_producer(producer: object, timeout_s: float) -> None:
    """Close a producer even with records pending (they are still in the buffer).

    kafka-python's ``close`` flushes first and raises when the flush times out, before it
    reaches its own force-close; finish that step here so no network thread is left behind.
    """
    close = getattr(producer, "close", None)
    if close is None:
        return
    try:
        close(timeout=timeout_s)
    except Exception as exc:  # noqa: BLE001 - kafka-python raises assorted types here
        logger.info("producer closed with records unsent (they stay in the buffer): %s", exc)
        sender = getattr(producer, "_sender", None)
        if sender is not None and sender.is_alive():
            sender.force_close()


class _Send:
    """One envelope handed to the producer, settled by its own record future."""

    __slots__ = ("attempts", "live", "out")

    def __init__(self, out: Outgoing, live: bool) -> None:
        self.out = out
        self.live = live
        self.attempts = 0


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
    ) -> None:
        """``replace_producer``: after a failed record, close the producer and make a new one
        (False when the factory hands out a producer shared with other agents)."""
        self.agent_id = agent_id
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
        self._intake: list[tuple[Sequence[Reading], asyncio.Future[None]]] = []
        self._intake_wake = asyncio.Event()
        self._send_wake = asyncio.Event()
        self._inflight: dict[int, _Send] = {}
        self._inflight_bytes = 0
        self._acked: list[_Send] = []
        self._failed: list[tuple[_Send, BaseException]] = []
        self.replace_producer = replace_producer
        self._failing_since: float | None = None
        self._backoff = self.cfg.retry_initial_s
        self._tokens = 0.0
        self._tokens_at = time.monotonic()
        self._available: dict[str, bool] = {}
        self._restored: list[Outgoing] = []  # outbox of earlier boots, sent first
        self._waiting: dict[int, _Send] = {}  # records to send again at the retry time
        self.producers_replaced = 0
        self._retry_at = 0.0
        self._full_signalled = False
        self._drop_logged = False
        self.sent_envelopes = 0
        self.sent_readings = 0
        self.boot_id = ""

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

    # ------------------------------------------------------------------ availability

    def _availability(self, name: str, up: bool, reason: str) -> None:
        was = self._available.get(name)
        if was is up:
            return
        self._available[name] = up
        m.COLLECTOR_UP.labels(self.agent_id, name).set(1 if up else 0)
        if up and was is False:
            logger.warning("collector %s: source available again", name)
        elif not up:
            m.COLLECTOR_DOWN_EVENTS.labels(self.agent_id, name).inc()
            logger.warning("collector %s: source unavailable: %s", name, reason or "no reason")

    async def _supervise(self, c: Collector) -> None:
        delay = self.cfg.retry_initial_s
        while True:
            started = time.monotonic()
            try:
                await c.connect()
                c.available(True)
                await c.collect(self._sink)
            except asyncio.CancelledError:
                raise
            # a collector is third-party-protocol code: whatever it raises must not stop the
            # other collectors or the buffer; it is logged once (transition) and retried
            except Exception as exc:  # noqa: BLE001
                c.available(False, f"{type(exc).__name__}: {exc}")
            else:
                return  # a finite source finished
            if time.monotonic() - started > 60:
                delay = self.cfg.retry_initial_s  # it ran a while: start the backoff over
            with_jitter = delay * (0.5 + random.random())  # noqa: S311 - jitter, not crypto
            await asyncio.sleep(with_jitter)
            delay = min(delay * 2, self.cfg.retry_max_s)

    # ------------------------------------------------------------------ intake

    async def _sink(self, readings: Sequence[Reading]) -> None:
        """A collector's hand-over: returns once the readings are on disk."""
        if not readings:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._intake.append((readings, fut))
        self._intake_wake.set()
        await fut

    async def _committer(self) -> None:
        while True:
            await self._intake_wake.wait()
            if self.cfg.group_commit_s > 0:
                await asyncio.sleep(self.cfg.group_commit_s)  # let more hand-overs join
            self._intake_wake.clear()
            await self._commit_intake()

    async def _commit_intake(self) -> None:
        batch, self._intake = self._intake, []
        if not batch:
            return
        readings = [r for rs, _ in batch for r in rs]
        size, default = self.cfg.batch_max_readings, self._default
        try:
            res = await self._in_db(lambda: self.buffer.add(split(readings, size, default)))
        except Exception as exc:  # noqa: BLE001 - handed back to every waiting collector
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for _, fut in batch:
            if not fut.done():
                fut.set_result(None)
        m.READINGS_IN.labels(self.agent_id).inc(res.accepted)
        self._count_drops(res)
        full = self.buffer.chunk_readings >= self.cfg.batch_max_readings
        if (full and not self._full_signalled) or res.dropped:
            self._send_wake.set()  # a full envelope is waiting; otherwise the tick forms it
        self._full_signalled = full

    def _count_drops(self, res: AddResult) -> None:
        for reason, n in res.dropped.items():
            m.READINGS_DROPPED.labels(self.agent_id, reason).inc(n)
        if res.dropped and not self._drop_logged:
            self._drop_logged = True
            logger.warning(
                "agent %s: buffer bound reached, dropping readings (%s); gaps are sent upstream",
                self.agent_id,
                ", ".join(f"{k}: {v}" for k, v in sorted(res.dropped.items())),
            )

    # ------------------------------------------------------------------ sending

    async def _ensure_producer(self) -> Producer | None:
        if self._producer is not None:
            return self._producer
        loop = asyncio.get_running_loop()
        try:
            self._producer = await loop.run_in_executor(self._net, self._producer_factory)
        except Exception as exc:  # noqa: BLE001 - kafka-python raises assorted types at bootstrap
            self._note_failure(exc)
            return None
        return self._producer

    def _note_failure(self, exc: BaseException) -> None:
        m.SEND_ERRORS.labels(self.agent_id).inc()
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
            logger.warning("agent %s: broker unavailable, buffering: %s", self.agent_id, exc)
        self._retry_at = now + self._backoff * (0.5 + random.random())  # noqa: S311 - jitter
        self._backoff = min(self._backoff * 2, self.cfg.retry_max_s)

    def _note_success(self) -> None:
        if self._failing_since is not None:
            logger.warning(
                "agent %s: broker reachable again after %.0f s",
                self.agent_id,
                time.monotonic() - self._failing_since,
            )
            self._failing_since = None
        self._backoff = self.cfg.retry_initial_s

    def _start_send(self, s: _Send) -> None:
        loop = asyncio.get_running_loop()
        s.attempts += 1
        attempt = s.attempts
        producer = self._producer
        if producer is None:  # pragma: no cover - callers ensure it
            raise RuntimeError("no producer")
        out = s.out

        def settle_ok(_: object) -> None:
            if not loop.is_closed():  # a late ack after shutdown: the row simply stays
                loop.call_soon_threadsafe(self._settled, s, attempt, None)

        def settle_err(exc: BaseException) -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(self._settled, s, attempt, exc)

        def send() -> None:
            try:
                fut = producer.send(self._topic(out.sector), key=self._key, value=out.payload)
            except Exception as exc:  # noqa: BLE001 - any failure to enqueue is retried
                settle_err(exc)
                return
            fut.add_callback(settle_ok)
            fut.add_errback(settle_err)

        loop.run_in_executor(self._net, send)

    def _settled(self, s: _Send, attempt: int, exc: BaseException | None) -> None:
        if attempt != s.attempts or s.out.id not in self._inflight:
            return  # an earlier attempt settling late: the current one decides
        if exc is None:
            self._acked.append(s)
        else:
            self._failed.append((s, exc))
        self._send_wake.set()

    def _backlog_waiting(self) -> bool:
        """Chunks older than the live window exist (in memory: no query)."""
        oldest = self.buffer.oldest_chunk_us
        return oldest is not None and oldest < time.time_ns() // 1000 - int(
            self.cfg.live_window_s * 1e6
        )

    def _take_tokens(self) -> bool:
        rate = self.cfg.backlog_rate
        if rate <= 0:
            return True
        now = time.monotonic()
        cap = max(rate, float(self.cfg.batch_max_readings))
        self._tokens = min(cap, self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        return self._tokens > 0

    async def _form(self, *, live: bool, force: bool = False) -> Outgoing | None:
        c = self.cfg
        return await self._in_db(
            self.buffer.form,
            live=live,
            now_us=time.time_ns() // 1000,
            live_window_us=int(c.live_window_s * 1e6),
            max_readings=c.batch_max_readings,
            max_delay_us=int(c.batch_max_delay_s * 1e6),
            force=force,
        )

    def _launch(self, out: Outgoing, live: bool) -> None:
        s = _Send(out, live)
        self._inflight[out.id] = s
        self._inflight_bytes += len(out.payload)
        self._start_send(s)

    async def _settle(self) -> None:
        """Persist acknowledgements; schedule failed records for another attempt."""
        if self._acked:
            acked, self._acked = self._acked, []
            await self._in_db(self.buffer.ack, [s.out for s in acked])
            for s in acked:
                self._inflight.pop(s.out.id, None)
                self._inflight_bytes -= len(s.out.payload)
                kind = "gaps" if s.out.gaps else ("live" if s.live else "backlog")
                m.ENVELOPES_SENT.labels(self.agent_id, kind).inc()
                m.READINGS_SENT.labels(self.agent_id).inc(s.out.readings)
                self.sent_envelopes += 1
                self.sent_readings += s.out.readings
            self._note_success()
        if self._failed:
            failed, self._failed = self._failed, []
            for s, _ in failed:
                self._waiting[s.out.id] = s
            self._note_failure(failed[0][1])
            if self.replace_producer and self._producer is not None:
                self._drop_producer()

    def _drop_producer(self) -> None:
        """Replace a producer whose records failed: kafka-python's idempotent producer may keep
        an expired batch's sequence state and stall after the broker returns. The new one gets
        a new producer id; every record in flight is sent again through it (an old attempt
        that still settles is ignored; a duplicate in Kafka is harmless, see ADR 0003)."""
        old, self._producer = self._producer, None
        self.producers_replaced += 1
        for s in self._inflight.values():
            self._waiting[s.out.id] = s
        if old is not None:
            asyncio.get_running_loop().run_in_executor(self._net, close_producer, old, 0.0)

    async def _fill(self, *, draining: bool = False) -> None:
        """Hand envelopes to the producer while the in-flight window has room."""
        if self._failing_since is not None and time.monotonic() < self._retry_at:
            return
        if await self._ensure_producer() is None:
            return
        if self._waiting:  # resend failed records first, same bytes, same order
            waiting, self._waiting = self._waiting, {}
            for _, s in sorted(waiting.items()):
                self._start_send(s)
        limit = self.cfg.max_in_flight_bytes
        while self._restored and self._inflight_bytes < limit:
            self._launch(self._restored.pop(0), live=False)
        c = self.cfg
        due = self.buffer.due(
            time.time_ns() // 1000, c.batch_max_readings, int(c.batch_max_delay_s * 1e6)
        )
        if not (due or draining):
            return  # nothing to form yet: no need to ask the buffer thread
        while self._inflight_bytes < limit:
            out = await self._form(live=True, force=draining)
            live = True
            if out is None and not draining and self._backlog_waiting() and self._take_tokens():
                out = await self._form(live=False)
                live = False
                if out is not None and self.cfg.backlog_rate > 0:
                    self._tokens -= out.readings
            if out is None:
                return
            self._launch(out, live)

    def _next_tick(self) -> float:
        """Seconds until the sender has something to do unless woken: the oldest waiting
        chunk's delay running out, the retry time, or a 1 s heartbeat."""
        now = time.monotonic()
        wait = 1.0
        if self._failing_since is not None:
            wait = min(wait, self._retry_at - now)
        oldest = self.buffer.oldest_chunk_us
        if oldest is not None:
            due_in = oldest / 1e6 + self.cfg.batch_max_delay_s - time.time()
            wait = min(wait, due_in)
        return max(0.02, wait)

    async def _sender(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._send_wake.wait(), self._next_tick())
            self._send_wake.clear()
            await self._settle()
            await self._fill()

    async def _housekeeping(self) -> None:
        last_expire = 0.0
        while True:
            if time.monotonic() - last_expire > 30:
                last_expire = time.monotonic()
                res = await self._in_db(self.buffer.expire)
                self._count_drops(res)
            await self.update_gauges()
            await asyncio.sleep(2.0)

    async def update_gauges(self) -> None:
        st = await self._in_db(self.buffer.stats)
        a = self.agent_id
        m.BUFFER_READINGS.labels(a).set(st.readings)
        m.BUFFER_BYTES.labels(a).set(st.payload_bytes)
        m.BUFFER_DISK_BYTES.labels(a).set(st.disk_bytes)
        m.BUFFER_LIMIT_BYTES.labels(a).set(self.buffer.max_bytes)
        age = 0.0 if st.oldest_added_us is None else time.time() - st.oldest_added_us / 1e6
        m.OLDEST_UNSENT.labels(a).set(max(0.0, age))
        m.IN_FLIGHT.labels(a).set(self._inflight_bytes)

    def close_producer(self, timeout_s: float = 10.0) -> None:
        """Close the producer this agent created (call after :meth:`run` returned)."""
        producer, self._producer = self._producer, None
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
        self._restored = await self._in_db(self.buffer.unsent_outbox)
        for c in self.collectors:
            c.on_availability(self._availability)
        tasks = [
            asyncio.create_task(self._committer(), name="intake"),
            asyncio.create_task(self._sender(), name="sender"),
            asyncio.create_task(self._housekeeping(), name="housekeeping"),
        ]
        collecting = [
            asyncio.create_task(self._supervise(c), name=f"collector-{c.name}")
            for c in self.collectors
        ]
        try:
            await stop.wait()
        finally:
            await self._shutdown(collecting, tasks)

    async def _shutdown(self, collecting: list[asyncio.Task[None]], tasks: list[Any]) -> None:
        for t in collecting:
            t.cancel()
        await asyncio.gather(*collecting, return_exceptions=True)
        for c in self.collectors:
            try:
                await c.stop()
            except Exception as exc:  # noqa: BLE001 - one collector's stop must not skip the rest
                logger.warning("collector %s: stop failed: %s", c.name, exc)
        tasks[0].cancel()  # intake: commit what is left ourselves
        tasks[1].cancel()
        await asyncio.gather(*tasks[:2], return_exceptions=True)
        await self._commit_intake()
        deadline = time.monotonic() + self.cfg.drain_timeout_s
        while time.monotonic() < deadline and self._failing_since is None:
            await self._settle()
            await self._fill(draining=True)
            if not self._inflight:
                break
            self._send_wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._send_wake.wait(), 0.1)
        await self._settle()
        tasks[2].cancel()
        await asyncio.gather(*tasks[2:], return_exceptions=True)
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
