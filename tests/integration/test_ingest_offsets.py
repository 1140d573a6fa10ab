"""The ingest resumes from the offsets the database stored with the rows (migration 058,
docs/adr/0016-offsets-in-the-database.md), not from Kafka's committed ones when those are
ahead: a database put back to an earlier state gets the readings after it again, once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from qilu.settings import Settings
from storage.db import connect
from storage.queries_api import Area, list_gaps
from stream.cli import build_consumer
from tests.helpers import scalar, wait_for
from tests.integration.conftest import RunningIngest
from tests.integration.faults import (
    READING_US,
    Ledger,
    committed,
    register_devices,
    unauthenticated,
    wait_writable,
)
from tests.integration.replay import AGENTS, PER_ENVELOPE, database_offsets, produce

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TOTAL = 6000
STORED = "SELECT count(*) FROM readings"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return unauthenticated(settings)  # the ledger's envelopes are not signed


def _stop(r: RunningIngest) -> None:
    r.stop.set()
    r.thread.join(timeout=60)
    assert not r.thread.is_alive()


def _first_half_stored(
    settings: Settings, start_ingest: Callable[[], RunningIngest]
) -> tuple[Ledger, str, RunningIngest]:
    """The ledger's first half produced to the charging topic and stored by a running ingest:
    (the ledger, the topic, that ingest)."""
    ledger = Ledger(register_devices(settings.db), TOTAL)
    topic = f"{settings.kafka.topic_prefix}.readings.charging"
    wait_writable(settings.kafka, topic)
    produce(ledger, settings.kafka, topic, 0, TOTAL // 2)
    first = start_ingest()
    wait_for(lambda: scalar(settings.db, STORED) == TOTAL // 2, 120, "first half stored")
    return ledger, topic, first


def _snapshot(settings: Settings) -> None:
    """Copy the readings and the stored offsets (what a point-in-time restore brings back)."""
    with connect(settings.db) as conn:
        conn.execute("CREATE TABLE snap_readings AS SELECT * FROM readings")
        conn.execute("CREATE TABLE snap_offsets AS SELECT * FROM ingest_offsets")
        conn.commit()


def _back_to_snapshot(settings: Settings) -> None:
    """Put the readings and the stored offsets back as ``_snapshot`` copied them."""
    with connect(settings.db) as conn:
        conn.execute("DELETE FROM readings")
        conn.execute("INSERT INTO readings SELECT * FROM snap_readings")
        conn.execute("DELETE FROM ingest_offsets")
        conn.execute("INSERT INTO ingest_offsets SELECT * FROM snap_offsets")
        conn.commit()


def _retention_cut(
    settings: Settings, ledger: Ledger, topic: str, since: dict[tuple[str, int], int]
) -> tuple[int, int, int]:
    """Delete from the broker the first two records after ``since`` of the partition with the
    most records after it (as retention would): (that partition, the cut offset, the readings
    those two records held)."""
    from kafka.admin import KafkaAdminClient
    from kafka.structs import TopicPartition

    after = {
        p: sorted(o for (q, o) in ledger.offsets if q == p and o >= since.get((topic, p), 0))
        for (_, p) in since
    }
    part = max(after, key=lambda p: len(after[p]))
    assert len(after[part]) >= 3
    cut = after[part][1] + 1  # the first two envelopes after ``since`` are gone
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap)
    try:
        admin.delete_records({TopicPartition(topic, part): cut})
    finally:
        admin.close()
    gone = [ledger.offsets[part, o] for o in after[part][:2]]
    return part, cut, sum(hi - lo for lo, hi in gone)


def test_ingest_rereads_from_the_database_offsets_after_the_database_went_back(
    settings: Settings, start_ingest: Callable[[], RunningIngest]
) -> None:
    ledger, topic, first = _first_half_stored(settings, start_ingest)
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
    _snapshot(settings)  # the database's state here (what a point-in-time restore brings back)
    before = database_offsets(settings.db, topic)

    produce(ledger, settings.kafka, topic, TOTAL // 2, TOTAL)
    wait_for(lambda: scalar(settings.db, STORED) == TOTAL, 120, "second half stored")
    assert all(database_offsets(settings.db, topic)[k] >= v for k, v in before.items())
    _stop(first)

    # the database goes back to the snapshot; Kafka's committed offsets stay at the end
    _back_to_snapshot(settings)
    assert scalar(settings.db, STORED) == TOTAL // 2

    start_ingest()
    wait_for(lambda: scalar(settings.db, STORED) == TOTAL, 120, "the second half stored again")
    t = ledger.tally("ingest_offsets_after_going_back", settings.db)
    assert (t.ledger, t.lost, t.duplicates, t.rows) == (TOTAL, 0, 0, TOTAL)


def test_records_past_kafka_retention_are_counted_as_lost_and_the_rest_replayed(
    settings: Settings, start_ingest: Callable[[], RunningIngest]
) -> None:
    from prometheus_client import REGISTRY

    ledger, topic, first = _first_half_stored(settings, start_ingest)
    _snapshot(settings)
    wait_for(lambda: sum(database_offsets(settings.db, topic).values()) > 0, 60, "offsets stored")
    at_snapshot = database_offsets(settings.db, topic)
    produce(ledger, settings.kafka, topic, TOTAL // 2, TOTAL)
    wait_for(lambda: scalar(settings.db, STORED) == TOTAL, 120, "second half stored")
    _stop(first)

    # the partition with the most records after the snapshot loses the first two of them
    # to "retention" (deleted from the broker)
    part, cut, gone_readings = _retention_cut(settings, ledger, topic, at_snapshot)
    snap_offset = at_snapshot[topic, part]

    _back_to_snapshot(settings)  # the database goes back to the snapshot

    labels = {"topic": topic, "partition": str(part)}
    before = REGISTRY.get_sample_value("qilu_ingest_replay_lost_records_total", labels) or 0.0
    start_ingest()
    wait_for(
        lambda: scalar(settings.db, STORED) == TOTAL - gone_readings,
        120,
        "everything Kafka still holds stored again",
    )
    lost = REGISTRY.get_sample_value("qilu_ingest_replay_lost_records_total", labels)
    assert lost is not None
    assert lost - before == cut - snap_offset  # the records the broker no longer had
    t = ledger.tally("ingest_offsets_past_retention", settings.db)
    assert (t.lost, t.duplicates, t.rows) == (gone_readings, 0, TOTAL - gone_readings)

    # the loss is stored: per partition exactly, per agent from the window that follows it
    wait_for(
        lambda: scalar(settings.db, "SELECT count(*) FILTER (WHERE agents_reported)"
                       " FROM replay_losses") == 1,
        60,
        "the loss reported per agent",
    )  # fmt: skip
    with connect(settings.db) as conn:
        loss = conn.execute(
            "SELECT topic, partition, first_offset, end_offset, records, committed_offset"
            " FROM replay_losses"
        ).fetchall()
        gaps = conn.execute(
            "SELECT agent_id, boot_id, gap_no, device_id, start_ts, end_ts, dropped_readings"
            " FROM agent_gaps WHERE reason = 'kafka_retention' ORDER BY agent_id"
        ).fetchall()
    assert len(loss) == 1
    assert loss[0][:5] == (topic, part, snap_offset, cut, cut - snap_offset)
    assert loss[0][5] is not None
    assert loss[0][5] > cut
    window = expected_window(ledger, part, cut, cut - snap_offset)
    assert [g[0] for g in gaps] == sorted(window), (gaps, window)
    for agent, boot, gap_no, device, start_ts, end_ts, _ in gaps:
        assert (boot, gap_no, device) == (f"kafka:{topic}/{part}@{snap_offset}", 0, None)
        assert end_ts == at_us(ledger.t0_us + window[agent] * READING_US)
        assert start_ts < end_ts
    # every envelope holds the same number of readings: the estimates add up to the loss
    assert abs(sum(g[6] for g in gaps) - gone_readings) <= len(gaps)
    # and the gaps API serves them
    with connect(settings.db) as conn:
        served = list_gaps(
            conn,
            Area(),
            start=ledger_start(ledger),
            end=datetime.now(UTC),
            agent_id=None,
            device_id=None,
            city=None,
            sector=None,
            after=None,
            limit=100,
        )
    assert sorted(g.agent_id for g in served if g.reason == "kafka_retention") == sorted(window)


def test_a_new_group_resumes_from_the_database_and_reports_what_retention_took(
    settings: Settings, start_ingest: Callable[[], RunningIngest]
) -> None:
    """A group without committed offsets (a new or changed group id, expired offsets)
    neither reads again what the database holds nor skips silently what the broker no
    longer has."""
    from prometheus_client import REGISTRY

    ledger, topic, first = _first_half_stored(settings, start_ingest)
    wait_for(
        lambda: all(
            database_offsets(settings.db, topic).get((topic, p), 0) > o for p, o in ledger.offsets
        ),
        60,
        "the offsets of the first half stored",
    )
    _stop(first)
    at_stop = database_offsets(settings.db, topic)
    produce(ledger, settings.kafka, topic, TOTAL // 2, TOTAL)  # while no ingest runs
    part, cut, gone_readings = _retention_cut(settings, ledger, topic, at_stop)
    db_offset = at_stop[topic, part]

    labels = {"topic": topic, "partition": str(part)}
    lost_before = REGISTRY.get_sample_value("qilu_ingest_replay_lost_records_total", labels)
    dup_before = REGISTRY.get_sample_value("qilu_ingest_readings_total", {"outcome": "duplicate"})
    again = settings.model_copy(
        update={"ingest": settings.ingest.model_copy(update={"group_id": "g-" + topic})}
    )
    stop = threading.Event()
    consumer, pool = build_consumer(again, stop)
    thread = threading.Thread(target=consumer.run, name="ingest-new-group", daemon=True)
    thread.start()
    try:
        wait_for(
            lambda: scalar(settings.db, STORED) == TOTAL - gone_readings,
            120,
            "what the broker still holds stored",
        )
        wait_for(
            lambda: (
                scalar(settings.db, "SELECT count(*) FROM replay_losses WHERE agents_reported") == 1
            ),
            60,
            "the loss reported",
        )
    finally:
        stop.set()
        thread.join(timeout=60)
        pool.close()
    lost = REGISTRY.get_sample_value("qilu_ingest_replay_lost_records_total", labels)
    assert (lost or 0) - (lost_before or 0) == cut - db_offset
    # nothing the database held was read again
    dup = REGISTRY.get_sample_value("qilu_ingest_readings_total", {"outcome": "duplicate"})
    assert (dup or 0) == (dup_before or 0)
    with connect(settings.db) as conn:
        row = conn.execute(
            "SELECT partition, first_offset, end_offset, committed_offset FROM replay_losses"
        ).fetchone()
    assert row == (part, db_offset, cut, None)
    assert scalar(settings.db, "SELECT count(*) FROM agent_gaps WHERE reason = 'kafka_retention'")
    t = ledger.tally("ingest_offsets_new_group_past_retention", settings.db)
    assert (t.lost, t.duplicates, t.rows) == (gone_readings, 0, TOTAL - gone_readings)


def expected_window(ledger: Ledger, part: int, first: int, size: int) -> dict[str, int]:
    """The agents of the ``size`` records of ``part`` from offset ``first`` on (the window
    after a loss), each with the first reading of its first envelope there."""
    out: dict[str, int] = {}
    offsets = sorted(o for (p, o) in ledger.offsets if p == part and o >= first)[:size]
    for o in offsets:
        lo, _ = ledger.offsets[part, o]
        out.setdefault(agent_of(lo), lo)
    return out


def agent_of(lo: int) -> str:
    return f"replay-agent-{(lo // PER_ENVELOPE) % AGENTS}"  # as produce() keys them


def at_us(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1e6, UTC)


def ledger_start(ledger: Ledger) -> datetime:
    return at_us(ledger.t0_us) - timedelta(hours=1)
