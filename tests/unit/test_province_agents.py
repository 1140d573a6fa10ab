"""The simulated province's own hand-over period and envelope size (edge_agent/province.py and
`qilu agent province`'s options), not a real agent's 1 s / 500-reading defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from edge_agent.cli import province_delivery, register
from edge_agent.kafka_io import Producer
from edge_agent.province import (
    PROVINCE_ENVELOPE_DELAY_S,
    PROVINCE_ENVELOPE_READINGS,
    PROVINCE_TICK_S,
    PROVINCE_WAL_BYTES,
    build_agents,
    plan_agents,
)

from collectors.simulated.collector import SimulatedCollector
from qilu.contract import Sector
from qilu.registry import Registry, generate


@pytest.fixture(scope="module")
def reg() -> Registry:
    return generate(1, 0.002)


def _parse(*argv: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    register(ap.add_subparsers(dest="command"))
    return ap.parse_args(["agent", "province", *argv])


def _no_producer() -> Producer:
    raise AssertionError("building the agents must not make a producer")


def test_the_province_hands_over_every_2_s_and_sends_2000_reading_envelopes(
    reg: Registry, tmp_path: Path
) -> None:
    plan = plan_agents(reg, sectors=[Sector.CHARGING], cities=["370100"])
    agents = build_agents(
        reg, plan, _no_producer, "t", state_dir=tmp_path, seed=1,
        **province_delivery(_parse()),
    )  # fmt: skip
    assert (PROVINCE_TICK_S, PROVINCE_ENVELOPE_READINGS, PROVINCE_ENVELOPE_DELAY_S) == (
        2.0,
        2000,
        2.0,
    )
    [agent] = agents
    assert agent.cfg.batch_max_readings == 2000
    assert agent.cfg.batch_max_delay_s == 2.0
    [feed] = agent.collectors
    assert isinstance(feed, SimulatedCollector)
    assert feed.config.tick_s == 2.0


def test_the_province_buffers_checkpoint_their_wal_at_1_mb(reg: Registry, tmp_path: Path) -> None:
    plan = plan_agents(reg, sectors=[Sector.CHARGING], cities=["370100"])
    [agent] = build_agents(reg, plan, _no_producer, "t", state_dir=tmp_path, seed=1)
    agent.buffer.open()
    try:
        pages = agent.buffer.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        page_size = agent.buffer.db.execute("PRAGMA page_size").fetchone()[0]
    finally:
        agent.buffer.close()
    assert pages * page_size == PROVINCE_WAL_BYTES == 1 << 20


def test_the_options_replace_the_province_defaults(reg: Registry, tmp_path: Path) -> None:
    args = _parse("--tick-s", "0.5", "--envelope-readings", "750", "--envelope-delay-s", "3")
    plan = plan_agents(reg, sectors=[Sector.SUBSTATION, Sector.RANCH], cities=["370200"])
    agents = build_agents(
        reg, plan, _no_producer, "t", state_dir=tmp_path, seed=1, **province_delivery(args)
    )
    assert len(agents) == 2
    for a in agents:
        assert (a.cfg.batch_max_readings, a.cfg.batch_max_delay_s) == (750, 3.0)
        assert [c.config.tick_s for c in a.collectors if isinstance(c, SimulatedCollector)] == [0.5]


@pytest.mark.parametrize(
    ("option", "value"),
    [("--tick-s", "0"), ("--envelope-readings", "-1"), ("--envelope-delay-s", "nan")],
)
def test_a_period_or_size_that_is_not_above_zero_is_refused(
    option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        _parse(option, value)
    assert exc.value.code == 2
    assert option in capsys.readouterr().err
