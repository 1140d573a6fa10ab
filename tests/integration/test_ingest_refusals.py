"""Readings the ingest refuses where the database would otherwise lose them without a trace,
through the real ingest (Kafka -> ingest -> PostgreSQL): a reading older than the raw
retention (``too_old``, which the next retention pass would drop) and a second reading of the
same device, metric and time with another value (``conflicting_duplicate``, which the natural
key would swallow). Each is dead-lettered with its reason and counted by reason."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
from kafka import KafkaProducer
from prometheus_client import REGISTRY

from qilu.contract import Envelope, Reading, Sector
from qilu.settings import Settings
from storage.db import connect
from stream.topics import readings_topic
from tests.helpers import dead_letters, scalar, wait_for
from tests.integration.test_pipeline import provisioned_agent

pytestmark = pytest.mark.integration
DAY_US = 86_400_000_000


def _refused(reason: str) -> float:
    return REGISTRY.get_sample_value("qilu_ingest_rejected_total", {"reason": reason}) or 0.0


def test_too_old_and_conflicting_duplicates_are_dead_lettered_and_counted(
    settings: Settings, start_ingest: Callable[[], object]
) -> None:
    signer = provisioned_agent(settings, "agent-x")
    before = {r: _refused(r) for r in ("too_old", "conflicting_duplicate")}
    start_ingest()
    now = time.time_ns() // 1000
    retention_us = settings.storage.raw_retention_days * DAY_US
    env = Envelope("agent-x", "boot-x", 0, now)
    env.add(Reading("CHG-Q-1-01", "power_kw", now, 7.0))
    env.add(Reading("CHG-Q-1-01", "power_kw", now, 8.0))  # same key, another value
    env.add(Reading("CHG-Q-1-01", "power_kw", now, 7.0))  # an identical repeat: silent
    env.add(Reading("CHG-Q-1-02", "power_kw", now - retention_us - 60_000_000, 11.0))
    env.add(Reading("CHG-Q-1-02", "power_kw", now - retention_us + 3_600_000_000, 12.0))
    value = env.encode()
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all")
    producer.send(
        readings_topic(settings.kafka, Sector.CHARGING),
        key=b"agent-x",
        value=value,
        headers=signer.headers(value),
    )
    producer.flush()
    producer.close()

    letters = [headers for _, headers in dead_letters(settings, 1, timeout_ms=30_000)]
    assert [h["qilu.reason"] for h in letters] == ["rejected_readings"]
    refused = json.loads(letters[0]["qilu.rejected"])
    assert [(r["i"], r["reason"]) for r in refused] == [
        (1, "conflicting_duplicate"),
        (3, "too_old"),
    ]
    assert "7.0 (quality 0) kept, 8.0" in refused[0]["detail"]
    wait_for(lambda: scalar(settings.db, "SELECT count(*) FROM readings") == 2, what="2 rows")
    with connect(settings.db) as conn:
        stored = [v for (v,) in conn.execute("SELECT value FROM readings ORDER BY ts")]
    assert stored == [12.0, 7.0]  # the one within the retention, the first of the key
    wait_for(
        lambda: (
            _refused("too_old") == before["too_old"] + 1
            and _refused("conflicting_duplicate") == before["conflicting_duplicate"] + 1
        ),
        what="the refusals counted by reason",
    )
