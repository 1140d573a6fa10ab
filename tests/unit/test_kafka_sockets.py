"""kafka-python's failed connection attempt closes its socket (qilu/kafka_sockets.py).

A real connection to a loopback port nobody listens on, refused by the kernel; the
coroutine is driven by hand with a writability wait on ``select`` in place of kafka-python's
network loop (the only thing ``sock_connect`` asks of it)."""

from __future__ import annotations

import select
import socket
import subprocess
import sys
from typing import Any

import pytest

from qilu.kafka_sockets import KAFKA_PYTHON_VERSION, close_failed_connections
from qilu.ports import free_port

# the check runs in a fresh interpreter: the workaround patches the library for the
# whole process, and the "before" half must see the library as it is
ATTEMPT = """
import select, socket, sys
from kafka.net.inet import KafkaNetSocket
if sys.argv[1] == "patched":
    from qilu.kafka_sockets import close_failed_connections
    close_failed_connections()
    close_failed_connections()  # idempotent

class Net:
    async def wait_write(self, sock, timeout_at=None):
        select.select([], [sock], [], 5)

made = []
factory = KafkaNetSocket(None)
plain = factory.socket
factory.socket = lambda *a, **k: made.append(plain(*a, **k)) or made[-1]
addr = socket.getaddrinfo("127.0.0.1", int(sys.argv[2]), socket.AF_INET, socket.SOCK_STREAM)[0]
coro = factory.connect(Net(), addr)
try:
    coro.send(None)
except StopIteration:
    print("connected")
except Exception as exc:
    print(type(exc).__name__, made[0].fileno())
"""


def attempt(mode: str) -> str:
    out = subprocess.run(
        [sys.executable, "-W", "ignore::ResourceWarning", "-c", ATTEMPT, mode, str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.strip()


def test_the_library_leaves_a_refused_socket_open() -> None:
    """Why the workaround exists: if this fails, the library closes it itself now (drop it)."""
    import kafka

    assert kafka.__version__ == KAFKA_PYTHON_VERSION
    kind, fileno = attempt("plain").split()
    assert kind == "KafkaConnectionError"
    assert int(fileno) >= 0  # still open


def test_a_refused_attempt_closes_its_socket() -> None:
    kind, fileno = attempt("patched").split()
    assert kind == "KafkaConnectionError"
    assert int(fileno) == -1


def test_a_successful_attempt_keeps_its_socket() -> None:
    close_failed_connections()
    from kafka.net.inet import KafkaNetSocket

    class Net:
        async def wait_write(self, sock: socket.socket, timeout_at: Any = None) -> None:
            select.select([], [sock], [], 5)

    with socket.create_server(("127.0.0.1", 0)) as server:
        addr = socket.getaddrinfo(
            "127.0.0.1", server.getsockname()[1], socket.AF_INET, socket.SOCK_STREAM
        )[0]
        coro = KafkaNetSocket(None).connect(Net(), addr)
        # the wait above never suspends: the first step runs the attempt to its end
        with pytest.raises(StopIteration) as done:
            coro.send(None)
        sock = done.value.value
        try:
            assert sock.fileno() >= 0
            assert sock.getpeername()[1] == server.getsockname()[1]
        finally:
            sock.close()
