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
