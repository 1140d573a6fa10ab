"""Ports for servers the tests and benchmarks start: free, distinct, never ephemeral."""

from __future__ import annotations

import random
import socket

import pytest

from qilu import ports


def test_ports_are_distinct_and_below_the_ephemeral_range() -> None:
    got = ports.free_ports(300)
    assert len(set(got)) == 300
    low = ports._ephemeral_low()
    assert all(ports.LOW <= p < low for p in got), (low, min(got), max(got))


def test_a_port_someone_listens_on_is_never_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    real = random.randint
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        draws = [taken, taken]  # the first two draws hit the busy port

        def draw(lo: int, hi: int) -> int:
            return draws.pop() if draws else real(lo, hi)

        monkeypatch.setattr(ports.random, "randint", draw)
        port = ports.free_port()
    assert not draws, "the busy draws were not tried"
    assert port != taken


def test_without_room_below_the_ephemeral_range_ports_stay_distinct(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ports, "_ephemeral_low", lambda: 1030)
    got = ports.free_ports(50)
    assert len(set(got)) == 50
    assert all(p >= 1024 for p in got)
