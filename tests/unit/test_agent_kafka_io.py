"""The kafka-python workarounds of edge_agent/kafka_io.py rest on names that are not public
API: this fails when an upgrade of kafka-python moves one, so the workaround is re-checked
instead of silently doing nothing (close_producer looks the private names up with getattr)."""

from __future__ import annotations

import importlib.metadata
import inspect

from edge_agent import kafka_io
from kafka import KafkaProducer
from kafka.net.compat import KafkaNetClient
from kafka.producer.record_accumulator import RecordAccumulator
from kafka.producer.sender import Sender


def test_the_workarounds_were_checked_against_the_installed_kafka_python() -> None:
    assert importlib.metadata.version("kafka-python") == kafka_io.KAFKA_PYTHON_VERSION


def test_the_names_the_workarounds_use_still_exist() -> None:
    # 1: the client factory option, and the default client it builds
    assert "kafka_client" in KafkaProducer.DEFAULT_CONFIG
    assert KafkaProducer.DEFAULT_CONFIG["kafka_client"] is KafkaNetClient
    assert callable(KafkaNetClient.close)
    # 2: the producer's network thread and its force-close
    assert callable(Sender.force_close)
    assert callable(Sender.is_alive)
    assert "self._sender = " in inspect.getsource(KafkaProducer.__init__)
    # 3: the accumulator's "records pending" flag
    assert isinstance(RecordAccumulator.has_incomplete, property)
    assert "self._accumulator = " in inspect.getsource(KafkaProducer.__init__)


class _Stuck:
    """Stands for kafka-python's network thread after ``close`` gave up on a flush."""

    def __init__(self) -> None:
        self.forced = False

    def is_alive(self) -> bool:
        return not self.forced

    def force_close(self) -> None:
        self.forced = True


class _Closing:
    """A producer whose ``close`` raises the way kafka-python's does when its flush times out."""

    def __init__(self) -> None:
        self._sender = _Stuck()
        self.timeouts: list[float] = []

    def close(self, timeout: float) -> None:
        self.timeouts.append(timeout)
        raise TimeoutError("Timeout after waiting for 0 secs.")


def test_a_close_that_gives_up_is_finished_with_a_force_close() -> None:
    p = _Closing()
    kafka_io.close_producer(p, 0.0)
    assert p.timeouts == [0.0]
    assert p._sender.forced
