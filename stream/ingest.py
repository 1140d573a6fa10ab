"""The ingest consumer: Kafka -> validate -> database, offsets committed after the database.

One iteration of the loop:

1. poll a batch of records (an envelope each);
2. decode and validate every record; good readings go to the sink, bad records and bad
   readings become dead letters (original bytes + reason), the rest of the batch goes on;
3. flush the sink: one database transaction (retried with backoff while the database is down
   or saturated, partitions paused so nothing more is fetched, nothing dropped), which also
   adds the batch's dead letters to the summary table (storage/deadletters.py, counted once
   even when the batch is read again: docs/adr/0012-dead-letters.md);
4. produce the dead letters and wait for the broker's acknowledgement;
5. commit the consumed offsets; log each (agent, reason) refused, at most once per
   :data:`REFUSALS_LOG_INTERVAL_S` (the numbers go to Prometheus and the summary table).

A crash anywhere before 5 redelivers the batch; the natural key makes that harmless. A
rebalance during a retry discards the pending batch: the partition's next owner rereads it.

The batch's transaction also stores, per source partition, the offset after its last record
(storage/offsets.py, migration 058). On every partition assignment the consumer compares
them with Kafka's committed offsets and seeks to the database's where Kafka is ahead or has
none: after a point-in-time restore or a failover that lost transactions, the readings Kafka
still holds are stored again (docs/adr/0016-offsets-in-the-database.md). Records the broker
no longer holds are reported per partition and per agent (storage/replay_losses.py, written
with the next batch).
"""

from __future__ import annotations

import gc
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from confluent_kafka import (
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from qilu.contract import Envelope, decode
from qilu.errors import DecodeError, Rejection, RetryableError
from qilu.packed import PACKED_MIN_BYTES, PackedEnvelope, decode_packed
from qilu.settings import IngestSettings, KafkaSettings
from storage.deadletter_tally import DeadLetterTally
from storage.offsets import OffsetMarks, TopicPartitionKey, replay_plan
from storage.registry_store import DeviceIndex
from storage.replay_losses import ReplayLosses
from storage.rows import Rows
from storage.writer import ReadingsSink
from stream import kafka_calls, metrics
from stream.agents import AgentAuth
from stream.deadletter import DeadLetter, OncePerInterval, key_agent
from stream.gaps import GapSink
from stream.topics import deadletter_topic, readings_topics
from stream.validate import Validator, validate_gaps
from stream.watchdog import Watchdog

logger = logging.getLogger(__name__)
INDEX_REFRESH_S = 30.0
Headers = list[tuple[str, bytes | None]]
# (topic, partition, offset, key, value) or, from the broker, also (headers, LogAppendTime in
# µs or None): the signature headers and append time of docs/adr/0010
Record = (
    tuple[str, int, int, bytes | None, bytes | None]
    | tuple[str, int, int, bytes | None, bytes | None, Headers | None, int | None]
)
# the index is reloaded at least this often, so registry changes (a decommissioning) take
# effect in ingest within this time even when no unknown device appears
INDEX_MAX_AGE_S = 300.0
# an (agent, reason) that keeps being refused is logged at most this often
REFUSALS_LOG_INTERVAL_S = 300.0
# the broker is asked for the ends of partitions whose high watermark the client has not
# learnt (BrokerEnds) at most this often, and at most every half stall timeout
END_OFFSETS_PERIOD_S = 5.0
# the cyclic garbage collector's first threshold in an ingest process (CPython's default:
# 700). Decoding a poll allocates a few containers per envelope, each holding ~370
# readings: with 700 the young generation was collected ~every 100 envelopes, each
# collection walking the batch's decoded columns (43 collections per 2 M readings, 0.06 us
# per reading of the loop's CPU, measured in one consumer draining the province stream).
# Nothing in the loop makes reference cycles, so a collection finds no garbage; at 50,000
# none ran in the same run.
GC_GEN0_THRESHOLD = 50_000
# an empty poll this soon after the Kafka client reported an error (a broker unreachable,
# all of them down) is a handled outage, not a stall: librdkafka reports a failed
# connection at each reconnection attempt (at most 10 s apart), not at each poll
CLIENT_ERROR_FRESH_S = 60.0
# how long the dead letters of a batch may wait for the broker's acknowledgement
DEAD_LETTER_WAIT_S = 30.0
# the client's errors that tell a broker (or all) cannot be reached
_UNREACHABLE = frozenset(
    {
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TRANSPORT,
        KafkaError._RESOLVE,
        KafkaError._TIMED_OUT,
    }
)
# an offset commit refused because the group rebalanced meanwhile: the batch is reread by
# whoever owns its partitions now
_REBALANCED = frozenset(
    {
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError._ASSIGNMENT_LOST,
    }
)


def tune_gc() -> None:
    """Garbage collector settings of an ingest process, once start-up is done (the device
    index, the agent directory and the libraries loaded): what exists now is moved to the
    permanent generation (``gc.freeze``: the collections no longer walk the index's ~270,000
    entries) and the young generation is collected after :data:`GC_GEN0_THRESHOLD`
    allocations instead of 700. Process-wide: called by ``qilu ingest``, not by the consumer
    class (tests and benchmarks that run a consumer in their own process keep theirs)."""
    gc.collect()  # start-up garbage is freed, not frozen
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def client_timeouts(cfg: IngestSettings) -> dict[str, Any]:
    """librdkafka properties of the ingest's clients (consumer, dead-letter producer) for a
    broker that goes silent (its host cut off: connections stall, nothing is refused).

    - ``socket.timeout.ms`` = ``ingest.request_timeout_ms``: a request without an answer
      fails after it and its connection is closed (librdkafka closes a connection on a
      request timeout), so the next request goes to another broker;
    - ``socket.connection.setup.timeout.ms`` = ``ingest.connect_timeout_ms`` (at most the
      request timeout): a connection attempt (TCP and the Kafka handshake) nobody answers;
    - ``topic.metadata.refresh.interval.ms`` 1000: a partition's new leader, after its old
      one went silent, is learnt from a periodic metadata refresh (docs/faults.md).

    kafka-python's TCP_USER_TIMEOUT (the removed ``ingest.broker_silence_ms``) has no equivalent:
    the binding exposes no socket option hook (docs/adr/0020-ingest-kafka-client.md); a
    silent broker's connection is closed by the request timeout instead."""
    return {
        "socket.timeout.ms": cfg.request_timeout_ms,
        "socket.connection.setup.timeout.ms": min(cfg.connect_timeout_ms, cfg.request_timeout_ms),
        "topic.metadata.refresh.interval.ms": 1000,
        "socket.nagle.disable": True,
    }


@dataclass(slots=True)
class BatchOutcome:
    records: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    # (agent, reason) -> records (whole-envelope reasons) or readings refused; for the log
    refused: dict[tuple[str, str], int] = field(default_factory=dict)
    examples: dict[tuple[str, str], str] = field(default_factory=dict)  # -> a detail

    def refuse(self, letter: DeadLetter, agent: str) -> None:
        self.dead_letters.append(letter)
        if letter.reason == "rejected_readings":
            for r in letter.rejected:
                self._count((agent, r.reason), 1, r.detail)
        else:
            self._count((agent, letter.reason), 1, letter.detail)

    def _count(self, key: tuple[str, str], n: int, detail: str) -> None:
        self.refused[key] = self.refused.get(key, 0) + n
        self.examples.setdefault(key, detail)


@dataclass(slots=True)
class _Authentic:
    """A record whose envelope decoded and passed authentication, awaiting validation."""

    env: Envelope | PackedEnvelope  # packed: read into arrays (qilu/packed.py)
    sites: frozenset[str] | None
    key: bytes | None
    value: bytes
    source: str  # topic/partition/offset
    where: tuple[str, int, int]
    gap_letter: DeadLetter | None  # its gap records refused, if any
    slow: bool = False  # a reading refused or a key repeated: validated one by one


def _fatal(err: object) -> bool:
    """A client error after which the consumer cannot go on (e.g. another process took its
    ``group.instance.id``): librdkafka hands it to ``consume`` as a message whose error is
    ``_FATAL``, without the fatal flag (that is on the error it stands for)."""
    return isinstance(err, KafkaError) and (err.fatal() or err.code() == KafkaError._FATAL)


def _group(messages: list[Message]) -> dict[TopicPartitionKey, list[Message]]:
    """What ``consume`` returned, per partition in the order fetched. A message that carries
    an error instead of a record (a partition the broker does not serve any more, a fetch
    error) is logged and left out: it holds no record to process or commit."""
    polled: dict[TopicPartitionKey, list[Message]] = {}
    for m in messages:
        err = m.error()
        if err is not None:
            if _fatal(err):
                raise KafkaException(err)
            logger.warning("the consumer reported %s", err)
            continue
        key = (m.topic() or "", m.partition() or 0)
        got = polled.get(key)
        if got is None:
            polled[key] = [m]
        else:
            got.append(m)
    return polled


def _records(polled: dict[TopicPartitionKey, list[Message]]) -> tuple[list[Record], list[float]]:
    """What the consumer polled as :data:`Record` tuples, and the broker's append time
    (LogAppendTime, in seconds) of those that have one."""
    records: list[Record] = []
    appended_s: list[float] = []
    for (topic, partition), msgs in polled.items():
        for m in msgs:
            kind, ts = m.timestamp()
            appended = ts * 1000 if kind == TIMESTAMP_LOG_APPEND_TIME else None
            headers = cast("Headers | None", m.headers())  # bytes values, as produced
            records.append(
                (topic, partition, m.offset() or 0, m.key(), m.value(), headers, appended)
            )
            if appended is not None:
                appended_s.append(ts / 1000)
    return records, appended_s


def _observe_age(stage: str, appended_s: list[float]) -> None:
    """The age of each record of the batch at ``stage`` (from the broker's append time;
    records of topics without LogAppendTime are not counted)."""
    if appended_s:
        observe = metrics.RECORD_AGE.labels(stage).observe
        now = time.time()
        for t in appended_s:
            observe(now - t)


class _ClientLog:
    """librdkafka's log lines, at DEBUG below CRITICAL: what an outage looks like reaches the
    loop through the error callback and is logged there once per outage; librdkafka logs
    each failed connection attempt (as ERROR), hundreds in a broker's restart."""

    def __init__(self, name: str) -> None:
        self._logger = logging.getLogger(name)

    def log(self, level: int, msg: str, *args: object) -> None:
        self._logger.log(level if level >= logging.CRITICAL else logging.DEBUG, msg, *args)


def _produce_acknowledged(producer: Producer, topic: str, letters: list[DeadLetter]) -> None:
    """Produce the dead letters and wait for the broker's acknowledgement of each; raises
    ``KafkaException`` when one was refused or not acknowledged within
    :data:`DEAD_LETTER_WAIT_S`."""
    failed: list[KafkaError] = []
    acked = 0

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        nonlocal acked
        if err is None:
            acked += 1
        else:
            failed.append(err)

    for d in letters:
        headers: list[tuple[str, str | bytes | None]] = list(d.headers())
        producer.produce(topic, value=d.value, key=d.key, headers=headers, on_delivery=delivered)
    left = producer.flush(DEAD_LETTER_WAIT_S)
    if failed:
        raise KafkaException(failed[0])
    if left or acked < len(letters):
        wait_ms = int(DEAD_LETTER_WAIT_S * 1000)
        raise kafka_calls.timed_out("the dead letters' acknowledgement", wait_ms)


@dataclass(slots=True)
class _Reload:
    """A reload of the device index running on its own thread (:meth:`IngestConsumer.
    _periodic_reload`)."""

    started: float  # monotonic
    site_sets: list[frozenset[str]]  # the agents' site sets the current validator has seen
    validator: Validator | None = None  # set when built; None after a failure
    done: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True, slots=True)
class _Refused:
    """A record refused whole (undecodable, not authentic)."""

    letter: DeadLetter
    agent: str
    where: tuple[str, int, int]
    readings: int  # what the envelope held, for the summary (0: not decoded)


class _Revocations:
    """Notes revocations and the partitions assigned since the loop last compared their
    offsets with the database's. librdkafka calls the rebalance callbacks inside
    ``consume`` on the poll loop's thread; the comparison itself runs in the loop
    (:meth:`IngestConsumer._resume_from_database`) so a failed one (the database or the
    broker away) is retried there, with the records of those partitions held back."""

    def __init__(self) -> None:
        self.revoked = False
        self._unchecked: set[TopicPartitionKey] = set()

    def on_partitions_revoked(self, revoked: object) -> None:
        self.revoked = True

    def pending(self) -> bool:
        return bool(self._unchecked)

    def take(self) -> set[TopicPartitionKey]:
        """The partitions to compare, no longer noted."""
        taken, self._unchecked = self._unchecked, set()
        return taken

    def put_back(self, partitions: set[TopicPartitionKey]) -> None:
        """Compare these again on the next round (the comparison failed)."""
        self._unchecked |= partitions


class BrokerEnds:
    """The ends of the partitions whose high watermark the client has not learnt, asked of
    the broker at most once per ``period_s`` (a failed question too) and again at once for a
    partition not asked about before (a rebalance). An end asked earlier may be behind the
    partition's: records that arrive are fetched, and the fetch tells the high watermark; a
    consumer that holds partitions but does not fetch is seen at the next question."""

    def __init__(self, period_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._period_s, self._clock = period_s, clock
        self._ends: dict[TopicPartitionKey, int] = {}
        self._asked: set[TopicPartitionKey] = set()  # in the last question, answered or not
        self._asked_at: float | None = None

    def ends(
        self, consumer: Consumer, unknown: set[TopicPartitionKey], timeout_ms: int
    ) -> dict[TopicPartitionKey, int]:
        """The ends of ``unknown``; raises ``KafkaException`` (e.g. ``_TIMED_OUT`` after
        ``timeout_ms``) when the broker was asked and did not answer."""
        if not unknown:
            return {}
        now = self._clock()
        due = self._asked_at is None or now - self._asked_at >= self._period_s
        if due or not unknown <= self._asked:
            self._asked_at, self._asked, self._ends = now, set(unknown), {}
            self._ends = kafka_calls.end_offsets(consumer, unknown, timeout_ms)
        return {tp: self._ends[tp] for tp in unknown if tp in self._ends}


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
        agents: AgentAuth | None = None,
        deadletters: DeadLetterTally | None = None,
        max_age_s: float | None = None,
        offsets: OffsetMarks | None = None,
        load_offsets: Callable[[list[str]], dict[TopicPartitionKey, int]] | None = None,
        losses: ReplayLosses | None = None,
    ) -> None:
        self._kafka, self._cfg, self._sink = kafka, ingest, sink
        self._max_age_s = max_age_s  # the raw retention: older readings are refused (too_old)
        self._agents = agents  # None: envelopes are not authenticated (ingest.authenticate)
        self._gaps = gaps  # agents' gap records (stream/gaps.py), flushed with the readings
        # the summary of refusals, written by the sink in the batch's transaction (None: not
        # kept; the sink must have been given the same tally: stream/cli.py build_consumer)
        self._tally = deadletters
        self._refusals_log = OncePerInterval(REFUSALS_LOG_INTERVAL_S)
        self._load_index = load_index
        self._stop = stop or threading.Event()
        self._topics = topics or readings_topics(kafka)
        self._validator = self._new_validator()
        self._index_loaded = time.monotonic()
        self._reload: _Reload | None = None  # a periodic reload under way
        # the offsets stored with the rows (the sink must have been given the same marks)
        self._offsets = offsets
        self._load_offsets = load_offsets
        # records lost past Kafka's retention, per partition and agent (the sink must have
        # been given the same part: storage/replay_losses.py)
        self._losses = losses
        self._listener = _Revocations()
        # the client's state as the loop knows it: the partitions assigned (librdkafka calls
        # the rebalance callbacks inside consume, on this thread), the next offset of each
        # as far as the loop has read or sought (librdkafka tells a position only once a
        # record has been consumed since the assignment or a seek), and whether the loop
        # paused them
        self._owned: set[TopicPartitionKey] = set()
        self._positions: dict[TopicPartitionKey, int] = {}
        # offsets sought to from the database's (replay_plan) not committed to Kafka yet:
        # committed with the next batch even when it holds nothing of those partitions
        self._sought: dict[TopicPartitionKey, int] = {}
        self._paused = False
        self._broker_down_since: float | None = None  # poll failing since (monotonic)
        self._client_error: KafkaError | None = None  # the client's last reported error
        self._client_error_at: float | None = None  # when (monotonic)
        # beaten on records polled, an empty poll with every partition read to its end, and
        # the waits of handled outages (docs/operations.md section 7)
        self.watchdog = Watchdog(
            "the ingest's poll loop",
            ingest.stall_timeout_s,
            on_beat=metrics.LOOP_PROGRESS.set_to_current_time,
        )
        # well inside the stall timeout: an end asked earlier cannot hide a stall for long
        self._broker_ends = BrokerEnds(
            min(END_OFFSETS_PERIOD_S, ingest.stall_timeout_s / 2 or END_OFFSETS_PERIOD_S)
        )

    def _new_validator(self) -> Validator:
        idx = self._load_index()
        return Validator(
            idx.devices,
            idx.metrics,
            max_future_skew_s=self._cfg.max_future_skew_s,
            max_age_s=self._max_age_s,
            retired_us=idx.retired_us,
            site_of=idx.sites,
        )

    def stop(self) -> None:
        self._stop.set()

    def _periodic_reload(self) -> None:
        """Reload the device index every :data:`INDEX_MAX_AGE_S`, on a thread of its own:
        loading a province's ~270,000 devices and building the validator held the poll loop
        for about a second (0.6 s of CPU for the build alone), every record behind it waiting
        (a latency spike per consumer every 5 minutes). The loop takes the new validator at
        its first batch after it is ready, unless a reload of its own after an unknown device
        (:meth:`_revalidate_after_refresh`) is newer; until then it validates with the one it
        has, and when the reload fails (the database away) it logs that, keeps it, and tries
        again :data:`INDEX_REFRESH_S` later."""
        reload = self._reload
        if reload is not None:
            if not reload.done.is_set():
                return
            self._reload = None
            if reload.validator is None:  # failed: again INDEX_REFRESH_S from now
                self._index_loaded = time.monotonic() - INDEX_MAX_AGE_S + INDEX_REFRESH_S
            elif reload.started > self._index_loaded:
                self._validator, self._index_loaded = reload.validator, reload.started
            return
        if time.monotonic() - self._index_loaded > INDEX_MAX_AGE_S:
            self._reload = reload = _Reload(time.monotonic(), self._validator.site_sets())
            threading.Thread(
                target=self._reload_index, args=(reload,), name="ingest-index", daemon=True
            ).start()

    def _reload_index(self, reload: _Reload) -> None:
        """The background part of :meth:`_periodic_reload`: a new validator, its lookups of
        the agents' site sets seen so far built too."""
        try:
            validator = self._new_validator()
            validator.warm(reload.site_sets)
            reload.validator = validator
        # whatever failed (the database away, a query error), the loop goes on with the
        # index it has and tries again; this thread must not end without saying so
        except Exception as exc:  # noqa: BLE001
            logger.warning("the device index was not reloaded, the previous one stays: %s", exc)
        finally:
            reload.done.set()

    # -- the pure part: records in, rows and dead letters out ---------------------------------
    def process(self, records: list[Record]) -> BatchOutcome:
        """Authenticate, decode and validate records (:data:`Record`) into the sink.

        Two passes: each record is decoded and authenticated (a refusal of the whole record
        is noted in its place); then the readings of all authentic envelopes are validated
        at once (:meth:`Validator.validate_batch`), and the envelopes with a refused reading
        one by one, which gives the reasons. Dead letters come out in the records' order."""
        out = BatchOutcome(records=len(records))
        now_us = time.time_ns() // 1000
        self._periodic_reload()  # decommissionings, moves
        steps = [self._open(rec, now_us) for rec in records]
        authentic = [s for s in steps if isinstance(s, _Authentic)]
        rows, slow = self._validator.validate_batch(
            [a.env for a in authentic], now_us, [a.sites for a in authentic]
        )
        self._sink.add(rows)
        for i in slow:
            authentic[i].slow = True
        for step in steps:
            if isinstance(step, _Refused):
                self._refuse(
                    out, step.letter, step.agent, step.where, now_us, readings=step.readings
                )
                continue
            if step.gap_letter is not None:
                self._refuse(out, step.gap_letter, step.env.agent_id, step.where, now_us)
            if not step.slow:
                continue
            env = step.env if isinstance(step.env, Envelope) else step.env.envelope()
            exact, rejected = self._validate(env, now_us, step.sites)
            self._sink.add(exact)
            out.rejected += len(rejected)
            if rejected:
                reasons = sorted({r.reason for r in rejected})
                detail = f"{len(rejected)} of {len(env)} readings rejected: {', '.join(reasons)}"
                letter = DeadLetter(
                    step.key, step.value, "rejected_readings", detail, step.source, tuple(rejected)
                )
                self._refuse(out, letter, env.agent_id, step.where, now_us, devices=env.devices)
        return out

    def _open(self, rec: Record, now_us: int) -> _Refused | _Authentic:
        """Decode and authenticate one record: its envelope, or the refusal of the whole
        record."""
        topic, partition, offset, key, value = rec[0], rec[1], rec[2], rec[3], rec[4]
        source = f"{topic}/{partition}/{offset}"
        where = (topic, partition, offset)
        if value is None:  # a tombstone (null value): nothing to decode
            letter = DeadLetter(key, b"", "malformed", "record has no value", source)
            return _Refused(letter, key_agent(key), where, 0)
        try:
            # the usual envelope read straight into arrays, any other (and a small one, which
            # costs less the general way) decoded the general way
            packed = decode_packed(value) if len(value) >= PACKED_MIN_BYTES else None
            env: Envelope | PackedEnvelope = packed or decode(value)
        except DecodeError as exc:
            self._observe_after_loss(rec, None)
            letter = DeadLetter(key, value, exc.reason, exc.detail, source)
            return _Refused(letter, key_agent(key), where, 0)
        self._observe_after_loss(rec, env)
        sites = None
        if self._agents is not None:
            verdict = self._agents.check(
                env.agent_id,
                rec[5] if len(rec) == 7 else None,  # the Record variants
                value,
                rec[6] if len(rec) == 7 else None,
            )
            if verdict.reason is not None:
                letter = DeadLetter(key, value, verdict.reason, verdict.detail, source)
                return _Refused(letter, env.agent_id, where, len(env))
            sites = verdict.sites
        gap_letter = None
        if isinstance(env, Envelope) and env.gaps and self._gaps is not None:
            env.gaps, bad_gaps = validate_gaps(env, now_us, self._cfg.max_future_skew_s)
            self._gaps.add(env)
            if bad_gaps:
                why = ", ".join(sorted({r.reason for r in bad_gaps}))
                detail = f"{len(bad_gaps)} gap record(s) rejected: {why}"
                gap_letter = DeadLetter(
                    key, value, "rejected_gaps", detail, source, tuple(bad_gaps)
                )
        return _Authentic(env, sites, key, value, source, where, gap_letter)

    def _note_offsets(
        self, polled: dict[TopicPartitionKey, list[Message]]
    ) -> tuple[dict[TopicPartitionKey, int], dict[TopicPartitionKey, int]]:
        """The batch's first offset and next offset per partition; the next ones noted for
        the database and as the loop's positions."""
        firsts: dict[TopicPartitionKey, int] = {}
        nexts: dict[TopicPartitionKey, int] = {}
        for tp, msgs in polled.items():
            firsts[tp] = msgs[0].offset() or 0
            nexts[tp] = (msgs[-1].offset() or 0) + 1
        if self._offsets is not None:
            for (topic, partition), offset in nexts.items():
                self._offsets.note(topic, partition, offset)
        self._positions.update(nexts)
        return firsts, nexts

    def _idle_round(self, consumer: Consumer) -> None:
        """Nothing polled: a loss report whose window ended (the partition's end reached)
        is written on its own, then the lag is reported."""
        self._close_loss_windows(consumer)
        if self._losses is not None and self._losses.pending:
            self._flush_with_retry(consumer)  # nothing but the report (a sink part)
        try:  # coalesced liveness whose period is over (storage/writer.py)
            self._sink.flush_liveness()
        except RetryableError as exc:  # stays pending: the next round or batch writes it
            logger.debug("pending liveness not written yet: %s", exc)
        if self._report_lag(consumer):
            # an empty poll is progress only when there is nothing to read: a consumer that
            # holds partitions but never fetches polls empty forever (the stall seen twice:
            # partitions assigned, empty polls, nothing stored, the broker dropping the member)
            self.watchdog.beat()

    def _observe_after_loss(self, rec: Record, env: Envelope | PackedEnvelope | None) -> None:
        """A record of a partition whose replay started past a loss: who sent it (the
        window that tells which agents lost records, storage/replay_losses.py)."""
        if self._losses is None:
            return
        window = self._losses.window(rec[0], rec[1])
        if window is None:
            return
        appended = rec[6] if len(rec) == 7 else None
        if env is None:
            window.observe(rec[2], None, 0, None, (), appended)
            return
        if isinstance(env, PackedEnvelope):
            env = env.envelope()
        window.observe(
            rec[2],
            env.agent_id,
            len(env),
            min(env.ts_us) if env.ts_us else None,
            tuple(sorted(set(env.devices))),
            appended,
        )

    def _close_loss_windows(self, consumer: Consumer) -> None:
        """Windows after a loss end when as many records as were lost have been read, or
        the partition's end is reached; a revoked partition's is dropped."""
        if self._losses is None:
            return
        owned = self._owned
        for tp in [tp for tp in owned if self._losses.window(*tp)]:
            window = self._losses.window(*tp)
            high = kafka_calls.cached_end(consumer, tp)
            if window is not None and (
                window.full or (high is not None and window.next_offset >= high)
            ):
                self._losses.close(*tp)
        for topic, partition in self._losses.windows():
            if (topic, partition) not in owned:
                self._losses.forget(topic, partition)

    def _refuse(
        self,
        out: BatchOutcome,
        letter: DeadLetter,
        agent: str,
        where: tuple[str, int, int],
        now_us: int,
        *,
        readings: int = 0,
        devices: list[str] | None = None,
    ) -> None:
        """A dead letter of the batch, and its share of the summary (``devices``: the
        envelope's device column, for readings refused one by one)."""
        out.refuse(letter, agent)
        if self._tally is None:
            return
        if devices is not None:
            self._tally.add_readings(where, now_us, agent, devices, letter.rejected)
        else:
            self._tally.add_envelope(where, now_us, agent, letter.reason, letter.detail, readings)

    def _validate(
        self, env: Envelope, now_us: int, sites: frozenset[str] | None
    ) -> tuple[Rows, list[Rejection]]:
        """Validate against the device index and the agent's sites, once more after a refresh
        when a rejection may come from a stale view (a device or a site added since)."""
        rows, rejected = self._validator.validate(env, now_us, sites)
        if rejected and any(r.reason == "unknown_device" for r in rejected):
            rows, rejected = self._revalidate_after_refresh(env, now_us, rows, rejected, sites)
        if (
            sites is not None
            and self._agents is not None
            and any(r.reason == "foreign_site" for r in rejected)
        ):
            # the agent may have been given these sites since the registry check
            fresh = self._agents.sites_after_refresh(env.agent_id, sites)
            if fresh is not None:
                rows, rejected = self._validator.validate(env, now_us, fresh)
        return rows, rejected

    def _revalidate_after_refresh(
        self,
        env: Envelope,
        now_us: int,
        rows: Rows,
        rejected: list[Rejection],
        sites: frozenset[str] | None = None,
    ) -> tuple[Rows, list[Rejection]]:
        """A device unknown to us may have been registered since we loaded the index."""
        if time.monotonic() - self._index_loaded < INDEX_REFRESH_S:
            return rows, rejected
        self._validator = self._new_validator()
        self._index_loaded = time.monotonic()
        logger.info("device index reloaded after an unknown device appeared")
        return self._validator.validate(env, now_us, sites)

    # -- the I/O loop ---------------------------------------------------------------------------
    def _await_topics(self, consumer: Consumer) -> None:
        """Join the group only once the broker serves every topic's partitions.

        A group formed while brand-new topics had no partition metadata yet was seen to hold
        no partitions for minutes (``qilu run`` on a fresh broker stored nothing); asking for
        each topic's partitions first fetches the metadata and waits out the leader elections.
        """
        waiting = list(self._topics)
        logged = warned = False
        since = time.monotonic()
        while waiting and not self._stop.is_set():
            waiting = [t for t in waiting if not self._served(consumer, t)]
            if not waiting:
                break
            if not logged:
                logger.info("waiting for the broker to serve %s", ", ".join(waiting))
                logged = True
            elif not warned and time.monotonic() - since > 30:
                logger.warning(
                    "the broker still serves no partitions of %s after 30 s: "
                    "do the topics exist? (`qilu topics` creates them)",
                    ", ".join(waiting),
                )
                warned = True
            self.watchdog.beat()
            self._stop.wait(0.5)
        if logged and not waiting:
            logger.info("all topics served; joining group %s", self._cfg.group_id)

    def _served(self, consumer: Consumer, topic: str) -> bool:
        try:
            return bool(
                kafka_calls.partitions_for_topic(consumer, topic, self._cfg.request_timeout_ms)
            )
        except KafkaException as exc:  # a metadata request without an answer: asked again
            logger.info("the partitions of %s are not known yet: %s", topic, exc)
            return False

    def _client_config(self, role: str) -> dict[str, Any]:
        """What the consumer and the dead-letter producer share: the broker, the bounds for a
        silent one (:func:`client_timeouts`), errors and librdkafka's log reported here."""
        return {
            "bootstrap.servers": self._kafka.bootstrap,
            "client.id": f"{self._kafka.client_id}-{role}",
            **client_timeouts(self._cfg),
            "error_cb": self._on_client_error,
            # a connection the broker closes after it was idle is no error: not reported
            "log.connection.close": False,
            "logger": _ClientLog(f"{__name__}.{role}"),
        }

    def _on_client_error(self, err: KafkaError) -> None:
        """An error the client reports outside a call (a broker unreachable, all of them
        down, a connection closed on a request timeout): served inside ``consume`` and
        ``flush`` on this thread. A fatal one ends the loop at the next call (it raises)."""
        if err.fatal():
            logger.error("the Kafka client failed for good: %s", err)
            return
        logger.debug("the Kafka client reports %s", err)
        if err.code() not in _UNREACHABLE:
            return
        self._client_error, self._client_error_at = err, time.monotonic()
        metrics.RETRIES.labels("poll").inc()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """librdkafka's assignment (eager protocol: the whole of it), inside ``consume`` on
        the loop's thread: each partition starts where :meth:`_starts` says (the comparison
        with the database's offsets, ADR 0016), given to ``assign`` so nothing is fetched
        from anywhere else. When the comparison fails (the database or the broker away) the
        partitions are assigned at Kafka's committed offsets and the loop compares again
        before it processes anything of them (:meth:`_resume_from_database`)."""
        keys = {(tp.topic, tp.partition) for tp in partitions}
        # one line per rebalance: an ingest that holds no partitions is visible in its log
        logger.info("partitions assigned: %d", len(keys))
        self._owned = keys
        for tp in keys:
            self._positions.pop(tp, None)
            self._sought.pop(tp, None)
        if not keys:
            consumer.assign(partitions)
            return
        try:
            starts = self._starts(consumer, keys)
        except (KafkaException, OSError, RetryableError) as exc:
            logger.warning("could not compare the database's offsets with Kafka's: %s", exc)
            self._listener.put_back(keys)
            consumer.assign(partitions)
        else:
            consumer.assign([TopicPartition(t, p, o) for (t, p), o in starts.items()])
            self._positions.update(starts)
        # librdkafka keeps a partition's pause across its revocation and a new assignment: a
        # partition paused by a wait (_idle) when the group took it away came back paused
        # and was never fetched again (test_faults_broker: a member that lost its session
        # during the wait after a failed commit)
        consumer.resume(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """A revocation (or a loss of the partitions: the member was dropped from the
        group), inside ``consume``: the pending batch is discarded by the loop (the flag)."""
        self._listener.on_partitions_revoked(partitions)
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self._owned.discard(key)
            self._positions.pop(key, None)
            self._sought.pop(key, None)
        consumer.unassign()

    def _new_consumer(self) -> Consumer:
        config: dict[str, Any] = {
            **self._client_config("ingest"),
            "group.id": self._cfg.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": 16 * 1024 * 1024,
        }
        if self._cfg.group_instance_id:
            config["group.instance.id"] = self._cfg.group_instance_id
        # a group that formed before the broker served its topics' metadata holds no
        # partitions until a metadata refresh notices them (seen in
        # tests/integration/test_faults_corpus.py), and a partition's new leader, after its
        # old one went silent, is learnt only from metadata: refreshed every second
        # (client_timeouts, docs/faults.md)
        return Consumer(config)

    def _new_producer(self) -> Producer:
        return Producer(
            {
                # the dead letters' flush runs on the poll loop's thread: the same bounds
                **self._client_config("deadletter"),
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 5,
                "request.timeout.ms": self._cfg.request_timeout_ms,
                "message.timeout.ms": int(DEAD_LETTER_WAIT_S * 1000),
                # a dead letter carries the refused record whole: one the broker took (its
                # default limit, 1 MiB a request; librdkafka's own default: 1,000,000 bytes)
                "message.max.bytes": 1_048_576,
            }
        )

    def run(self) -> None:
        consumer = self._new_consumer()
        self.watchdog.start()
        self._await_topics(consumer)
        consumer.subscribe(
            self._topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        producer = self._new_producer()
        dlq = deadletter_topic(self._kafka)
        logger.info("ingest consuming %s as group %s", ", ".join(self._topics), self._cfg.group_id)
        try:
            while not self._stop.is_set():
                producer.poll(0)  # its queued reports: errors, log lines
                self._resume_all(consumer)
                polled = self._resume_from_database(
                    consumer, self._poll(consumer, self._cfg.poll_timeout_ms)
                )
                if not polled:
                    self._idle_round(consumer)
                    continue
                self._listener.revoked = False
                records, appended_s = _records(polled)
                _observe_age("polled", appended_s)
                firsts, nexts = self._note_offsets(polled)
                outcome = self.process(records)
                self._close_loss_windows(consumer)
                if not (
                    self._flush_with_retry(consumer)
                    and self._send_dead_letters(producer, dlq, outcome.dead_letters, consumer)
                ):
                    self._abort_batch(consumer, firsts)
                    continue
                _observe_age("stored", appended_s)
                if self._cfg.failpoint_after_db_commit_s:
                    self._failpoint_after_db_commit()
                try:
                    self._commit(consumer, nexts)
                except KafkaException as exc:
                    err = exc.args[0] if exc.args else None
                    if isinstance(err, KafkaError) and err.code() in _REBALANCED:
                        logger.warning(
                            "offset commit refused after a rebalance; batch will be reread"
                        )
                        self._abort_batch(consumer, firsts)
                        continue
                    # broker unreachable: the stored batch is reread later
                    logger.warning("offset commit failed (%s); batch will be reread", exc)
                    metrics.RETRIES.labels("commit").inc()
                    self._abort_batch(consumer, firsts)
                    self._idle(consumer, 1.0)
                    continue
                metrics.LAST_COMMIT.set_to_current_time()
                _observe_age("committed", appended_s)
                metrics.RECORDS.labels("committed").inc(outcome.records)
                if outcome.refused:
                    self._log_refusals(outcome)
                self._report_lag(consumer)
        finally:
            self._close(consumer, producer)

    def _commit(self, consumer: Consumer, nexts: dict[TopicPartitionKey, int]) -> None:
        """Commit the batch's next offsets, and those sought to from the database's for
        partitions the batch holds nothing of (Kafka's committed offset then agrees with the
        database's, as the comparison at the next assignment expects)."""
        offsets = {**self._sought, **nexts} if self._sought else nexts
        kafka_calls.commit(consumer, offsets, self._cfg.request_timeout_ms + 1000)
        self._sought.clear()

    def _close(self, consumer: Consumer, producer: Producer) -> None:
        self.watchdog.stop()  # a process that goes on (a test) must not be ended by it
        try:  # the coalesced liveness of the stored batches (storage/writer.py)
            self._sink.flush_liveness(force=True)
        except RetryableError as exc:  # last_seen stays older, by at most its period
            logger.warning("the pending liveness was not written at stop: %s", exc)
        consumer.close()  # nothing committed here (enable.auto.commit off)
        producer.flush(10)
        logger.info("ingest stopped")

    def _seek(self, consumer: Consumer, tp: TopicPartitionKey, offset: int) -> None:
        consumer.seek(TopicPartition(tp[0], tp[1], offset))
        self._positions[tp] = offset

    def _pause_all(self, consumer: Consumer) -> None:
        if self._owned:
            consumer.pause([TopicPartition(t, p) for t, p in self._owned])
        self._paused = True

    def _resume_all(self, consumer: Consumer) -> None:
        if self._paused:
            if self._owned:
                consumer.resume([TopicPartition(t, p) for t, p in self._owned])
            self._paused = False

    def _starts(
        self, consumer: Consumer, assigned: set[TopicPartitionKey]
    ) -> dict[TopicPartitionKey, int]:
        """Where each newly assigned partition starts: the database's offset where Kafka's
        committed one is ahead or missing (storage/offsets.py :func:`replay_plan`), else
        Kafka's committed one, else (a group without one) the oldest the broker holds.
        Records the broker no longer holds (past its retention) cannot be read again: logged
        as an error with their count, counted in ``qilu_ingest_replay_lost_records``, and
        stored per partition and per agent (storage/replay_losses.py). Raises
        ``KafkaException``, ``OSError`` or ``RetryableError`` when the database or the broker
        does not answer."""
        load = self._load_offsets
        stored = load(sorted({tp[0] for tp in assigned})) if load is not None else {}
        bound = self._cfg.request_timeout_ms
        committed = kafka_calls.committed(consumer, assigned, bound)
        known = [tp for tp in assigned if tp in stored]
        asked = {*known, *(tp for tp in assigned if committed[tp] is None)}
        begins = kafka_calls.beginning_offsets(consumer, asked, bound)
        plan = replay_plan(
            stored, {tp: committed[tp] for tp in known}, {tp: begins[tp] for tp in known}
        )
        for loss in plan.losses:
            if self._losses is not None and not self._losses.lost(loss):
                continue  # seen at an earlier assignment of this process
            metrics.REPLAY_LOST.labels(loss.topic, str(loss.partition)).inc(loss.records)
            logger.error(
                "%s/%d: the database holds records up to offset %d but the broker keeps "
                "only from %d on: %d record(s) are past Kafka's retention and lost with "
                "the database (restore a later backup, or accept the gap; reported in "
                "replay_losses and, per agent, in agent_gaps)",
                loss.topic,
                loss.partition,
                loss.first_offset,
                loss.end_offset,
                loss.records,
            )
        starts: dict[TopicPartitionKey, int] = {}
        for tp in assigned:
            start = committed[tp]
            starts[tp] = begins[tp] if start is None else start
        for (topic, partition), target in plan.seeks.items():
            logger.warning(
                "%s/%d: Kafka's committed offset is %s, the database's %d: reading from %d "
                "(a restored database, a failover, or a group without committed offsets)",
                topic,
                partition,
                committed[topic, partition],
                stored[topic, partition],
                target,
            )
            starts[topic, partition] = target
            self._sought[topic, partition] = target  # committed with the next batch
        return starts

    def _resume_from_database(
        self, consumer: Consumer, polled: dict[TopicPartitionKey, list[Message]]
    ) -> dict[TopicPartitionKey, list[Message]]:
        """The comparison of :meth:`_starts` for partitions whose assignment could not make
        it (the database or the broker away at the time): until it succeeds nothing of those
        partitions is processed (what the poll returned for them is dropped and the partition
        rewound); then each is sought to where it starts."""
        if not self._listener.pending():
            return polled
        assigned = self._listener.take() & self._owned
        if not assigned:
            return polled
        try:
            starts = self._starts(consumer, assigned)
        except (KafkaException, OSError, RetryableError) as exc:
            logger.warning("could not compare the database's offsets with Kafka's: %s", exc)
            self._listener.put_back(assigned)  # again on the next round
            for tp in assigned:
                msgs = polled.pop(tp, None)
                if msgs:
                    self._seek(consumer, tp, msgs[0].offset() or 0)
            self._stop.wait(1.0)
            return polled
        for tp, start in starts.items():
            polled.pop(tp, None)
            self._seek(consumer, tp, start)
        return polled

    def _log_refusals(self, outcome: BatchOutcome) -> None:
        """One line per (agent, reason) when it first appears and then at most once per
        interval, with how many were refused since the last line: never one per record."""
        for agent, reason, n in self._refusals_log.due(outcome.refused, time.monotonic()):
            logger.warning(
                "refused from agent %r: %d %s since the last report (e.g. %s); "
                "`qilu deadletters summary` has the whole picture",
                agent,  # repr: the id may come from an unauthenticated record
                n,
                reason,
                outcome.examples.get((agent, reason), ""),
            )

    def _failpoint_after_db_commit(self) -> None:
        """Fault injection (docs/faults.md), off unless ``ingest.failpoint_after_db_commit_s``
        is set: the batch is in the database, its offsets are not committed yet. The fault
        suite kills the process here; the log lines tell it where the kill landed."""
        logger.warning("failpoint after_db_commit: pause begins")
        time.sleep(self._cfg.failpoint_after_db_commit_s)
        logger.warning("failpoint after_db_commit: pause ends")
        self.watchdog.beat()

    def _abort_batch(self, consumer: Consumer, firsts: dict[TopicPartitionKey, int]) -> None:
        """Forget the batch and rewind the partitions we still own to its first record."""
        self._sink.discard()
        if self._gaps is not None:
            self._gaps.discard()
        for tp, offset in firsts.items():
            if tp in self._owned:
                self._seek(consumer, tp, offset)
        self._resume_all(consumer)

    def _poll(self, consumer: Consumer, timeout_ms: int) -> dict[TopicPartitionKey, list[Message]]:
        """Up to ``ingest.max_batch_records`` records of any partitions, as soon as one is
        there: ``poll`` waits up to ``timeout_ms`` for the first, then ``consume`` takes what
        else librdkafka already fetched without waiting. (``consume`` alone waits until it
        has them all or the timeout is over: at 20,000 readings/s, ~20 envelopes a second,
        every batch waited the whole 200 ms, p50 156 ms from send to commit instead of ~25.)
        The broker going away: librdkafka does not raise out of ``consume`` then, it reports
        the errors (:meth:`_on_client_error`) and reconnects on its own. An empty poll within
        :data:`CLIENT_ERROR_FRESH_S` of such an error is a handled outage (the watchdog is
        beaten); logged once when it starts and once when it is over."""
        try:
            first = consumer.poll(timeout_ms / 1000)
            more = self._cfg.max_batch_records - 1
            got = _group(
                [] if first is None else [first, *(consumer.consume(more, 0) if more else ())]
            )
        except KafkaException as exc:  # nothing was handed to us: polling again is safe
            if exc.args and _fatal(exc.args[0]):
                raise  # the process ends; its service manager starts it again
            self._outage(exc)
            self._stop.wait(min(1.0, timeout_ms / 1000 + 0.2))
            return {}
        now = time.monotonic()
        error_at = self._client_error_at
        failing = error_at is not None and now - error_at < CLIENT_ERROR_FRESH_S
        if not got and failing:
            self._outage(self._client_error)
            return {}
        if self._broker_down_since is not None:
            logger.warning(
                "polling the broker recovered after %.1f s", now - self._broker_down_since
            )
            self._broker_down_since = None
        if got:
            self.watchdog.beat()
        return got

    def _outage(self, exc: object) -> None:
        self.watchdog.beat()  # a handled outage: the loop goes on
        if self._broker_down_since is None:
            self._broker_down_since = time.monotonic()
            logger.warning("polling the broker failed, retrying until it answers: %s", exc)

    def _idle(self, consumer: Consumer, seconds: float) -> None:
        """Wait while keeping group membership: poll with every partition paused.

        If a rebalance hands us new partitions during the wait, whatever the poll returns for
        them is rewound, so no record is ever skipped.
        """
        self._pause_all(consumer)
        got = self._poll(consumer, int(seconds * 1000))
        self.watchdog.beat()  # a handled outage's wait (database, dead letters, commit)
        for tp, msgs in got.items():
            self._seek(consumer, tp, msgs[0].offset() or 0)

    def _flush_with_retry(self, consumer: Consumer) -> bool:
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
                self._resume_all(consumer)
            metrics.FLUSH_SECONDS.observe(result.seconds)
            metrics.READINGS.labels("stored").inc(result.inserted)
            metrics.READINGS.labels("duplicate").inc(result.duplicates)
            return not self._listener.revoked

    def _send_dead_letters(
        self,
        producer: Producer,
        topic: str,
        letters: list[DeadLetter],
        consumer: Consumer,
    ) -> bool:
        delay = 0.5
        while letters:
            try:
                _produce_acknowledged(producer, topic, letters)
            except (KafkaException, BufferError) as exc:
                # what was not sent yet is dropped, not sent beside the next attempt
                producer.purge(in_queue=True, in_flight=False)
                producer.poll(0)
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
                for r in d.rejected:
                    metrics.REJECTED.labels(r.reason).inc()
            break
        return not self._listener.revoked

    def _report_lag(self, consumer: Consumer) -> bool:
        """Export each partition's lag; True when every assigned partition is known to be
        read to its end (a position and a high watermark, nothing between them). The high
        watermark is the one the client learnt from its last fetch response; a partition
        whose high watermark it has not learnt yet gets its end from the broker
        (:class:`BrokerEnds`). The position is librdkafka's where it knows one (a record
        consumed since the assignment or the last seek), else the loop's own (where the
        comparison with the database's offsets started it, a seek, a batch's end): after a
        seek to a partition's end with nothing new arriving, librdkafka has none
        (tests/integration/test_ingest_idle_resume.py)."""
        owned = sorted(self._owned)
        if not owned:
            return True
        highs = {tp: kafka_calls.cached_end(consumer, tp) for tp in owned}
        try:
            asked = self._broker_ends.ends(
                consumer,
                {tp for tp, high in highs.items() if high is None},
                self._cfg.request_timeout_ms,
            )
        except KafkaException as exc:  # the broker away: the partitions stay unknown this round
            logger.debug("the partitions' ends are not known: %s", exc)
            asked = {}
        try:
            told = consumer.position([TopicPartition(t, p) for t, p in owned])
        except KafkaException:  # the gauge waits for the next batch
            return False
        positions = {(tp.topic, tp.partition): tp.offset for tp in told if tp.offset >= 0}
        caught_up = True
        for tp in owned:
            high = highs[tp]
            if high is None:
                high = asked.get(tp)
            pos = positions.get(tp, self._positions.get(tp))
            if high is None or pos is None:
                caught_up = False
                continue
            metrics.LAG.labels(tp[0], str(tp[1])).set(max(0, high - pos))
            caught_up = caught_up and pos >= high
        return caught_up
