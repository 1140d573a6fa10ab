"""The ingest's Kafka clients and a broker that goes silent (docs/faults.md, cut off the
network): the bounds reach kafka-python's network layer, checked without a broker."""

from __future__ import annotations

import socket

import pytest
from pydantic import ValidationError

from qilu.settings import IngestSettings
from stream.ingest import client_timeouts

USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", None)


def network_config(cfg: IngestSettings) -> dict[str, object]:
    """The configuration of the network client that a consumer built with
    ``client_timeouts(cfg)`` would use (as KafkaConsumer builds it: every option passed)."""
    opts = client_timeouts(cfg)
    client = opts["kafka_client"](
        bootstrap_servers="127.0.0.1:9",
        request_timeout_ms=opts["request_timeout_ms"],
        socket_options=opts["socket_options"],
    )
    try:
        return dict(client._manager.config)
    finally:
        client.close()


@pytest.mark.skipif(USER_TIMEOUT is None, reason="TCP_USER_TIMEOUT is Linux's")
def test_silent_host_bound_is_a_socket_option_of_every_connection() -> None:
    got = network_config(IngestSettings())
    assert got["request_timeout_ms"] == 6_000  # longer than the controllers' fencing
    assert (socket.IPPROTO_TCP, USER_TIMEOUT, 2_500) in got["socket_options"]  # type: ignore[operator]
    assert (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1) in got["socket_options"]  # type: ignore[operator]
    # kafka-python's own 10 s (doubling up to 30 s) for a connection nobody answers
    assert got["socket_connection_setup_timeout_ms"] == 1_000
    assert got["socket_connection_setup_timeout_max_ms"] == 6_000


def test_silence_bound_off_leaves_the_request_timeout_alone() -> None:
    cfg = IngestSettings(broker_silence_ms=0, request_timeout_ms=4_000, connect_timeout_ms=9_000)
    got = network_config(cfg)
    assert got["socket_options"] == [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
    # a connection attempt never outlasts a request
    assert got["socket_connection_setup_timeout_ms"] == 4_000
    assert got["socket_connection_setup_timeout_max_ms"] == 4_000


@pytest.mark.parametrize(
    "bad", [{"request_timeout_ms": 500}, {"broker_silence_ms": -1}, {"connect_timeout_ms": 0}]
)
def test_bounds_refused_before_any_connection(bad: dict[str, int]) -> None:
    with pytest.raises(ValidationError, match=next(iter(bad))):
        IngestSettings(**bad)  # type: ignore[arg-type]
