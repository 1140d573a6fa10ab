"""Close the socket of a failed Kafka connection attempt (a kafka-python 3.0.12 workaround).

kafka-python's ``KafkaNetSocket.sock_connect`` (``kafka.net.inet``, an internal module) raises
when a connection is refused or times out without closing the socket it was given, and
``create_connection`` drops it: the socket stays open until the garbage collector finds it
(it sits in a reference cycle with the exception's traceback) and then warns with a
``ResourceWarning``. Every reconnection attempt to a broker that is down leaves one, so an
agent or an ingest waiting out a broker outage holds a growing number of file descriptors
between collections (and the ingest runs its collector rarely, ``stream.ingest.tune_gc``).

:func:`close_failed_connections` wraps that method once per process so the socket is closed
when the attempt fails; a successful attempt returns the socket untouched. The agent's
producer (``edge_agent.kafka_io``), the ingest's clients (``stream.ingest``) and the test
process (tests/integration/conftest.py) call it before they make a client. On an upgrade,
re-check it: tests/unit/test_kafka_sockets.py fails when the method is gone, and shows
whether the library still leaves the socket open.
"""

from __future__ import annotations

import socket
from typing import Any

KAFKA_PYTHON_VERSION = "3.0.12"  # the version the leak was seen in
_MARK = "_qilu_closes_failed_socket"


def close_failed_connections() -> None:
    """Make a failed connection attempt close its socket (idempotent)."""
    from kafka.net.inet import KafkaNetSocket  # internal module: see the module docstring

    original = KafkaNetSocket.sock_connect
    if getattr(original, _MARK, False):
        return

    async def sock_connect(
        self: Any, net: Any, sock: socket.socket, sockaddr: Any, timeout_at: Any = None
    ) -> Any:
        try:
            return await original(self, net, sock, sockaddr, timeout_at=timeout_at)
        except BaseException:
            sock.close()
            raise

    setattr(sock_connect, _MARK, True)
    KafkaNetSocket.sock_connect = sock_connect
