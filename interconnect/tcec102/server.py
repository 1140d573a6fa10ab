"""The province side as a server: the FastAPI router operators call, and what it needs.

    POST <prefix>/query_token                 OperatorID + OperatorSecret -> a bearer token
    POST <prefix>/notification_stationStatus  a connector's status, pushed on change

(``<prefix>`` is ``tcec102.path_prefix``, by default ``/evcs/v1``.) Every answer is HTTP 200
with the standard's ``Ret`` except a body over ``tcec102.max_request_bytes`` (HTTP 413) and an
operator over its rate (HTTP 429 with Retry-After): the standard has no code for either.

An accepted status push becomes one envelope of readings (the pile's connector_status and
fault, computed from the last known status of every connector of the pile,
:func:`mapping.pile_readings`; the connectors' statuses are kept in operator_connectors)
produced to the charging readings topic under the operator's platform-side agent identity
and signed with its key, so the ingest checks, stores, rolls up and counts it like any edge
agent's. The answer waits for Kafka's acknowledgement: ``Ret 0`` means the readings
are durable; a push Kafka did not take in time, or one that arrives while more than
``tcec102.max_in_flight`` wait for Kafka, is answered ``-1`` (busy, retry later) and the
operator sends it again (nothing lost; a retried push repeats identical readings, which the
storage keeps once).

Every refused request gets a dead-letter record (the raw body, reason ``tcec102_<reason>``,
source ``tcec102/<OperatorID>/<interface>``) and counts as a failure of the link. The
decisions are :class:`Gate` (pure: directory, clock and bytes in, outcome out); the
:class:`Endpoint` adds the network (Kafka) and the database (directory, link health).
Design: docs/adr/0015-tcec102.md.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from prometheus_client import Counter, Histogram

from interconnect.tcec102 import mapping
from interconnect.tcec102.exchange import (
    Envelope,
    ExchangeError,
    KeySet,
    Ret,
    Token,
    check_token,
    issue_token,
    open_request,
    read_envelope,
    seal_response,
)
from qilu import signing
from qilu.contract import Envelope as Batch
from qilu.contract import Sector, to_us
from qilu.errors import RetryableError
from qilu.ratelimit import RateLimiter, retry_after_header
from qilu.settings import Settings, Tcec102Settings
from stream.deadletter import DeadLetter

logger = logging.getLogger(__name__)

REQUESTS = Counter(
    "qilu_operator_requests_total",
    "T/CEC 102 requests answered, by interface and result (the Ret code or the HTTP status)",
    ["interface", "result"],
)
LATENCY = Histogram(
    "qilu_operator_answer_seconds",
    "Time to answer a T/CEC 102 request, Kafka acknowledgement included",
    ["interface"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 5.0),
)
DEAD_LETTERS_DROPPED = Counter(
    "qilu_operator_dead_letters_dropped_total",
    "Refused T/CEC 102 requests of unidentified callers not dead-lettered (over "
    "tcec102.unidentified_dead_letters_per_s)",
    ["interface"],
)
INTERFACES = ("query_token", "notification_stationStatus")


@functools.cache
def _counter(interface: str, result: str) -> Counter:
    """REQUESTS' child for these labels (labels() validates and locks on every call)."""
    return REQUESTS.labels(interface, result)


@functools.cache
def _histogram(interface: str) -> Histogram:
    return LATENCY.labels(interface)


# ------------------------------------------------------------------------------ directory


@dataclass(frozen=True, slots=True)
class Link:
    """One active operator as the endpoint sees it."""

    operator_id: str
    agent_id: str
    key_no: int
    inbound: KeySet
    signer: signing.Signer
    connectors: Mapping[str, str]  # ConnectorID -> registry device id
    # the connectors' last known statuses as the database had them: ConnectorID -> (status,
    # when); the gate keeps newer ones of accepted pushes in memory
    statuses: Mapping[str, tuple[int, datetime]] = field(default_factory=dict)
    piles: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # device -> connectors

    def pile_connectors(self, device: str) -> tuple[str, ...]:
        """The connectors of one pile (``piles``, or found in ``connectors``)."""
        found = self.piles.get(device)
        if found is None:
            found = tuple(c for c, d in self.connectors.items() if d == device)
        return found


@dataclass(frozen=True, slots=True)
class Directory:
    links: Mapping[str, Link] = field(default_factory=dict)


# ------------------------------------------------------------------------------ decisions


@dataclass(slots=True)
class Outcome:
    """What to answer and do for one request."""

    interface: str
    operator_id: str
    body: dict[str, Any]
    http_status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    batch: Batch | None = None  # readings to produce before answering
    link: Link | None = None
    refused: ExchangeError | None = None  # dead-letter it
    token_expires: datetime | None = None
    status: tuple[str, int] | None = None  # (ConnectorID, status) of an accepted push

    @property
    def result(self) -> str:
        if self.http_status != 200:
            return str(self.http_status)
        return str(self.body.get("Ret"))


class Gate:
    """The endpoint's decisions, without I/O (the clock and the directory are passed in)."""

    def __init__(self, cfg: Tcec102Settings, token_key: bytes, boot_id: str) -> None:
        self._cfg = cfg
        self._token_key = token_key
        self._tolerance = timedelta(seconds=cfg.timestamp_tolerance_s)
        self._lifetime = timedelta(seconds=cfg.token_lifetime_s)
        self._limiter = RateLimiter(cfg.rate_burst)
        self._ip_limiter = RateLimiter(cfg.ip_rate_burst)
        self._boot_id = boot_id
        self._seq: dict[str, int] = {}
        self._seq_lock = threading.Lock()
        self._tokens: dict[str, Token] = {}
        # (OperatorID, ConnectorID) -> (status, when) of pushes decided by this process
        self._statuses: dict[tuple[str, str], tuple[int, datetime]] = {}

    def _refuse(self, interface: str, op: str, exc: ExchangeError, link: Link | None) -> Outcome:
        # an answer we cannot sign for a caller we cannot identify carries no Data
        keys = link.inbound if link is not None else None
        body = seal_response(exc.ret, keys, msg=f"{exc.reason}: {exc.detail}"[:200])
        return Outcome(interface, op, body, link=link, refused=exc)

    def _over_rate(
        self, interface: str, op: str, key: str, rate: float, link: Link | None
    ) -> Outcome | None:
        """429 with Retry-After when ``key`` is over ``rate``; None when within it."""
        limiter = self._limiter if link is not None else self._ip_limiter
        wait = limiter.take(key, rate)
        if wait <= 0:
            return None
        limited = ExchangeError(Ret.BUSY, "rate_limited", f"over {rate:g}/s")
        return Outcome(
            interface,
            op,
            {"error": "rate_limited", "detail": limited.detail},
            http_status=429,
            headers={"Retry-After": retry_after_header(wait)},
            link=link,
            refused=limited,
        )

    def _identify(
        self, interface: str, body: bytes, directory: Directory, client: str
    ) -> tuple[Envelope, Link] | Outcome:
        # per client address first: nothing is parsed for a caller over its rate
        over = self._over_rate(interface, "", f"ip:{client}", self._cfg.ip_rate_per_s, None)
        if over is not None:
            return over
        if len(body) > self._cfg.max_request_bytes:
            big = ExchangeError(Ret.POST_PARAMETERS, "oversized", f"{len(body)} bytes")
            return Outcome(
                interface,
                "",
                {
                    "error": "too_large",
                    "detail": f"request body over {self._cfg.max_request_bytes} bytes",
                },
                http_status=413,
                refused=big,
            )
        try:
            env = read_envelope(body)
        except ExchangeError as exc:
            return self._refuse(interface, "", exc, None)
        link = directory.links.get(env.operator_id)
        if link is None:
            unknown = ExchangeError(
                Ret.POST_PARAMETERS, "unknown_operator", f"OperatorID {env.operator_id}"
            )
            return self._refuse(interface, env.operator_id, unknown, None)
        return env, link

    def _operator_over_rate(self, interface: str, link: Link) -> Outcome | None:
        """The operator's own allowance, taken only once its request's signature passed:
        requests naming an operator they cannot sign for do not use it up."""
        return self._over_rate(
            interface, link.operator_id, link.operator_id, self._cfg.rate_per_s, link
        )

    def query_token(
        self, body: bytes, directory: Directory, now: datetime, client: str = ""
    ) -> Outcome:
        found = self._identify("query_token", body, directory, client)
        if isinstance(found, Outcome):
            return found
        env, link = found
        try:
            payload = open_request(env, link.inbound, now, self._tolerance)
        except ExchangeError as exc:
            return self._refuse("query_token", link.operator_id, exc, link)
        over = self._operator_over_rate("query_token", link)
        if over is not None:
            return over
        secret = payload.get("OperatorSecret")
        if payload.get("OperatorID") != link.operator_id:
            fail, why = 1, ExchangeError(Ret.OK, "token_refused", "Data.OperatorID differs")
        elif not isinstance(secret, str) or not hmac.compare_digest(
            secret.encode(), link.inbound.operator_secret.encode()
        ):
            fail, why = 2, ExchangeError(Ret.OK, "token_refused", "wrong OperatorSecret")
        else:
            text, tok = issue_token(
                self._token_key, link.operator_id, link.key_no, now, self._lifetime
            )
            data = {
                "OperatorID": link.operator_id,
                "SuccStat": 0,
                "AccessToken": text,
                "TokenAvailableTime": self._cfg.token_lifetime_s,
                "FailReason": 0,
            }
            return Outcome(
                "query_token",
                link.operator_id,
                seal_response(Ret.OK, link.inbound, data),
                link=link,
                token_expires=tok.expires_at,
            )
        data = {
            "OperatorID": link.operator_id,
            "SuccStat": 1,
            "AccessToken": "",
            "TokenAvailableTime": 0,
            "FailReason": fail,
        }
        return Outcome(
            "query_token",
            link.operator_id,
            seal_response(Ret.OK, link.inbound, data),
            link=link,
            refused=why,
        )

    def station_status(
        self,
        body: bytes,
        authorization: str | None,
        directory: Directory,
        now: datetime,
        client: str = "",
    ) -> Outcome:
        name = "notification_stationStatus"
        found = self._identify(name, body, directory, client)
        if isinstance(found, Outcome):
            return found
        env, link = found
        try:
            self._check_token(authorization, link, now)
            payload = open_request(env, link.inbound, now, self._tolerance)
        except ExchangeError as exc:
            return self._refuse(name, link.operator_id, exc, link)
        over = self._operator_over_rate(name, link)
        if over is not None:
            return over
        try:
            status = mapping.status_notification(payload)
        except ExchangeError as exc:
            return self._refuse(name, link.operator_id, exc, link)
        device = link.connectors.get(status.connector_id)
        if device is None:
            unknown = ExchangeError(
                Ret.BUSINESS_PARAMETERS,
                "unknown_connector",
                f"ConnectorID {status.connector_id} is not a connector of {link.operator_id}",
            )
            return self._refuse(name, link.operator_id, unknown, link)
        batch = Batch(link.agent_id, self._boot_id, self._next_seq(link.agent_id), to_us(now))
        batch.extend(
            mapping.pile_readings(device, self._pile(link, device, status, now), to_us(now))
        )
        return Outcome(
            name,
            link.operator_id,
            _accepted(link.inbound),
            batch=batch,
            link=link,
            status=(status.connector_id, status.status),
        )

    def _pile(
        self, link: Link, device: str, pushed: mapping.ConnectorStatus, now: datetime
    ) -> list[int]:
        """The last known status of every connector of the pile, the pushed one included
        (remembered at once, so that pushes of its other connectors decided after it see
        it): the newer of this process's memory and the database's (which pulls update)."""
        key = (link.operator_id, pushed.connector_id)
        mine = self._statuses.get(key)
        if mine is None or mine[1] <= now:
            self._statuses[key] = (pushed.status, now)
        out = []
        for cid in link.pile_connectors(device):
            mine = self._statuses.get((link.operator_id, cid))
            stored = link.statuses.get(cid)
            known = max(
                (k for k in (mine, stored) if k is not None), key=lambda k: k[1], default=None
            )
            if known is not None:
                out.append(known[0])
        return out or [pushed.status]

    def _check_token(self, authorization: str | None, link: Link, now: datetime) -> None:
        """:func:`check_token`, remembering tokens that passed (until they expire): an
        operator pushing thousands of times a second sends the same token every time."""
        known = self._tokens.get(authorization or "")
        if (
            known is not None
            and (known.operator_id, known.key_no) == (link.operator_id, link.key_no)
            and known.expires_at > now
        ):
            return
        tok = check_token(self._token_key, authorization, link.operator_id, link.key_no, now)
        if len(self._tokens) >= 10_000:
            self._tokens.clear()  # bounded; the next request of each operator checks again
        self._tokens[authorization or ""] = tok

    def _next_seq(self, agent_id: str) -> int:
        with self._seq_lock:
            n = self._seq.get(agent_id, 0) + 1
            self._seq[agent_id] = n
            return n

    def busy(self, outcome: Outcome, reason: str) -> Outcome:
        """The same request answered -1 instead (Kafka full or down): retry later."""
        keys = outcome.link.inbound if outcome.link else None
        return Outcome(
            outcome.interface,
            outcome.operator_id,
            seal_response(Ret.BUSY, keys),
            link=outcome.link,
            refused=ExchangeError(Ret.BUSY, reason, "retry later"),
        )


@functools.lru_cache(maxsize=1024)
def _accepted_cached(keys: KeySet) -> dict[str, Any]:
    return seal_response(Ret.OK, keys, {"Status": 0})


def _accepted(keys: KeySet) -> dict[str, Any]:
    """The answer to an accepted push: the same bytes every time for a key set (the IV is
    fixed), so sealed once; a copy (its values are strings and a number)."""
    return dict(_accepted_cached(keys))


# ------------------------------------------------------------------------------ adapters


class Sink:
    """Where accepted batches and dead letters go (Kafka in production)."""

    def produce(self, batch: Batch, signer: signing.Signer) -> asyncio.Future[None]:
        raise NotImplementedError

    def dead_letter(self, letter: DeadLetter) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush and close."""


class KafkaSink(Sink):
    """Produces to the charging readings topic and the dead-letter topic with librdkafka
    (confluent-kafka): its client runs in C threads, without the interpreter's lock, where
    kafka-python's pure-Python producer cost the push more than its whole exchange
    (docs/adr/0015-tcec102.md, "Throughput"). The records are what the puller's kafka-python
    producer writes: acks=all, idempotent, the same partition for the same agent (murmur2 of
    the key, as kafka-python and the Java client choose)."""

    def __init__(self, settings: Settings) -> None:
        from confluent_kafka import KafkaException, Producer

        from stream.topics import deadletter_topic, readings_topic

        k = settings.kafka
        self._topic = readings_topic(k, Sector.CHARGING)
        self._dlq = deadletter_topic(k)
        self._producer = Producer(
            {
                "bootstrap.servers": k.bootstrap,
                "client.id": f"{k.client_id}-tcec102",
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 2,
                "partitioner": "murmur2_random",
                "logger": logging.getLogger("interconnect.tcec102.kafka"),
            }
        )
        # metadata now, not on the first push: no broker, or no topic within 2 s (a new
        # topic takes a moment to reach every broker's metadata): not ready, retried
        deadline = time.monotonic() + 2.0
        while True:
            try:
                meta = self._producer.list_topics(self._topic, timeout=2)
            except KafkaException as exc:
                raise RetryableError(f"Kafka unreachable: {exc}") from exc
            found = meta.topics.get(self._topic)
            if found is not None and found.error is None:
                break
            if time.monotonic() > deadline:
                why = found.error if found is not None else "not found"
                raise RetryableError(f"topic {self._topic}: {why}")
            time.sleep(0.1)
        self._lock = threading.Lock()
        self._acks: list[tuple[asyncio.Future[None], BaseException | None]] = []
        self._wake_pending = False
        self._closing = threading.Event()
        # delivery reports (and the client's log lines) are served by poll(), on this thread
        self._poller = threading.Thread(target=self._poll, name="tcec102-acks", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._closing.is_set():
            try:
                self._producer.poll(0.1)
            except Exception:  # a callback's error leaves poll(): the reports must go on
                logger.exception("tcec102 endpoint: a Kafka delivery report failed")

    def produce(self, batch: Batch, signer: signing.Signer) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def report(err: Any, _msg: Any) -> None:
            self._acked(loop, done, None if err is None else RetryableError(str(err)))

        value = batch.encode()
        headers: list[tuple[str, str | bytes | None]] = [*signer.headers(value)]
        # BufferError when librdkafka's queue is full: the caller answers -1 (busy)
        self._producer.produce(
            self._topic, value, batch.agent_id.encode(), headers=headers, on_delivery=report
        )
        return done

    def _acked(
        self,
        loop: asyncio.AbstractEventLoop,
        fut: asyncio.Future[None],
        exc: BaseException | None,
    ) -> None:
        """Called on the poller thread once per record: queue it, and wake the event loop
        once per burst (a batch's records are acknowledged together), not once per record."""
        with self._lock:
            self._acks.append((fut, exc))
            if self._wake_pending:
                return
            self._wake_pending = True
        try:
            loop.call_soon_threadsafe(self._settle_acks)
        except RuntimeError:  # the event loop is closed: nobody waits for these answers
            logger.debug("tcec102 endpoint: acknowledgements after the event loop closed")

    def _settle_acks(self) -> None:
        with self._lock:
            acks, self._acks = self._acks, []
            self._wake_pending = False
        for fut, exc in acks:
            _settle(fut, exc)

    def dead_letter(self, letter: DeadLetter) -> None:
        headers: list[tuple[str, str | bytes | None]] = [*letter.headers()]
        self._producer.produce(self._dlq, letter.value, letter.key, headers=headers)

    def close(self) -> None:
        self._producer.flush(10)
        self._closing.set()
        self._poller.join(timeout=5)


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError("Kafka did not acknowledge within produce_timeout_s"))


def _settle(fut: asyncio.Future[None], exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is None:
        fut.set_result(None)
    else:
        fut.set_exception(exc)


class LinkLedger:
    """Link events kept in memory, folded into operator_links by the refresher."""

    def __init__(self) -> None:
        from storage.operators import LinkDelta

        self._new = LinkDelta
        self._lock = threading.Lock()
        self._deltas: dict[str, LinkDelta] = {}

    def note(self, outcome: Outcome, at: datetime) -> None:
        if outcome.link is None:
            return
        if outcome.refused is not None and outcome.refused.ret is Ret.BUSY:
            return  # refused by us (over its rate, busy): not the link's failure
        with self._lock:
            d = self._deltas.get(outcome.operator_id)
            if d is None:
                d = self._deltas[outcome.operator_id] = self._new()
            if outcome.refused is not None:
                d.failures += 1
                d.last_failure = at
                d.last_failure_reason = outcome.refused.reason
            elif outcome.interface == "query_token":
                d.last_token = at
                d.token_expires_at = outcome.token_expires
            else:
                d.last_push = at
                if outcome.status is not None:
                    cid, status = outcome.status
                    if cid not in d.statuses or d.statuses[cid][1] <= at:
                        d.statuses[cid] = (status, at)

    def take(self) -> dict[str, Any]:
        with self._lock:
            out, self._deltas = self._deltas, {}
        return out


class Endpoint:
    """The running endpoint: a directory refreshed from the database, a Kafka sink, the gate.

    ``start()`` connects in the background (requests are answered -1 until Kafka is ready);
    ``stop()`` flushes what is in flight."""

    def __init__(
        self,
        settings: Settings,
        load: Callable[[], Directory],
        flush_links: Callable[[dict[str, Any]], None],
        sink_factory: Callable[[], Sink] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        from interconnect.tcec102.secrets import box

        self._cfg = settings.tcec102
        self._settings = settings
        self.gate = Gate(self._cfg, box(settings).token_key, uuid.uuid4().hex)
        self._load = load
        self._flush_links = flush_links
        self._sink_factory = sink_factory or (lambda: KafkaSink(settings))
        self._clock = clock
        self.directory = Directory()
        self.sink: Sink | None = None
        self.ledger = LinkLedger()
        self.in_flight = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._down = False
        self.loop_lag = 0.0  # seconds, measured by _watch_loop on the serving event loop
        self._watcher: asyncio.Task[None] | None = None
        self._unidentified = RateLimiter(10.0)  # dead letters of unidentified callers

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tcec102", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._refresh_once()  # the last link events
        if self.sink is not None:
            self.sink.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.sink is None:
                try:
                    self.sink = self._sink_factory()
                    logger.info("tcec102 endpoint producing to Kafka")
                except Exception as exc:  # noqa: BLE001 - kafka-python raises assorted types
                    if not self._down:
                        logger.warning("tcec102 endpoint: Kafka unreachable (%s), retrying", exc)
                        self._down = True
            self._refresh_once()
            self._stop.wait(self._cfg.refresh_s)

    def _refresh_once(self) -> None:
        import psycopg

        try:
            self.directory = self._load()
            deltas = self.ledger.take()
            if deltas:
                self._flush_links(deltas)
        except psycopg.Error as exc:
            if not self._down:
                logger.warning("tcec102 endpoint: operator directory not refreshed: %s", exc)
                self._down = True
            return
        if self._down and self.sink is not None:
            logger.warning("tcec102 endpoint: database and Kafka reachable again")
            self._down = False

    def refresh_now(self) -> None:
        """Reload the directory at once (tests, and after an admin change in this process)."""
        self._refresh_once()

    async def handle(self, interface: str, request: Request) -> JSONResponse:
        received = time.perf_counter()
        out = await self.answer(
            interface,
            await request.body(),
            request.headers.get("authorization"),
            request.client.host if request.client else "",
            received,
        )
        return JSONResponse(out.body, out.http_status, headers=out.headers or None)

    async def _watch_loop(self) -> None:
        """Measure how late the event loop wakes up (its lag), every 0.1 s."""
        tick = 0.1
        while not self._stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(tick)
            self.loop_lag = max(0.0, time.perf_counter() - before - tick)

    def _overloaded(self, received: float | None) -> str | None:
        """Why a request should be answered -1 before it is decided, or None."""
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch_loop())
        if received is not None and time.perf_counter() - received > self._cfg.max_wait_s:
            return "waited_too_long"
        if self.loop_lag > self._cfg.max_loop_lag_s:
            return "loop_lag"
        return None

    async def answer(
        self,
        interface: str,
        body: bytes,
        authorization: str | None,
        client: str = "",
        received: float | None = None,
    ) -> Outcome:
        """Decide, produce what was accepted, dead-letter what was refused: the outcome.
        ``client`` is the caller's address (its rate), ``received`` the perf_counter() when
        the request arrived: one that waited longer than ``max_wait_s``, or any while the
        event loop lags more than ``max_loop_lag_s``, is a push answered -1 (busy)."""
        started = time.perf_counter()
        now = self._clock()
        if interface == "query_token":
            out = self.gate.query_token(body, self.directory, now, client)
        else:
            out = self.gate.station_status(body, authorization, self.directory, now, client)
        if out.batch is not None and out.link is not None:
            late = self._overloaded(received)
            out = self.gate.busy(out, late) if late else await self._produce(out)
        self._after(out, body, now)
        _counter(interface, out.result).inc()
        _histogram(interface).observe(time.perf_counter() - started)
        return out

    async def _produce(self, out: Outcome) -> Outcome:
        sink = self.sink
        if sink is None or self.in_flight >= self._cfg.max_in_flight:
            return self.gate.busy(out, "busy")
        if out.batch is None or out.link is None:  # the caller checked; for the type checker
            return out
        self.in_flight += 1
        timer: asyncio.TimerHandle | None = None
        try:
            acked = sink.produce(out.batch, out.link.signer)
            if not acked.done():  # one timer, not asyncio.wait_for's task and callbacks
                timer = asyncio.get_running_loop().call_later(
                    self._cfg.produce_timeout_s, _expire, acked
                )
            await acked
        except Exception as exc:  # noqa: BLE001 - any Kafka failure is "retry later"
            logger.debug("tcec102 push not acknowledged: %s", exc)
            return self.gate.busy(out, "not_acknowledged")
        finally:
            if timer is not None:
                timer.cancel()
            self.in_flight -= 1
        return out

    def _after(self, out: Outcome, body: bytes, now: datetime) -> None:
        self.ledger.note(out, now)
        # busy and over-rate requests are not bad input: the sender retries them
        if out.refused is None or out.refused.ret is Ret.BUSY or self.sink is None:
            return
        if out.link is None and self._unidentified.take(
            "", self._cfg.unidentified_dead_letters_per_s
        ):
            # a caller we cannot identify: sampled, so a flood cannot fill the topic
            DEAD_LETTERS_DROPPED.labels(out.interface).inc()
            return
        letter = DeadLetter(
            key=(out.operator_id or "unknown").encode(),
            value=body[: self._cfg.max_request_bytes],
            reason=f"tcec102_{out.refused.reason}",
            detail=out.refused.detail[:500],
            source=f"tcec102/{out.operator_id or '-'}/{out.interface}",
        )
        try:
            self.sink.dead_letter(letter)
        except Exception as exc:  # noqa: BLE001 - a lost dead letter must not fail the answer
            logger.debug("tcec102 dead letter not produced: %s", exc)


class FastEndpoint:
    """The operators' interfaces answered before FastAPI's routing (pure ASGI middleware).

    Operators push status at thousands of requests a second; FastAPI's request handling
    (routing, the Request object, dependencies, the response class) costs more than the
    exchange itself. This layer answers ``POST <prefix>/<interface>`` with the same
    :meth:`Endpoint.answer` the routes of :func:`build_router` call (they stay for the
    OpenAPI description and as the reference); anything else passes on. It reads at most
    ``tcec102.max_request_bytes`` + 1 bytes of a body.

    The API adds it as the outermost of its middleware: the API's request metrics and body
    limit do not see these requests, which :data:`REQUESTS` and :data:`LATENCY` count and
    ``tcec102.max_request_bytes`` limits (each layer cost the push a few microseconds)."""

    def __init__(self, app: Any, prefix: str, max_bytes: int) -> None:
        self.app = app
        self._routes = {f"{prefix}/{name}": name for name in INTERFACES}
        self._max = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        interface = self._routes.get(scope["path"]) if scope["type"] == "http" else None
        ep: Endpoint | None = getattr(scope["app"].state, "tcec102", None) if interface else None
        if interface is None or ep is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        received = time.perf_counter()
        chunks, size = [], 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size <= self._max:
                chunks.append(chunk)
            if not message.get("more_body", False) or size > self._max:
                break
        body = b"".join(chunks) if size <= self._max else b" " * size
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
        client = scope.get("client") or ("", 0)
        out = await ep.answer(interface, body, authorization, str(client[0]), received)
        raw = json.dumps(out.body, ensure_ascii=False, separators=(",", ":")).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(raw)).encode()),
            *((k.lower().encode(), v.encode()) for k, v in out.headers.items()),
        ]
        await send({"type": "http.response.start", "status": out.http_status, "headers": headers})
        await send({"type": "http.response.body", "body": raw})


def build_router(prefix: str) -> APIRouter:
    """The operators' interfaces under ``prefix``, answered by the running :class:`Endpoint`
    the application keeps in ``app.state.tcec102`` (503 until it is there)."""
    problem = {"description": "", "content": {"application/json": {}}}
    router = APIRouter(
        prefix=prefix,
        tags=["T/CEC 102"],
        responses={
            200: {"description": "The standard's answer: Ret, Msg, Data (encrypted), Sig"},
            413: {**problem, "description": "Body over tcec102.max_request_bytes"},
            429: {**problem, "description": "Over the operator's rate; see Retry-After"},
            503: {**problem, "description": "The endpoint is starting; see Retry-After"},
        },
    )

    async def answer(interface: str, request: Request) -> JSONResponse:
        ep: Endpoint | None = getattr(request.app.state, "tcec102", None)
        if ep is None:
            REQUESTS.labels(interface, "503").inc()
            return JSONResponse(
                {"error": "unavailable", "detail": "the T/CEC 102 endpoint is starting"},
                503,
                headers={"Retry-After": "1"},
            )
        return await ep.handle(interface, request)

    @router.post("/query_token", summary="Token for an operator (T/CEC 102 part 4)")
    async def query_token(request: Request) -> JSONResponse:
        return await answer("query_token", request)

    @router.post("/notification_stationStatus", summary="A connector's status, pushed on change")
    async def station_status(request: Request) -> JSONResponse:
        return await answer("notification_stationStatus", request)

    return router


# ------------------------------------------------------------------------------ database


def database_loader(settings: Settings, pool: Any) -> Callable[[], Directory]:
    """Load the directory from the database (active operators, their secrets, connectors)."""
    from interconnect.tcec102.secrets import SecretsError, box
    from storage import operators

    sealer = box(settings)
    broken: set[str] = set()

    def load() -> Directory:
        with pool.connection(timeout=5) as conn:
            rows = operators.list_operators(conn)
            conns = operators.connector_states(conn)
        links: dict[str, Link] = {}
        for r in rows:
            try:
                s = sealer.open(r.operator_id, r.sealed)
            except SecretsError as exc:
                if r.operator_id not in broken:
                    logger.error("%s", exc)  # noqa: TRY400 - the message says it all
                    broken.add(r.operator_id)
                continue
            mine = conns.get(r.operator_id, {})
            piles: dict[str, list[str]] = {}
            for cid, c in mine.items():
                piles.setdefault(c.device_id, []).append(cid)
            links[r.operator_id] = Link(
                r.operator_id,
                r.agent_id,
                r.key_no,
                s.inbound,
                signing.Signer(1, s.signing_key),
                {cid: c.device_id for cid, c in mine.items()},
                {
                    cid: (c.status, c.status_at)
                    for cid, c in mine.items()
                    if c.status is not None and c.status_at is not None
                },
                {dev: tuple(cids) for dev, cids in piles.items()},
            )
        return Directory(links)

    return load


def database_link_writer(pool: Any) -> Callable[[dict[str, Any]], None]:
    from storage import operators

    def flush(deltas: dict[str, Any]) -> None:
        with pool.connection(timeout=5) as conn, conn.transaction():
            operators.record_links(conn, deltas)

    return flush
