"""The ingest consumer: Kafka -> validate -> database, offsets committed after the database.

One iteration of the loop:

1. poll a batch of records (an envelope each);
2. decode and validate every record; good readings go to the sink, bad records and bad
   readings become dead letters (original bytes + reason), the rest of the batch goes on;
3. flush the sink: one database transaction (retried with backoff while the database is down
   or saturated, partitions paused so nothing more is fetched, nothing dropped);
4. produce the dead letters and wait for the broker's acknowledgement;
5. commit the consumed offsets.

A crash anywhere before 5 redelivers the batch; the natural key makes that harmless. A
rebalance during a retry discards the pending batch: the partition's next owner rereads it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import TopicPartition

from qilu.contract import Envelope, decode
from qilu.errors import DecodeError, Rejection, RetryableError
from qilu.settings import IngestSettings, KafkaSettings
from storage.registry_store import DeviceIndex
from storage.writer import ReadingsSink
from stream import metrics
from stream.deadletter import DeadLetter
from stream.gaps import GapSink
from stream.topics import deadletter_topic, readings_topics
from stream.validate import Rows, Validator

logger = logging.getLogger(__name__)
INDEX_REFRESH_S = 30.0


@dataclass(slots=True)
class BatchOutcome:
    records: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)


class _Revocations(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.revoked = False

    def on_partitions_revoked(self, revoked: object) -> None:
        self.revoked = True

    def on_partitions_assigned(self, assigned: object) -> None:
        pass


class IngestConsumer:
    def __init__(
        self,
        kafka: KafkaSettings,
        ingest: IngestSettings,
        sink: ReadingsSink,
        load_index: Callable[[], DeviceIndex],
        *,
        stop: threading.Event | None = None,
        topics: list[str] | None = None,
        gaps: GapSink | None = None,
    ) -> None:
        self._kafka, self._cfg, self._sink = kafka, ingest, sink
        self._gaps = gaps  # agents' gap records (stream/gaps.py), flushed with the readings
        self._load_index = load_index
        self._stop = stop or threading.Event()
        self._topics = topics or readings_topics(kafka)
        self._validator = self._new_validator()
        self._index_loaded = time.monotonic()
        self._listener = _Revocations()

    def _new_validator(self) -> Validator:
        idx = self._load_index()
        return Validator(idx.devices, idx.metrics, max_future_skew_s=self._cfg.max_future_skew_s)

    def stop(self) -> None:
        self._stop.set()

    # -- the pure part: records in, rows and dead letters out ---------------------------------
    def process(self, records: list[tuple[str, int, int, bytes | None, bytes]]) -> BatchOutcome:
        """Decode and validate (topic, partition, offset, key, value) records into the sink."""
        out = BatchOutcome(records=len(records))
        now_us = time.time_ns() // 1000
        for topic, partition, offset, key, value in records:
            source = f"{topic}/{partition}/{offset}"
            try:
                env = decode(value)
            except DecodeError as exc:
                out.dead_letters.append(DeadLetter(key, value, exc.reason, exc.detail, source))
                continue
            if env.gaps and self._gaps is not None:
                self._gaps.add(env)
            rows, rejected = self._validator.validate(env, now_us)
            if rejected and any(r.reason == "unknown_device" for r in rejected):
                rows, rejected = self._revalidate_after_refresh(env, now_us, rows, rejected)
            self._sink.add(rows)
            out.rejected += len(rejected)
            if rejected:
                reasons = sorted({r.reason for r in rejected})
                detail = f"{len(rejected)} of {len(env)} readings rejected: {', '.join(reasons)}"
                out.dead_letters.append(
                    DeadLetter(key, value, "rejected_readings", detail, source, tuple(rejected))
                )
        return out

    def _revalidate_after_refresh(
        self, env: Envelope, now_us: int, rows: Rows, rejected: list[Rejection]
    ) -> tuple[Rows, list[Rejection]]:
        """A device unknown to us may have been registered since we loaded the index."""
        if time.monotonic() - self._index_loaded < INDEX_REFRESH_S:
            return rows, rejected
        self._validator = self._new_validator()
        self._index_loaded = time.monotonic()
        logger.info("device index reloaded after an unknown device appeared")
        return self._validator.validate(env, now_us)

    # -- the I/O loop ---------------------------------------------------------------------------
    def run(self) -> None:
        consumer = KafkaConsumer(
            bootstrap_servers=self._kafka.bootstrap,
            group_id=self._cfg.group_id,
            client_id=f"{self._kafka.client_id}-ingest",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self._cfg.max_batch_records,
            fetch_max_bytes=16 * 1024 * 1024,
        )
        consumer.subscribe(self._topics, listener=self._listener)
        producer = KafkaProducer(
            bootstrap_servers=self._kafka.bootstrap,
            client_id=f"{self._kafka.client_id}-deadletter",
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
        )
        dlq = deadletter_topic(self._kafka)
        logger.info("ingest consuming %s as group %s", ", ".join(self._topics), self._cfg.group_id)
        try:
            while not self._stop.is_set():
                if consumer.paused():
                    consumer.resume(*consumer.paused())
                polled = consumer.poll(timeout_ms=self._cfg.poll_timeout_ms)
                if not polled:
                    self._report_lag(consumer)
                    continue
                self._listener.revoked = False
                records = [
                    (r.topic, r.partition, r.offset, r.key, r.value)
                    for recs in polled.values()
                    for r in recs
                ]
                firsts = {tp: recs[0].offset for tp, recs in polled.items() if recs}
                outcome = self.process(records)
                if not (
                    self._flush_with_retry(consumer)
                    and self._send_dead_letters(producer, dlq, outcome.dead_letters, consumer)
                ):
                    self._abort_batch(consumer, firsts)
                    continue
                try:
                    consumer.commit()
                except CommitFailedError:
                    logger.warning("offset commit refused after a rebalance; batch will be reread")
                    self._abort_batch(consumer, firsts)
                    continue
                except KafkaError as exc:  # broker unreachable: the stored batch is reread later
                    logger.warning("offset commit failed (%s); batch will be reread", exc)
                    metrics.RETRIES.labels("commit").inc()
                    self._abort_batch(consumer, firsts)
                    self._idle(consumer, 1.0)
                    continue
                metrics.LAST_COMMIT.set_to_current_time()
                metrics.RECORDS.labels("committed").inc(outcome.records)
                self._report_lag(consumer)
        finally:
            consumer.close(autocommit=False)
            producer.close(timeout=10)
            logger.info("ingest stopped")

    def _abort_batch(self, consumer: KafkaConsumer, firsts: dict[TopicPartition, int]) -> None:
        """Forget the batch and rewind the partitions we still own to its first record."""
        self._sink.discard()
        if self._gaps is not None:
            self._gaps.discard()
        owned = consumer.assignment()
        for tp, offset in firsts.items():
            if tp in owned:
                consumer.seek(tp, offset)
        consumer.resume(*consumer.paused())

    @staticmethod
    def _idle(consumer: KafkaConsumer, seconds: float) -> None:
        """Wait while keeping group membership: poll with every partition paused.

        If a rebalance hands us new partitions during the wait, whatever the poll returns for
        them is rewound, so no record is ever skipped.
        """
        consumer.pause(*consumer.assignment())
        got = consumer.poll(timeout_ms=int(seconds * 1000))
        for tp, recs in got.items():
            if recs:
                consumer.seek(tp, recs[0].offset)

    def _flush_with_retry(self, consumer: KafkaConsumer) -> bool:
        delay, down_since = 0.2, None
        while True:
            try:
                if self._gaps is not None:
                    self._gaps.flush()  # idempotent: safe to repeat if the readings fail
                result = self._sink.flush()
            except RetryableError as exc:
                if down_since is None:
                    down_since = time.monotonic()
                    logger.warning("database write failed, retrying until it is back: %s", exc)
                metrics.RETRIES.labels("database").inc()
                wait = getattr(exc, "retry_after", None) or delay * (0.5 + random.random())  # noqa: S311
                self._idle(consumer, wait)
                delay = min(delay * 2, 10.0)
                if self._listener.revoked or self._stop.is_set():
                    return False
                continue
            if down_since is not None:
                logger.warning(
                    "database writes recovered after %.1f s", time.monotonic() - down_since
                )
                consumer.resume(*consumer.paused())
            metrics.FLUSH_SECONDS.observe(result.seconds)
            metrics.READINGS.labels("stored").inc(result.inserted)
            metrics.READINGS.labels("duplicate").inc(result.duplicates)
            return not self._listener.revoked

    def _send_dead_letters(
        self,
        producer: KafkaProducer,
        topic: str,
        letters: list[DeadLetter],
        consumer: KafkaConsumer,
    ) -> bool:
        delay = 0.5
        while letters:
            try:
                futures = [
                    producer.send(topic, key=d.key, value=d.value, headers=d.headers())
                    for d in letters
                ]
                producer.flush(timeout=30)
                for f in futures:
                    f.get(timeout=30)  # raises if this record was not acknowledged
            except KafkaError as exc:
                logger.warning("dead-letter produce failed, retrying: %s", exc)
                metrics.RETRIES.labels("deadletter").inc()
                self._idle(consumer, delay)
                delay = min(delay * 2, 10.0)
                if self._stop.is_set() or self._listener.revoked:
                    return False
                continue
            for d in letters:
                metrics.DEAD_LETTERS.labels(d.reason).inc()
                metrics.READINGS.labels("rejected").inc(len(d.rejected))
            break
        return not self._listener.revoked

    def _report_lag(self, consumer: KafkaConsumer) -> None:
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:
                continue
            pos = consumer.position(tp, timeout_ms=1000)
            if pos is not None:
                metrics.LAG.labels(tp.topic, str(tp.partition)).set(max(0, high - pos))
