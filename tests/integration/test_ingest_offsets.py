"""The ingest resumes from the offsets the database stored with the rows (migration 058,
docs/adr/0016-offsets-in-the-database.md), not from Kafka's committed ones when those are
ahead: a database put back to an earlier state gets the readings after it again, once."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from qilu.settings import Settings
from storage.db import connect
from tests.helpers import scalar, wait_for
from tests.integration.conftest import RunningIngest
from tests.integration.faults import (
    Ledger,
    committed,
    register_devices,
    unauthenticated,
    wait_writable,
)
from tests.integration.replay import database_offsets, produce

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TOTAL = 6000


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return unauthenticated(settings)  # the ledger's envelopes are not signed


def _stop(r: RunningIngest) -> None:
    r.stop.set()
    r.thread.join(timeout=60)
    assert not r.thread.is_alive()


def test_ingest_rereads_from_the_database_offsets_after_the_database_went_back(
    settings: Settings, start_ingest: Callable[[], RunningIngest]
) -> None:
    ledger = Ledger(register_devices(settings.db), TOTAL)
    topic = f"{settings.kafka.topic_prefix}.readings.charging"
    wait_writable(settings.kafka, topic)
    stored = "SELECT count(*) FROM readings"

    produce(ledger, settings.kafka, topic, 0, TOTAL // 2)
    first = start_ingest()
    wait_for(lambda: scalar(settings.db, stored) == TOTAL // 2, 120, "first half stored")
    # the offsets went in with the rows: what the database says equals what Kafka committed
    # once the consumer caught up
    group = settings.ingest.group_id
    wait_for(
        lambda: (
            {
                (tp.topic, tp.partition): o
                for tp, o in committed(settings.kafka, group, [topic]).items()
                if o >= 0
            }
            == database_offsets(settings.db, topic)
        ),
        60,
        "Kafka's committed offsets equal the database's",
    )
    # a snapshot of the database's state here (what a point-in-time restore brings back)
    with connect(settings.db) as conn:
        conn.execute("CREATE TABLE snap_readings AS SELECT * FROM readings")
        conn.execute("CREATE TABLE snap_offsets AS SELECT * FROM ingest_offsets")
        conn.commit()
    before = database_offsets(settings.db, topic)

    produce(ledger, settings.kafka, topic, TOTAL // 2, TOTAL)
    wait_for(lambda: scalar(settings.db, stored) == TOTAL, 120, "second half stored")
    assert all(database_offsets(settings.db, topic)[k] >= v for k, v in before.items())
    _stop(first)

    # the database goes back to the snapshot; Kafka's committed offsets stay at the end
    with connect(settings.db) as conn:
        conn.execute("DELETE FROM readings")
        conn.execute("INSERT INTO readings SELECT * FROM snap_readings")
        conn.execute("DELETE FROM ingest_offsets")
        conn.execute("INSERT INTO ingest_offsets SELECT * FROM snap_offsets")
        conn.commit()
    assert scalar(settings.db, stored) == TOTAL // 2

    start_ingest()
    wait_for(lambda: scalar(settings.db, stored) == TOTAL, 120, "the second half stored again")
    t = ledger.tally("ingest_offsets_after_going_back", settings.db)
    assert (t.ledger, t.lost, t.duplicates, t.rows) == (TOTAL, 0, 0, TOTAL)


def test_records_past_kafka_retention_are_counted_as_lost_and_the_rest_replayed(
    settings: Settings, start_ingest: Callable[[], RunningIngest]
) -> None:
    from kafka.admin import KafkaAdminClient
    from kafka.structs import TopicPartition
    from prometheus_client import REGISTRY

    ledger = Ledger(register_devices(settings.db), TOTAL)
    topic = f"{settings.kafka.topic_prefix}.readings.charging"
    wait_writable(settings.kafka, topic)
    stored = "SELECT count(*) FROM readings"
    produce(ledger, settings.kafka, topic, 0, TOTAL // 2)
    first = start_ingest()
    wait_for(lambda: scalar(settings.db, stored) == TOTAL // 2, 120, "first half stored")
    with connect(settings.db) as conn:
        conn.execute("CREATE TABLE snap_readings AS SELECT * FROM readings")
        conn.execute("CREATE TABLE snap_offsets AS SELECT * FROM ingest_offsets")
        conn.commit()
    wait_for(lambda: sum(database_offsets(settings.db, topic).values()) > 0, 60, "offsets stored")
    at_snapshot = database_offsets(settings.db, topic)
    produce(ledger, settings.kafka, topic, TOTAL // 2, TOTAL)
    wait_for(lambda: scalar(settings.db, stored) == TOTAL, 120, "second half stored")
    _stop(first)

    # the partition with the most records after the snapshot loses the first two of them
    # to "retention" (deleted from the broker)
    after = {
        p: sorted(o for (q, o) in ledger.offsets if q == p and o >= at_snapshot.get((topic, p), 0))
        for (_, p) in at_snapshot
    }
    part = max(after, key=lambda p: len(after[p]))
    assert len(after[part]) >= 3
    snap_offset = at_snapshot[topic, part]
    cut = after[part][1] + 1  # the first two envelopes after the snapshot are gone
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap)
    try:
        admin.delete_records({TopicPartition(topic, part): cut})
    finally:
        admin.close()
    gone = [ledger.offsets[part, o] for o in after[part][:2]]
    gone_readings = sum(hi - lo for lo, hi in gone)

    with connect(settings.db) as conn:  # the database goes back to the snapshot
        conn.execute("DELETE FROM readings")
        conn.execute("INSERT INTO readings SELECT * FROM snap_readings")
        conn.execute("DELETE FROM ingest_offsets")
        conn.execute("INSERT INTO ingest_offsets SELECT * FROM snap_offsets")
        conn.commit()

    labels = {"topic": topic, "partition": str(part)}
    before = REGISTRY.get_sample_value("qilu_ingest_replay_lost_records_total", labels) or 0.0
    start_ingest()
    wait_for(
        lambda: scalar(settings.db, stored) == TOTAL - gone_readings,
        120,
        "everything Kafka still holds stored again",
    )
    lost = REGISTRY.get_sample_value("qilu_ingest_replay_lost_records_total", labels)
    assert lost is not None
    assert lost - before == cut - snap_offset  # the records the broker no longer had
    t = ledger.tally("ingest_offsets_past_retention", settings.db)
    assert (t.lost, t.duplicates, t.rows) == (gone_readings, 0, TOTAL - gone_readings)
