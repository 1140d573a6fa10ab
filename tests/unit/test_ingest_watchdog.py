"""The poll loop's stall watchdog (stream/watchdog.py): the decision on a fake clock, the
thread that fires on a loop that blocks, and the exit of a stuck process with its stacks."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
import threading
from typing import Any, cast

from confluent_kafka import KafkaException, TopicPartition

from qilu.settings import IngestSettings
from storage.offsets import TopicPartitionKey
from stream.ingest import BrokerEnds, IngestConsumer
from stream.kafka_calls import LATEST, OFFSET_INVALID
from stream.watchdog import STALL_EXIT_CODE, Watchdog


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_stalled_only_after_the_timeout_without_a_beat() -> None:
    clock = FakeClock()
    dog = Watchdog("loop", 120.0, on_stall=lambda *_: None, clock=clock)
    clock.now += 119.0
    assert dog.stalled() is None
    dog.beat()  # a poll returned (e.g. one of the waits of a database outage)
    clock.now += 119.0
    assert dog.stalled() is None
    clock.now += 2.0
    assert dog.stalled() == 121.0


def test_zero_timeout_never_fires() -> None:
    clock = FakeClock()
    dog = Watchdog("loop", 0.0, on_stall=lambda *_: None, clock=clock)
    clock.now += 1e9
    assert dog.stalled() is None
    dog.start()  # no thread
    assert not any(t.name == "loop-watchdog" for t in threading.enumerate())


def test_beat_runs_the_progress_hook() -> None:
    beats: list[int] = []
    dog = Watchdog("loop", 10.0, on_stall=lambda *_: None, on_beat=lambda: beats.append(1))
    dog.beat()
    dog.beat()
    assert len(beats) == 2


def test_the_thread_fires_once_on_a_loop_that_blocks() -> None:
    fired: list[tuple[str, float]] = []
    done = threading.Event()

    def on_stall(what: str, seconds: float) -> None:
        fired.append((what, seconds))
        done.set()

    dog = Watchdog("blocked loop", 0.2, on_stall=on_stall)
    dog.start()
    blocked = threading.Event()
    blocked.wait(0.5)  # the loop: no beat while it waits
    assert done.wait(10)
    dog.stop()
    assert len(fired) == 1
    assert fired[0][0] == "blocked loop"
    assert fired[0][1] > 0.2


def test_a_beating_loop_is_left_alone() -> None:
    fired: list[float] = []
    dog = Watchdog("loop", 0.3, on_stall=lambda _w, s: fired.append(s))
    dog.start()
    pace = threading.Event()
    for _ in range(20):  # 1 s of iterations, each well inside the timeout
        dog.beat()
        pace.wait(0.05)
    dog.stop()
    assert fired == []


def test_a_stuck_process_logs_every_stack_and_exits_with_its_code() -> None:
    script = textwrap.dedent(
        """
        import logging, threading
        from stream.watchdog import Watchdog
        logging.basicConfig(level="INFO")

        def stuck_in_a_synchronous_call():
            threading.Event().wait()  # what a net.run() without a timeout does

        Watchdog("test loop", 0.3).start()
        stuck_in_a_synchronous_call()
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == STALL_EXIT_CODE
    assert "test loop made no progress" in proc.stderr
    assert "stuck_in_a_synchronous_call" in proc.stderr  # the main thread's stack
    assert "test loop-watchdog" in proc.stderr  # and the others'


class Partitions:
    """The consumer's view of its partitions as librdkafka gives it: positions and high
    watermarks (None: unknown, as before the first fetch or the first record consumed since
    the assignment or a seek), and the ends the broker answers (none: it does not answer)."""

    def __init__(
        self,
        marks: dict[TopicPartitionKey, tuple[int | None, int | None]],
        ends: dict[TopicPartitionKey, int] | None = None,
    ) -> None:
        self.marks, self.ends = marks, ends
        self.asked: list[set[TopicPartitionKey]] = []  # the questions to the broker

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool) -> tuple[int, int]:
        assert cached  # the broker is asked with offsets_for_times
        high = self.marks[tp.topic, tp.partition][1]
        return (OFFSET_INVALID, OFFSET_INVALID if high is None else high)

    def offsets_for_times(
        self, partitions: list[TopicPartition], timeout: float
    ) -> list[TopicPartition]:
        assert all(tp.offset == LATEST for tp in partitions)
        self.asked.append({(tp.topic, tp.partition) for tp in partitions})
        if self.ends is None:
            raise KafkaException("no answer")
        return [
            TopicPartition(tp.topic, tp.partition, self.ends[tp.topic, tp.partition])
            for tp in partitions
        ]

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        out = []
        for tp in partitions:
            pos = self.marks[tp.topic, tp.partition][0]
            offset = OFFSET_INVALID if pos is None else pos
            out.append(TopicPartition(tp.topic, tp.partition, offset))
        return out


class NoPendingLiveness:
    """The sink as the idle round sees it: no coalesced liveness to write."""

    def flush_liveness(self, *, force: bool = False) -> int:
        return 0


def _idle_loop(beats: list[int]) -> IngestConsumer:
    loop = object.__new__(IngestConsumer)  # only the idle round's parts
    loop._losses = None
    loop._sink = NoPendingLiveness()  # type: ignore[assignment]
    loop._cfg = IngestSettings()
    loop._broker_ends = BrokerEnds(5.0)
    loop._positions = {}
    loop.watchdog = Watchdog(
        "loop", 120.0, on_stall=lambda *_: None, on_beat=lambda: beats.append(1)
    )
    return loop


def idle_round(loop: IngestConsumer, consumer: Partitions) -> None:
    """The idle round of a loop that holds the consumer's partitions."""
    loop._owned = set(consumer.marks)
    loop._idle_round(cast(Any, consumer))


TP0, TP1 = ("t.readings", 0), ("t.readings", 1)


def test_an_empty_poll_is_progress_when_every_partition_is_read_to_its_end() -> None:
    beats: list[int] = []
    idle_round(_idle_loop(beats), Partitions({TP0: (10, 10), TP1: (0, 0)}))
    assert beats == [1]


def test_an_empty_poll_is_no_progress_while_records_wait_or_nothing_is_known() -> None:
    beats: list[int] = []
    loop = _idle_loop(beats)
    behind = Partitions({TP0: (10, 10), TP1: (3, 9)})
    never_fetched = Partitions({TP0: (None, None), TP1: (10, 10)})
    no_watermark = Partitions({TP0: (0, None)})
    for consumer in (behind, never_fetched, no_watermark):
        idle_round(loop, consumer)
    assert beats == []


def test_an_ingest_without_partitions_is_idle_not_stuck() -> None:
    beats: list[int] = []
    idle_round(_idle_loop(beats), Partitions({}))
    assert beats == [1]


def test_a_partition_without_a_high_watermark_is_read_to_the_end_the_broker_tells() -> None:
    """A partition the client has fetched nothing from yet (no high watermark learnt): the
    broker's end offsets decide."""
    beats: list[int] = []
    loop = _idle_loop(beats)
    consumer = Partitions({TP0: (10, None), TP1: (7, 7)}, ends={TP0: 10})
    idle_round(loop, consumer)
    assert beats == [1]
    assert consumer.asked == [{TP0}]  # only what the client does not know


def test_a_partition_without_a_position_of_librdkafkas_has_the_loops() -> None:
    """librdkafka tells a position only after a record consumed since the assignment or a
    seek: a partition sought to its end (the database's offsets) with nothing new arriving
    has none; the loop's own (where it started or sought it) decides."""
    beats: list[int] = []
    loop = _idle_loop(beats)
    consumer = Partitions({TP0: (None, 10), TP1: (7, 7)})
    idle_round(loop, consumer)
    assert beats == []  # no position known: not caught up
    loop._positions = {TP0: 10}
    idle_round(loop, consumer)
    assert beats == [1]
    loop._positions = {TP0: 4}
    idle_round(loop, consumer)
    assert beats == [1]  # records wait


def test_a_partition_behind_the_end_the_broker_tells_is_no_progress() -> None:
    beats: list[int] = []
    loop = _idle_loop(beats)
    for consumer in (
        Partitions({TP0: (4, None)}, ends={TP0: 10}),  # records wait
        Partitions({TP0: (10, None)}, ends=None),  # the broker does not answer
    ):
        loop._broker_ends = BrokerEnds(5.0)
        idle_round(loop, consumer)
    assert beats == []


def test_the_broker_is_asked_once_per_period_and_at_once_for_a_new_partition() -> None:
    clock = FakeClock()
    ends = BrokerEnds(5.0, clock=clock)
    partitions = Partitions({TP0: (10, None), TP1: (3, None)}, ends={TP0: 10, TP1: 3})
    consumer: Any = partitions
    for _ in range(3):
        assert ends.ends(consumer, {TP0}, 1000) == {TP0: 10}
        clock.now += 1.0
    assert partitions.asked == [{TP0}]
    assert ends.ends(consumer, {TP0, TP1}, 1000) == {TP0: 10, TP1: 3}  # a new partition
    clock.now += 5.0
    assert partitions.ends is not None
    partitions.ends[TP0] = 12  # a record arrived
    assert ends.ends(consumer, {TP0, TP1}, 1000) == {TP0: 12, TP1: 3}
    assert partitions.asked == [{TP0}, {TP0, TP1}, {TP0, TP1}]
    partitions.ends = None  # a failed question is not repeated before the period is over
    clock.now += 5.0
    for _ in range(2):
        with contextlib.suppress(KafkaException):
            ends.ends(consumer, {TP0}, 1000)
    assert len(partitions.asked) == 4
