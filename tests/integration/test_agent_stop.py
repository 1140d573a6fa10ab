"""A clean stop of the edge agent (SIGTERM, Ctrl-C) logs no warning.

The MQTT collector against the shared Mosquitto reports its source as gone when the agent
closes its connection on stop ("disconnected: Normal disconnection"); that is the agent
stopping, not an outage, and must not read like one in the log."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import pytest
from edge_agent import config, runtime

from qilu.settings import Settings
from tests.contract.test_agent_delivery import FakeProducer

pytestmark = [pytest.mark.integration]


def test_clean_stop_logs_no_warning(
    base_settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    table = {
        "agent": {"id": f"stop-{uuid.uuid4().hex[:6]}", "metrics_port": 0},
        "auth": {"unsigned": True},
        "buffer": {"path": str(tmp_path / "buf.db"), "fsync": "os"},
        "collectors": {
            "lora": {
                "type": "mqtt",
                "host": "127.0.0.1",
                "port": base_settings.services.mosquitto_port,
                "application_id": uuid.uuid4().hex,
            }
        },
    }
    agent = runtime.build_agent(config.parse(table, environ={}), producer=FakeProducer)
    up = asyncio.Event()

    original = agent._availability

    def seen(name: str, is_up: bool, reason: str) -> None:
        if is_up:
            up.set()
        original(name, is_up, reason)

    agent._availability = seen  # type: ignore[method-assign,assignment]

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        await asyncio.wait_for(up.wait(), 60)  # connected to Mosquitto
        stop.set()  # what SIGTERM and Ctrl-C do
        await task

    with caplog.at_level(logging.INFO):
        asyncio.run(main())
    assert up.is_set()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings if "auth.unsigned" not in r.getMessage()] == []
