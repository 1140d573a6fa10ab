"""The agent's run loop: collectors -> durable buffer -> Kafka, a reading leaves only when acked.

Lifecycle: ``validate`` every collector (no I/O) -> open the buffer -> connect and run the
collectors (each supervised: a failing source is marked unavailable once, retried with backoff
and marked recovered once, without stopping the others) -> on stop, stop the collectors,
commit what they handed over, send what is live and return; the rest waits on disk.

One event loop runs the collectors and two tasks, and two helper threads keep blocking calls
off it:

- intake (group commit, no task of its own): the first hand-over of a group arms a timer of
  ``group_commit_s``; when it fires, everything handed over meanwhile goes to the buffer in one
  transaction, and every hand-over returns once that transaction committed; a collector whose
  peer waits for the acknowledgement (an IEC 104 station with a full window) asks for its
  next hand-over to commit at once (``Collector.commit_next``), with whatever waits with it;
- sender: forms envelopes from the buffer (live readings first, the backlog behind them under a
  token-bucket rate cap), hands them to the producer and persists acknowledgements (in the same
  buffer job as the next envelopes). Each record is settled by its own future; a failed one is
  sent again, byte for byte, after a backoff with jitter. At most ``max_in_flight_bytes`` of
  envelopes are outside the buffer at any time, so producer memory stays bounded however long
  the broker is away. A record the broker refuses for good (``TopicAuthorizationFailed``:
  the agent is not authorised for that sector's topic) is no outage: its envelope goes to the
  buffer's quarantine (kept, counted per sector, re-sent after ``requeue-quarantine``; past
  its share of the buffer the oldest are evicted with a ``quarantine_full`` gap), it is
  logged once per sector, and everything else keeps flowing;
- housekeeping: the age bound and the gauges.

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
import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

from collectors.base import Collector, ReadingSink
from edge_agent import metrics as m
from edge_agent.buffer import AddResult, Buffer, Outgoing, Quarantined
from edge_agent.chunks import split
from qilu.contract import Reading, Sector
from qilu.errors import ConfigError, RetryableError

logger = logging.getLogger(__name__)
T = TypeVar("T")
TOPIC_AUTHORIZATION_FAILED = 29  # Kafka's error code: the principal may not write the topic
# after a refusal, a sector's envelopes go to the quarantine unsent for this long; then the
# next one asks the broker again (rights granted meanwhile are noticed without a restart)
REFUSAL_HOLD_S = 300.0


class RecordFuture(Protocol):
    def add_callback(self, fn: Callable[[Any], None]) -> Any: ...
    def add_errback(self, fn: Callable[[BaseException], None]) -> Any: ...


class Producer(Protocol):
    def send(self, topic: str, *, key: bytes, value: bytes) -> RecordFuture: ...


class HeaderProducer(Protocol):
    """A producer that takes record headers too (kafka-python's does); fakes may not."""

    def send(
        self, topic: str, *, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> RecordFuture: ...


class Signer(Protocol):
    """Signs an envelope's bytes (qilu.signing.Signer): Kafka headers for the record."""

    def headers(self, value: bytes) -> list[tuple[str, bytes]]: ...


ProducerFactory = Callable[[], Producer]


class _HeldBack(Exception):  # noqa: N818 - not an error: a refusal the agent infers
    """An envelope of a sector the broker refused within the hold-off: quarantined unsent."""

    errno = TOPIC_AUTHORIZATION_FAILED

    def __init__(self, sector: Sector) -> None:
        super().__init__(f"sector {sector.value} refused within the hold-off")


def refusal_of(exc: BaseException) -> str | None:
    """The quarantine reason when ``exc`` is a permanent refusal of the record's topic (not an
    outage: sending it again cannot succeed until the agent's rights change), else None.
    Recognised by Kafka's error code (an OSError's errno is another numbering), so no client
    import is needed here."""
    if not isinstance(exc, OSError) and getattr(exc, "errno", None) == TOPIC_AUTHORIZATION_FAILED:
        return "topic_authorization_failed"
    return None


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
    security: dict[str, str] | None = None,
) -> Producer:
    """An idempotent producer, acks from all in-sync replicas. Blocks until a broker answers.

    ``security``: kafka-python's security options (``security_protocol``, ``sasl_mechanism``,
    ``sasl_plain_username``, ``sasl_plain_password``, ``ssl_cafile``) for the agents' SASL/SCRAM
    listener (docs/adr/0010); None = PLAINTEXT."""
    from kafka import KafkaProducer
    from kafka.net.compat import KafkaNetClient

    # a KafkaProducer that fails to bootstrap leaves sockets open; an agent retrying through
    # a long outage would leak a few per attempt. So: no producer while no broker accepts a
    # connection, and the client of a failed construction is closed.
    if not _any_reachable(bootstrap, request_timeout_s):
        raise RetryableError(f"no Kafka broker accepts connections at {bootstrap}")
    made: list[Any] = []

    def client(**configs: Any) -> Any:
        made.append(KafkaNetClient(**configs))
        return made[-1]

    request_ms = int(request_timeout_s * 1000)
    try:
        return KafkaProducer(  # type: ignore[no-any-return]
            **(security or {}),
            kafka_client=client,
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
    except Exception:
        for c in made:
            with contextlib.suppress(Exception):  # best effort: the failure is what matters
                c.close()
        raise


def _any_reachable(bootstrap: str, timeout_s: float) -> bool:
    """Does any bootstrap server accept a TCP connection?"""
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "localhost", int(port)), timeout_s):
                return True
        except (OSError, ValueError):
            continue
    return False


def close_producer(producer: object, timeout_s: float) -> None:
    """Close a producer even with records pending (they are still in the buffer).

    kafka-python's ``close`` flushes first and raises when the flush times out, before it
    reaches its own force-close; finish that step here so no network thread is left behind.
    Its flush also waits up to the timeout for *each* pending batch (minutes with a broker
    away and dozens of batches), so the wait for pending records runs here, against one
    deadline, and ``close`` gets no time when some are still pending.
    """
    close = getattr(producer, "close", None)
    if close is None:
        return
    accumulator = getattr(producer, "_accumulator", None)
    if accumulator is not None and timeout_s > 0:
        deadline = time.monotonic() + timeout_s
        while accumulator.has_incomplete and time.monotonic() < deadline:
            time.sleep(0.05)
        if accumulator.has_incomplete:
            timeout_s = 0.0
    try:
        close(timeout=timeout_s)
    except Exception as exc:  # noqa: BLE001 - kafka-python raises assorted types here
        # the text, not the exception: a kept log record must not keep its traceback's sockets
        logger.info("producer closed with records unsent (they stay in the buffer): %s", str(exc))
        sender = getattr(producer, "_sender", None)
        if sender is not None and sender.is_alive():
            sender.force_close()


class SharedProducer:
    """One producer for the many agents of one process (province mode), replaced once for all.

    Call it to get the current producer (created on first use, on the caller's thread). An
    agent whose record failed calls :meth:`retire` with the producer it used: the first such
    call closes that producer (its pending records fail, so every agent sends them again) and
    the next call creates a fresh one with a new producer id, which is how a single agent
    recovers from kafka-python's stalled idempotent producer after a long outage. Later
    ``retire`` calls naming the old producer do nothing, so a failure seen by fifty agents
    replaces the producer once, not fifty times.
    """

    def __init__(self, factory: ProducerFactory) -> None:
        self._factory = factory
        self._current: Producer | None = None
        self._lock = threading.Lock()
        self.replaced = 0

    def __call__(self) -> Producer:
        with self._lock:
            if self._current is None:
                self._current = self._factory()
            return self._current

    def retire(self, producer: Producer) -> bool:
        """``producer`` failed a record: replace it unless that already happened. Blocks for
        the force-close; call it off the event loop."""
        with self._lock:
            if producer is not self._current:
                return False
            self._current = None
            self.replaced += 1
        logger.warning("shared producer replaced after a failed record (#%d)", self.replaced)
        close_producer(producer, 0.0)
        return True

    def close(self, timeout_s: float = 10.0) -> None:
        with self._lock:
            producer, self._current = self._current, None
        if producer is not None:
            close_producer(producer, timeout_s)


_HandOver = tuple[Sequence[Reading], "asyncio.Future[None]"]


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
        self._drop_logged: set[str] = set()  # drop reasons already logged this run
        self.sent_envelopes = 0
        self.sent_readings = 0
        self.refused_envelopes = 0
        self._refused_logged: set[Sector] = set()
        self._quarantine_sectors: set[Sector] = set()
        # sector -> monotonic time until which its envelopes are quarantined unsent
        self._refused_until: dict[Sector, float] = {}
        self.refusal_hold_s = REFUSAL_HOLD_S
        self._stopping = False  # collectors going down on stop are no news
        self.boot_id = ""
        self._in_counter = m.READINGS_IN.labels(agent_id)  # labelled once, not per batch
        self._sent_counter = m.READINGS_SENT.labels(agent_id)

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
        if self._stopping:  # a source closing because the agent stops: not an outage
            return
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
        self._count_drops(res)
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

    def _count_drops(self, res: AddResult) -> None:
        for reason, n in res.dropped.items():
            m.READINGS_DROPPED.labels(self.agent_id, reason).inc(n)
        new = res.dropped.keys() - self._drop_logged
        if new:  # once per reason and run: the counter has the numbers
            self._drop_logged |= new
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
            logger.warning(
                "agent %s: broker unavailable, buffering: %s", self.agent_id, str(exc)
            )  # the text: a kept record must not keep the traceback (and its sockets) alive
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

    def _start_sends(self, sends: Sequence[_Send]) -> None:
        """Hand records to the producer in order, in one job on the send thread; each is
        settled by its own future (callback or errback), never by ``flush``."""
        if not sends:
            return
        loop = asyncio.get_running_loop()
        producer = self._producer
        if producer is None:  # pragma: no cover - callers ensure it
            raise RuntimeError("no producer")
        key, topic, signer = self._key, self._topic, self._signer

        def settle(s: _Send, attempt: int, exc: BaseException | None) -> None:
            if not loop.is_closed():  # a late ack after shutdown: the row simply stays
                loop.call_soon_threadsafe(self._settled, s, attempt, exc)

        def settlers(
            s: _Send, attempt: int
        ) -> tuple[Callable[[object], None], Callable[[BaseException], None]]:
            def ok(_: object) -> None:
                settle(s, attempt, None)

            def err(exc: BaseException) -> None:
                settle(s, attempt, exc)

            return ok, err

        def send(batch: list[tuple[_Send, int]]) -> None:
            for s, attempt in batch:
                out = s.out
                try:
                    if signer is None:
                        fut = producer.send(topic(out.sector), key=key, value=out.payload)
                    else:  # signed at send time: a rotated key also covers the buffered backlog
                        fut = cast(HeaderProducer, producer).send(
                            topic(out.sector),
                            key=key,
                            value=out.payload,
                            headers=signer.headers(out.payload),
                        )
                except Exception as exc:  # noqa: BLE001 - any failure to enqueue is retried
                    settle(s, attempt, exc)
                    continue
                ok, err = settlers(s, attempt)
                fut.add_callback(ok)
                fut.add_errback(err)

        batch = []
        for s in sends:
            s.attempts += 1
            batch.append((s, s.attempts))
        loop.run_in_executor(self._net, send, batch)

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

    def _backlog_allowance(self) -> float:
        """Readings the backlog may send now (token bucket; infinite when uncapped)."""
        rate = self.cfg.backlog_rate
        if rate <= 0:
            return float("inf")
        now = time.monotonic()
        cap = max(rate, float(self.cfg.batch_max_readings))
        self._tokens = min(cap, self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        return self._tokens

    def _form_many(
        self, room: int, allowance: float, *, draining: bool
    ) -> list[tuple[Outgoing, bool]]:
        """On the buffer thread: envelopes for ``room`` bytes of the in-flight window, live
        ones first, then backlog ones while ``allowance`` readings remain (one hand-off to
        the buffer thread however many envelopes are due)."""
        c, b = self.cfg, self.buffer
        now_us = time.time_ns() // 1000
        window_us, delay_us = int(c.live_window_s * 1e6), int(c.batch_max_delay_s * 1e6)
        out: list[tuple[Outgoing, bool]] = []
        while room > 0:
            o = b.form(
                live=True, now_us=now_us, live_window_us=window_us,
                max_readings=c.batch_max_readings, max_delay_us=delay_us, force=draining,
            )  # fmt: skip
            live = True
            if o is None and not draining and allowance > 0 and self._backlog_waiting():
                o = b.form(
                    live=False, now_us=now_us, live_window_us=window_us,
                    max_readings=c.batch_max_readings, max_delay_us=delay_us,
                )  # fmt: skip
                live = False
                if o is not None:
                    allowance -= o.readings
            if o is None:
                break
            out.append((o, live))
            room -= len(o.payload)
        return out

    def _launch(self, formed: Sequence[tuple[Outgoing, bool]]) -> None:
        sends = []
        now = time.monotonic()
        for out, live in formed:
            s = _Send(out, live)
            self._inflight[out.id] = s
            self._inflight_bytes += len(out.payload)
            if self._refused_until.get(out.sector, 0.0) > now:
                # refused a moment ago: quarantined without asking the broker again (one
                # refused request per hold-off and sector, not one per envelope)
                self._failed.append((s, _HeldBack(out.sector)))
                self._send_wake.set()
                continue
            sends.append(s)
        self._start_sends(sends)

    def _take_acked(self) -> list[_Send]:
        """Acknowledged records leave the in-flight window; their rows are deleted by the
        next buffer job (:meth:`_persist_acks`, or together with forming envelopes)."""
        acked, self._acked = self._acked, []
        for s in acked:
            self._inflight.pop(s.out.id, None)
            self._inflight_bytes -= len(s.out.payload)
            if self._refused_until.pop(s.out.sector, None) is not None:
                logger.warning(
                    "agent %s: the broker accepts topic %s again; what was quarantined waits "
                    "for `python -m edge_agent requeue-quarantine --config FILE`",
                    self.agent_id, self._topic(s.out.sector),
                )  # fmt: skip
        if acked:
            self._note_success()
        return acked

    def _acks_persisted(self, acked: Sequence[_Send]) -> None:
        kinds = {"gaps": 0, "live": 0, "backlog": 0}
        readings = 0
        for s in acked:
            kinds["gaps" if s.out.gaps else ("live" if s.live else "backlog")] += 1
            readings += s.out.readings
        for kind, n in kinds.items():  # metrics once per batch of acknowledgements
            if n:
                m.ENVELOPES_SENT.labels(self.agent_id, kind).inc(n)
        self._sent_counter.inc(readings)
        self.sent_envelopes += len(acked)
        self.sent_readings += readings

    async def _persist_acks(self, acked: Sequence[_Send]) -> None:
        if acked:
            await self._in_db(self.buffer.ack, [s.out for s in acked])
            self._acks_persisted(acked)

    def _absorb_failures(self) -> list[tuple[_Send, str, bool]]:
        """Failed records wait for another attempt (through a new producer, see below);
        refused ones (see :func:`refusal_of`) leave the in-flight window and are returned,
        to be quarantined by the caller's buffer job."""
        refused: list[tuple[_Send, str, bool]] = []
        if self._failed:
            failed, self._failed = self._failed, []
            transient = []
            for s, exc in failed:
                reason = refusal_of(exc)
                if reason is None:
                    transient.append((s, exc))
                    continue
                refused.append((s, reason, isinstance(exc, _HeldBack)))
                self._waiting.pop(s.out.id, None)  # queued by a producer replacement
                self._inflight.pop(s.out.id, None)
                self._inflight_bytes -= len(s.out.payload)
            for s, _ in transient:
                self._waiting[s.out.id] = s
            if transient:
                self._note_failure(transient[0][1])
                if self.replace_producer and self._producer is not None:
                    self._drop_producer()
        return refused

    async def _quarantine(self, refused: Sequence[tuple[_Send, str, bool]]) -> None:
        """Move refused envelopes to the buffer's quarantine; log each sector once per run."""
        if not refused:
            return
        by_reason: dict[str, list[Outgoing]] = {}
        for s, reason, _ in refused:
            by_reason.setdefault(reason, []).append(s.out)

        def store() -> AddResult:
            evicted = AddResult()
            for reason, outs in by_reason.items():
                for why, n in self.buffer.refuse(outs, reason).dropped.items():
                    evicted.drop(why, n)
            return evicted

        self._count_drops(await self._in_db(store))  # past the quarantine's share: evicted
        self.refused_envelopes += len(refused)
        until = time.monotonic() + self.refusal_hold_s
        for s, reason, held in refused:
            sector = s.out.sector
            m.REFUSED.labels(self.agent_id, sector.value).inc()
            if not held:  # the broker's own answer (re)starts the hold-off
                self._refused_until[sector] = until
            if sector not in self._refused_logged:
                self._refused_logged.add(sector)
                logger.error(
                    "agent %s: the broker refuses topic %s (%s): the agent is not authorised "
                    "for sector %s. This is not an outage: its envelopes are quarantined in the "
                    "buffer and the other sectors keep flowing. Fix the collector "
                    "configuration or the agent's sites (`qilu agents update`), then re-send "
                    "them with `python -m edge_agent requeue-quarantine --config FILE`",
                    self.agent_id, self._topic(sector), reason, sector.value,
                )  # fmt: skip
        self._quarantine_gauges(await self._in_db(self.buffer.quarantine))

    def _quarantine_gauges(self, quarantine: Sequence[Quarantined]) -> None:
        """Per-sector gauges of the quarantine; a sector gets series once it had something
        quarantined (then 0 after a requeue), the others none."""
        held = {q.sector: q for q in quarantine}
        self._quarantine_sectors |= held.keys()
        for sector in self._quarantine_sectors:
            q = held.get(sector)
            m.QUARANTINE_ENVELOPES.labels(self.agent_id, sector.value).set(q.envelopes if q else 0)
            m.QUARANTINE_READINGS.labels(self.agent_id, sector.value).set(q.readings if q else 0)

    async def _settle(self) -> None:
        """Persist acknowledgements; schedule failed records for another attempt."""
        acked = self._take_acked()
        refused = self._absorb_failures()
        await self._persist_acks(acked)
        await self._quarantine(refused)

    async def _round(self, *, draining: bool = False) -> None:
        """Settle what the broker answered and hand out what is due, in one buffer job."""
        acked = self._take_acked()
        refused = self._absorb_failures()
        await self._quarantine(refused)
        await self._fill(acked, draining=draining)

    def _drop_producer(self) -> None:
        """Replace a producer whose records failed: kafka-python's idempotent producer may keep
        an expired batch's sequence state and stall after the broker returns. The new one gets
        a new producer id; every record in flight is sent again through it (an old attempt
        that still settles is ignored; a duplicate in Kafka is harmless, see ADR 0003)."""
        old, self._producer = self._producer, None
        self.producers_replaced += 1
        for s in self._inflight.values():
            self._waiting[s.out.id] = s
        if old is None:
            return
        loop = asyncio.get_running_loop()
        factory = self._producer_factory
        if isinstance(factory, SharedProducer):  # the others use it too: replaced once for all
            loop.run_in_executor(self._net, factory.retire, old)
        else:
            loop.run_in_executor(self._net, close_producer, old, 0.0)

    async def _fill(self, acked: Sequence[_Send], *, draining: bool = False) -> None:
        """Hand envelopes to the producer while the in-flight window has room; ``acked``:
        acknowledgements to persist in the same buffer job."""
        if self._failing_since is not None and time.monotonic() < self._retry_at:
            await self._persist_acks(acked)
            return
        if await self._ensure_producer() is None:
            await self._persist_acks(acked)
            return
        if self._waiting:  # resend failed records first, same bytes, same order
            waiting, self._waiting = self._waiting, {}
            self._start_sends([s for _, s in sorted(waiting.items())])
        limit = self.cfg.max_in_flight_bytes
        restored, room = [], limit - self._inflight_bytes
        while self._restored and room > 0:
            out = self._restored.pop(0)
            restored.append((out, False))
            room -= len(out.payload)
        self._launch(restored)
        c = self.cfg
        due = self.buffer.due(
            time.time_ns() // 1000, c.batch_max_readings, int(c.batch_max_delay_s * 1e6)
        )
        room = limit - self._inflight_bytes
        if not (due or draining or self._backlog_waiting()) or room <= 0:
            await self._persist_acks(acked)  # nothing to form yet
            return
        allowance = 0.0 if draining else self._backlog_allowance()
        outs = [s.out for s in acked]

        def ack_and_form() -> list[tuple[Outgoing, bool]]:
            self.buffer.ack(outs)
            return self._form_many(room, allowance, draining=draining)

        formed = await self._in_db(ack_and_form)
        self._acks_persisted(acked)
        if self.cfg.backlog_rate > 0:
            self._tokens -= sum(o.readings for o, live in formed if not live)
        self._launch(formed)

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
        loop = asyncio.get_running_loop()
        wake = self._send_wake
        while True:
            if not wake.is_set():  # a plain timer, not wait_for (no task per round)
                tick = loop.call_later(self._next_tick(), wake.set)
                await wake.wait()
                tick.cancel()
            wake.clear()
            await self._round()

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
        if self._quarantine_sectors:
            self._quarantine_gauges(await self._in_db(self.buffer.quarantine))

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
        held = await self._in_db(self.buffer.quarantine)
        for q in held:  # said once at start: the quarantine does not empty itself
            logger.warning(
                "agent %s: %d envelopes (%d readings) of sector %s are quarantined (%s); "
                "`python -m edge_agent requeue-quarantine --config FILE` sends them again",
                self.agent_id, q.envelopes, q.readings, q.sector.value, q.reason,
            )  # fmt: skip
        self._quarantine_gauges(held)
        for c in self.collectors:
            self.attach(c)
        tasks = [
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
        self._stopping = True
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
        while time.monotonic() < deadline and self._failing_since is None:
            await self._round(draining=True)
            if not self._inflight:
                break
            self._send_wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._send_wake.wait(), 0.1)
        await self._settle()
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
