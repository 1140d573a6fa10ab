"""The ingest benchmark's simulated agents (bench/ingest.py ProvinceStream) send what the
province's simulated agents send (edge_agent/province.py): envelopes of up to 2,000 readings,
at the latest 2 s after they were opened, the agents staggered over those 2 s; every reading
once. And the latency run's figures of a window (warm-up excluded)."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest
from edge_agent.province import PROVINCE_ENVELOPE_DELAY_S, PROVINCE_ENVELOPE_READINGS

from bench.ingest import ProvinceStream, latency_figures
from qilu.devices import KINDS
from qilu.registry import Registry, generate

T0 = 1_800_000_000_000_000


@pytest.fixture(scope="module")
def reg() -> Registry:
    return generate(1, 0.05)


def _run(stream: ProvinceStream, seconds: int) -> list[tuple[int, str, int]]:
    """(second, agent, readings) of every envelope, the still-open ones last (second -1)."""
    sent = []
    for s in range(seconds):
        for agent, env in stream.second(T0, s, T0 + (s + 1) * 1_000_000):
            sent.append((s, agent.agent_id, len(env)))
    sent += [(-1, agent.agent_id, len(env)) for agent, env in stream.rest()]
    return sent


def _due(stream: ProvinceStream, seconds: int) -> int:
    """The readings the stream's devices report in ``seconds``."""
    total = 0
    for kind, slots in stream.schedule.items():
        interval = max(1, round(KINDS[kind].interval_s))
        for s in range(seconds):
            total += len(slots.get(s % interval, ())) * len(KINDS[kind].metrics)
    return total


def test_the_benchmark_sends_the_province_agents_envelopes(reg: Registry) -> None:
    stream = ProvinceStream(reg)
    assert (stream.envelope_readings, stream.envelope_delay_s) == (
        PROVINCE_ENVELOPE_READINGS,
        PROVINCE_ENVELOPE_DELAY_S,
    )
    sent = _run(stream, 12)
    assert max(n for _, _, n in sent) <= PROVINCE_ENVELOPE_READINGS
    # an agent's envelope not full goes at the end of every 2nd second, the agents staggered
    partial = defaultdict(set)
    for s, agent, n in sent:
        if s >= 0 and n < PROVINCE_ENVELOPE_READINGS:
            partial[agent].add(s % 2)
    assert all(len(parities) == 1 for parities in partial.values())
    assert Counter(next(iter(p)) for p in partial.values()).keys() == {0, 1}


def test_every_reading_is_sent_once_in_either_shape(reg: Registry) -> None:
    for size, delay in ((PROVINCE_ENVELOPE_READINGS, 2), (500, 1)):
        stream = ProvinceStream(reg, envelope_readings=size, envelope_delay_s=delay)
        sent = _run(stream, 10)
        assert sum(n for _, _, n in sent) == _due(stream, 10)
        assert max(n for _, _, n in sent) <= size
        if delay == 1:  # a real one-site agent's shape: what is due goes within the second
            assert not [s for s, _, _ in sent if s < 0]


def test_the_envelopes_are_fewer_and_larger_than_a_real_agents(reg: Registry) -> None:
    province = _run(ProvinceStream(reg), 20)
    one_site = _run(ProvinceStream(reg, envelope_readings=500, envelope_delay_s=1), 20)
    assert len(province) <= len(one_site) * 0.6  # at most one per 2 s instead of one per second


def test_latency_figures_of_a_window() -> None:
    sent_at = [100.0 + i * 0.5 for i in range(40)]  # 20 s
    lat_ms = [500.0 if i < 4 else 10.0 + i for i in range(40)]  # a slow start
    steady = latency_figures(lat_ms, sent_at, 100.0, 2.0, 20.0)
    whole = latency_figures(lat_ms, sent_at, 100.0, 0.0, 20.0)
    assert steady["envelopes"] == 36
    assert whole["envelopes"] == 40
    assert steady["max_ms"] == 49.0
    assert whole["max_ms"] == 500.0
    assert steady["p99_ms"] < 100 < whole["p99_ms"]
