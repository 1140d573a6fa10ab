"""One unauthorised sector no longer stalls an agent: a real broker with SASL/SCRAM and ACLs.

The agent is provisioned for a charging site only (WRITE on the charging topic), while its
simulated collector also reports a substation site. The broker refuses the substation topic
(TopicAuthorizationFailed); the agent quarantines those envelopes and keeps delivering the
charging readings, says so in its log and metrics (not "broker unavailable"), starts again
without re-sending the quarantine, and after the agent's rights change and
``requeue-quarantine`` sends the quarantined envelopes unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import tomllib
import warnings
from pathlib import Path

import pytest
from edge_agent import config, runtime
from edge_agent import metrics as m
from edge_agent.__main__ import main as lean_main
from edge_agent.agent import Agent
from edge_agent.buffer import Buffer, Quarantined

from qilu.contract import Sector, decode
from qilu.registry import Registry
from qilu.settings import DatabaseSettings, Settings
from stream import provisioning
from stream.topics import readings_topic
from tests.integration.faults import loaded_registry, on_private_broker

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaConsumer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
SCALE = 0.002


@pytest.fixture
def asettings(
    base_settings: Settings, db: DatabaseSettings, sasl_kafka: tuple[str, str]
) -> Settings:
    return on_private_broker(base_settings, db, sasl_kafka)


@pytest.fixture
def registry(asettings: Settings) -> Registry:
    return loaded_registry(asettings.db, SCALE)


def site_of(reg: Registry, sector: Sector) -> str:
    return next(s.site_id for s in reg.sites if s.sector is sector)


def build(toml_text: str, buffer: Path, sites: list[str]) -> Agent:
    """The real agent, configured by provisioning's TOML plus a simulated collector."""
    table = tomllib.loads(toml_text)
    table["buffer"] = {"path": str(buffer), "fsync": "os"}
    table["agent"]["metrics_port"] = 0
    table["simulation"] = {"seed": 1, "scale": SCALE}
    table["delivery"] = {"batch_max_delay_s": 0.2}
    table["collectors"] = {
        "sim": {"type": "simulated", "sites": sites, "silence": "none", "tick_s": 0.2}
    }
    return runtime.build_agent(config.parse(table, environ={}))


def run(agent: Agent, seconds: float) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        await agent.run(stop)

    try:
        asyncio.run(main())
    finally:
        agent.close_producer()


def quarantine(path: Path, agent_id: str) -> list[Quarantined]:
    b = Buffer(path, agent_id, max_bytes=64 << 20, max_age_s=86_400)
    b.open()
    try:
        return b.quarantine()
    finally:
        b.close()


def records(s: Settings, sector: Sector) -> list[bytes]:
    consumer = KafkaConsumer(
        readings_topic(s.kafka, sector),
        bootstrap_servers=s.kafka.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5_000,
    )
    try:
        return [r.value for r in consumer]
    finally:
        consumer.close()


def test_an_unauthorised_sector_is_quarantined_and_the_rest_keeps_flowing(
    asettings: Settings, registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = asettings
    charging, substation = site_of(registry, Sector.CHARGING), site_of(registry, Sector.SUBSTATION)
    _, creds = provisioning.provision(s, "gw-q", sites=[charging], actor="test")
    toml_text = provisioning.agent_toml(s, creds)
    buffer = tmp_path / "buf.db"

    # a collector reporting a sector the agent was not provisioned for
    with caplog.at_level(logging.WARNING, logger="edge_agent"):
        agent = build(toml_text, buffer, [charging, substation])
        run(agent, 8.0)
    assert agent.sent_readings > 0  # charging flowed
    assert agent.refused_envelopes > 0
    (q,) = quarantine(buffer, "gw-q")
    assert q.sector is Sector.SUBSTATION
    assert q.reason == "topic_authorization_failed"
    assert m.QUARANTINE_READINGS.labels("gw-q", "substation")._value.get() == q.readings
    assert "broker unavailable" not in caplog.text
    assert "not authorised for sector substation" in caplog.text
    sent_charging = records(s, Sector.CHARGING)
    assert sum(len(decode(v)) for v in sent_charging) == agent.sent_readings
    assert records(s, Sector.SUBSTATION) == []

    # the collector removed and the agent restarted: no stall, the quarantine stays put
    caplog.clear()
    again = build(toml_text, buffer, [charging])
    with caplog.at_level(logging.WARNING, logger="edge_agent"):
        run(again, 5.0)
    assert again.sent_readings > 0
    assert again.refused_envelopes == 0
    assert quarantine(buffer, "gw-q") == [q]
    assert "broker unavailable" not in caplog.text

    # the agent's rights change; requeue-quarantine; the next start sends them unchanged
    provisioning.update_sites(s, "gw-q", add_sites=[substation], actor="test")
    cfg_path = tmp_path / "agent.toml"
    cfg_path.write_text(
        toml_text.replace('path = "/var/lib/qilu-agent/buffer.db"', f'path = "{buffer}"')
        + '\n[collectors.sim]\ntype = "simulated"\nsites = ["'
        + charging
        + '"]\n'
    )
    assert lean_main(["requeue-quarantine", "--config", str(cfg_path)]) == 0
    assert quarantine(buffer, "gw-q") == []
    last = build(toml_text, buffer, [charging])
    run(last, 5.0)
    got = records(s, Sector.SUBSTATION)
    assert sum(len(decode(v)) for v in got) == q.readings
    assert len(got) == q.envelopes
