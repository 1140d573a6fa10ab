"""The ingest's Kafka clients and a broker that goes silent (docs/faults.md, cut off the
network): the bounds reach librdkafka's configuration, checked without a broker."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, Producer
from pydantic import ValidationError

from qilu.settings import IngestSettings
from stream.ingest import client_timeouts


def test_the_bounds_are_librdkafka_properties_it_accepts() -> None:
    got = client_timeouts(IngestSettings())
    assert got["socket.timeout.ms"] == 6_000  # longer than the controllers' fencing
    assert got["socket.connection.setup.timeout.ms"] == 1_000  # librdkafka's own: 30 s
    assert got["topic.metadata.refresh.interval.ms"] == 1_000  # a new leader within 1 s
    assert got["socket.nagle.disable"] is True
    # both clients take them as they are (librdkafka refuses an unknown property or value)
    base = {"bootstrap.servers": "127.0.0.1:9", **got}
    Consumer({**base, "group.id": "g"}).close()
    Producer(base).flush(0)


def test_a_connection_attempt_never_outlasts_a_request() -> None:
    got = client_timeouts(IngestSettings(request_timeout_ms=4_000, connect_timeout_ms=9_000))
    assert got["socket.timeout.ms"] == 4_000
    assert got["socket.connection.setup.timeout.ms"] == 4_000


@pytest.mark.parametrize("bad", [{"request_timeout_ms": 500}, {"connect_timeout_ms": 0}])
def test_bounds_refused_before_any_connection(bad: dict[str, int]) -> None:
    with pytest.raises(ValidationError, match=next(iter(bad))):
        IngestSettings(**bad)  # type: ignore[arg-type]
