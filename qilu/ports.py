"""Loopback ports for servers that tests and benchmarks start themselves.

Binding port 0 and closing the socket hands out a port from the kernel's ephemeral range,
the same range every outgoing connection takes its source port from. Between choosing the
port and the server binding it, a Kafka or PostgreSQL client of another process may take it
as a source port, and the server then fails with "address already in use" (seen in the
Prometheus scrape test: the agents' metrics port was gone, and the scrape reached the wrong
process). So the ports come from below that range, and none is handed out twice by one
process.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

# the platform's own servers listen below this (11883, 15432, 19090-19094 by default)
LOW = 20000
_given: set[int] = set()
_lock = threading.Lock()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default; other systems start higher


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, outside the ephemeral range, new to this process."""
    high = _ephemeral_low()
    lo, hi = (LOW, high - 1) if high - LOW > 1000 else (1024, high - 1)
    with _lock:
        for _ in range(200):
            # no room below the ephemeral range on this system: let the kernel choose
            port = random.randint(lo, hi) if hi - lo > 100 else 0  # noqa: S311 - not a secret
            if port in _given:
                continue
            with socket.socket() as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
                port = int(s.getsockname()[1])
            if port in _given:
                continue
            _given.add(port)
            return port
    raise RuntimeError(f"no free port between {lo} and {hi} on {host}")


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports (:func:`free_port`)."""
    return [free_port(host) for _ in range(n)]
