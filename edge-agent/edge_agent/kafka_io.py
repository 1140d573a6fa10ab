"""The thin adapter between the agent's sender and kafka-python, and every workaround it needs.

The sender's decisions are in :mod:`edge_agent.sender` (no I/O); this module makes, feeds and
closes producers. kafka-python is imported only inside :func:`new_producer`, so an agent
that never connects (``check-config``, tests with a fake producer) does not load it.

Workarounds, written against kafka-python 3.0.12 (the version pinned in pyproject.toml);
each names the private attribute or internal module it relies on. On an upgrade, re-check
them (tests/unit/test_agent_kafka_io.py fails when one of these names is gone):

1. **Sockets left by a failed bootstrap** (:func:`new_producer`). A ``KafkaProducer`` whose
   construction fails (no broker answers) does not close the network client it made, so an
   agent retrying through a long outage would leak a few sockets per attempt. Two parts:
   no producer is constructed while no bootstrap server accepts a TCP connection; and the
   producer gets its client from a factory (``kafka_client=``, a documented option) that
   remembers it, so a failed construction closes it. The factory builds
   ``kafka.net.compat.KafkaNetClient``, the default client, imported from an internal module.
2. **``close`` that never force-closes** (:func:`close_producer`). ``KafkaProducer.close``
   flushes first and raises ``KafkaTimeoutError`` when the flush times out, before it
   reaches its own force-close; the network thread (``producer._sender``, private) is then
   left running. After such a failure, ``producer._sender.force_close()`` finishes the step.
3. **A flush that waits per batch** (:func:`close_producer`). ``flush(timeout)`` waits up to
   the timeout for *each* pending batch (minutes with a broker away and dozens of batches),
   so the wait for pending records polls ``producer._accumulator.has_incomplete`` (private)
   against one deadline, and ``close`` gets no time when some are still pending.
4. **The stalled idempotent producer** (:class:`SharedProducer`, and the sender's
   :class:`~edge_agent.sender.Retire`). After a long outage the idempotent producer may keep
   an expired batch's sequence state and never deliver again. After a failed record the
   producer is closed and a new one (a new producer id) takes over; no private API is
   involved, only the policy.

5. **Sockets left by failed connection attempts** (:mod:`qilu.kafka_sockets`, shared with
   the ingest): every refused or timed-out reconnection to a broker that is down left its
   socket open until the garbage collector found it; the attempt now closes it.

One more measure concerns kafka-python but not the producer's behaviour: the deferral of its
package ``__init__`` to keep the agent's memory small lives with the other memory measures
in :mod:`edge_agent.lean`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

from edge_agent.sender import Send
from qilu.contract import Sector
from qilu.errors import RetryableError
from qilu.kafka_sockets import close_failed_connections

logger = logging.getLogger(__name__)
KAFKA_PYTHON_VERSION = "3.0.12"  # the workarounds above were checked against this version


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
Settle = Callable[[Send, int, "BaseException | None"], None]


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
    from kafka.net.compat import KafkaNetClient  # workaround 1: the default client's class

    close_failed_connections()  # workaround 5

    # workaround 1: no producer while no broker accepts a connection, and the client of a
    # failed construction is closed
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
    """Close a producer even with records pending (they are still in the buffer): wait for
    pending records against one deadline (workaround 3), then close, and force-close the
    network thread when ``close`` gave up (workaround 2). Anything without kafka-python's
    private attributes (a fake) is simply closed."""
    close = getattr(producer, "close", None)
    if close is None:
        return
    accumulator = getattr(producer, "_accumulator", None)  # workaround 3: private
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
        sender = getattr(producer, "_sender", None)  # workaround 2: private
        if sender is not None and sender.is_alive():
            sender.force_close()


def send_records(
    producer: Producer,
    records: Sequence[tuple[Send, int]],
    *,
    topic: Callable[[Sector], str],
    key: bytes,
    signer: Signer | None,
    settle: Settle,
) -> None:
    """Hand records to the producer in order (on the send thread: ``send`` may block on
    metadata); each is settled by its own future (callback or errback), never by ``flush``.
    ``settle(record, attempt, error)`` runs on kafka-python's network thread."""

    def settlers(
        s: Send, attempt: int
    ) -> tuple[Callable[[object], None], Callable[[BaseException], None]]:
        def ok(_: object) -> None:
            settle(s, attempt, None)

        def err(exc: BaseException) -> None:
            settle(s, attempt, exc)

        return ok, err

    for s, attempt in records:
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


class SharedProducer:
    """One producer for the many agents of one process (province mode), replaced once for all.

    Call it to get the current producer (created on first use, on the caller's thread). An
    agent whose record failed calls :meth:`retire` with the producer it used: the first such
    call closes that producer (its pending records fail, so every agent sends them again) and
    the next call creates a fresh one with a new producer id, which is how a single agent
    recovers from kafka-python's stalled idempotent producer after a long outage (workaround
    4). Later ``retire`` calls naming the old producer do nothing, so a failure seen by fifty
    agents replaces the producer once, not fifty times.
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


def retire_producer(factory: ProducerFactory, producer: Producer) -> None:
    """Close a producer whose records failed (off the event loop): a shared one once for all
    the agents using it, another one at once."""
    if isinstance(factory, SharedProducer):
        factory.retire(producer)
    else:
        close_producer(producer, 0.0)
