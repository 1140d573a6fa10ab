"""Coalesced liveness (storage/writer.py, ``ingest.liveness_flush_s``) on the real PostgreSQL:
a device's last_seen is written at most once per period, in a sink transaction, and

* every reading is stored with its batch whatever happens to the pending liveness (a crash
  between two liveness writes loses no reading; last_seen is then older by at most the
  period, until the device's next reading);
* last_seen never moves backwards and never names a reading that is not stored (a failed
  transaction notes nothing);
* what is pending is written when the period is over (with a batch, or on its own when the
  ingest polls nothing) and all of it when the ingest stops;
* the change log of the incremental coverage (migration 062) sees every write.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from qilu.contract import Envelope, Reading, Sector, to_us
from qilu.errors import BackpressureError
from qilu.settings import DatabaseSettings, Settings, StorageMode
from storage.db import connect
from storage.rows import Rows
from storage.writer import ReadingsSink
from stream.topics import readings_topic
from tests.helpers import scalar, signing_headers, wait_for
from tests.integration.test_storage_postgres import Fleet

pytestmark = pytest.mark.integration
DEVICES = ["CHG-Q-1-01", "CHG-Q-1-02", "SUB-J-1-01"]


class Clock:
    """The sink's monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fleet(db: DatabaseSettings) -> Fleet:
    return Fleet(db)


def last_seen(db: DatabaseSettings) -> dict[int, datetime]:
    with connect(db) as conn:
        return dict(conn.execute("SELECT device_pk, last_seen FROM device_liveness").fetchall())


def newest_stored(db: DatabaseSettings) -> dict[int, datetime]:
    with connect(db) as conn:
        return dict(conn.execute("SELECT device_pk, max(ts) FROM readings GROUP BY 1").fetchall())


def logged(db: DatabaseSettings) -> dict[int, int]:
    """device -> newest last_seen (µs) the change log holds for it."""
    out: dict[int, int] = {}
    with connect(db) as conn:
        for devices, seen in conn.execute("SELECT devices, seen_us FROM liveness_changes"):
            for d, s in zip(devices, seen, strict=True):
                out[d] = max(s, out.get(d, s))
    return out


def batch(fleet: Fleet, start: datetime, devices: list[str] = DEVICES) -> Rows:
    return fleet.rows(devices, start, minutes=1)


def test_liveness_written_once_per_period_every_reading_with_its_batch(
    db: DatabaseSettings, fleet: Fleet, sink_pool: ConnectionPool
) -> None:
    clock = Clock()
    sink = ReadingsSink(sink_pool, mode=StorageMode.POSTGRES, liveness_flush_s=2.0, clock=clock)
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    first = batch(fleet, t0)
    sink.add(first)
    sink.flush()  # the first batch writes its liveness at once
    assert last_seen(db) == newest_stored(db)
    written = last_seen(db)
    for i in range(1, 4):  # three more batches within the period: readings only
        clock.now += 0.5
        sink.add(batch(fleet, t0 + timedelta(minutes=i)))
        sink.flush()
        assert scalar(db, "SELECT count(*) FROM readings") == (i + 1) * len(first)
        assert last_seen(db) == written
    assert sink.pending_liveness == len(DEVICES)
    assert sink.flush_liveness() == 0  # not due yet
    clock.now += 0.5  # 2 s since the last write: the next batch carries all of it
    sink.add(batch(fleet, t0 + timedelta(minutes=4), DEVICES[:1]))
    sink.flush()
    assert sink.pending_liveness == 0
    assert last_seen(db) == newest_stored(db)
    assert logged(db) == {d: to_us(t) for d, t in newest_stored(db).items()}
    assert scalar(db, "SELECT count(*) FROM liveness_changes") == 2  # two writes, not five


def test_pending_liveness_is_written_on_its_own_when_due_and_when_forced(
    db: DatabaseSettings, fleet: Fleet, sink_pool: ConnectionPool
) -> None:
    clock = Clock()
    sink = ReadingsSink(sink_pool, mode=StorageMode.POSTGRES, liveness_flush_s=2.0, clock=clock)
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    for i in range(2):
        sink.add(batch(fleet, t0 + timedelta(minutes=i)))
        sink.flush()
    assert last_seen(db) != newest_stored(db)
    clock.now += 2.0
    assert sink.flush_liveness() == len(DEVICES)  # nothing polled, the period over
    assert last_seen(db) == newest_stored(db)
    sink.add(batch(fleet, t0 + timedelta(minutes=2)))
    sink.flush()
    assert sink.flush_liveness() == 0
    assert sink.flush_liveness(force=True) == len(DEVICES)  # the ingest stopping
    assert last_seen(db) == newest_stored(db)
    assert sink.flush_liveness(force=True) == 0  # nothing left


def test_a_crash_between_liveness_writes_loses_no_reading_and_liveness_never_goes_back(
    db: DatabaseSettings, fleet: Fleet, sink_pool: ConnectionPool
) -> None:
    clock = Clock()
    sink = ReadingsSink(sink_pool, mode=StorageMode.POSTGRES, liveness_flush_s=2.0, clock=clock)
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    sink.add(batch(fleet, t0 + timedelta(minutes=5)))
    sink.flush()
    sink.add(batch(fleet, t0 + timedelta(minutes=6)))
    sink.flush()
    written = last_seen(db)
    del sink  # the process dies: the pending liveness of the second batch is gone
    assert scalar(db, "SELECT count(*) FROM readings") == 2 * len(batch(fleet, t0))
    stale = {d: newest_stored(db)[d] - t for d, t in written.items()}
    assert all(timedelta(0) < s <= timedelta(minutes=1) for s in stale.values())
    # the restarted ingest: late data (older than last_seen) does not move it back, the
    # device's next reading brings it up to date
    again = ReadingsSink(sink_pool, mode=StorageMode.POSTGRES, liveness_flush_s=2.0, clock=clock)
    again.add(batch(fleet, t0))
    again.flush()
    assert last_seen(db) == written
    again.add(batch(fleet, t0 + timedelta(minutes=7)))
    clock.now += 2.0
    again.flush()
    assert last_seen(db) == newest_stored(db)


def test_a_failed_transaction_notes_no_liveness_and_keeps_its_batch(
    db: DatabaseSettings, fleet: Fleet, sink_pool: ConnectionPool
) -> None:
    clock = Clock()
    sink = ReadingsSink(
        sink_pool,
        mode=StorageMode.POSTGRES,
        liveness_flush_s=2.0,
        clock=clock,
        statement_timeout_ms=300,
    )
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    sink.add(batch(fleet, t0))
    sink.flush()
    clock.now += 2.0
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with psycopg.connect(db.conninfo()) as conn:
            conn.execute("LOCK TABLE device_liveness IN ACCESS EXCLUSIVE MODE")
            held.set()
            release.wait(30)

    locker = threading.Thread(target=hold)
    locker.start()
    try:
        assert held.wait(10)
        sink.add(batch(fleet, t0 + timedelta(minutes=1), DEVICES[:1]))
        with pytest.raises(BackpressureError):  # the liveness statement times out
            sink.flush()
        assert sink.pending == len(batch(fleet, t0, DEVICES[:1]))  # the batch is kept
        assert sink.pending_liveness == 0  # and nothing of it noted: it is not stored
        sink.discard()  # a rebalance: the batch is somebody else's now
        assert sink.pending_liveness == 0
    finally:
        release.set()
        locker.join()
    assert sink.flush_liveness(force=True) == 0
    assert last_seen(db) == newest_stored(db)  # names no reading that is not stored


def test_the_ingest_writes_all_pending_liveness_when_it_stops(
    settings: Settings, fleet: Fleet, start_ingest: object
) -> None:
    """One envelope per batch, a period longer than the test: only the first batch writes
    liveness on the way; stopping the ingest writes the rest."""
    from kafka import KafkaProducer

    settings.ingest.liveness_flush_s = 10.0
    settings.ingest.max_batch_records = 1
    now = datetime.now(UTC).replace(microsecond=0)
    topic = readings_topic(settings.kafka, Sector.CHARGING)
    sign = signing_headers(settings, "agent-l")
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all")
    for seq in range(5):
        env = Envelope("agent-l", "boot-l", seq, to_us(now))
        t = now - timedelta(minutes=10) + timedelta(seconds=20 * seq)
        for dev in ("CHG-Q-1-01", "CHG-Q-1-02"):
            env.add(Reading.at(dev, "power_kw", t, float(seq)))
        value = env.encode()
        producer.send(topic, key=b"agent-l", value=value, headers=sign(value))
    producer.flush()
    producer.close()
    running = start_ingest()  # type: ignore[operator]
    wait_for(
        lambda: scalar(settings.db, "SELECT count(*) FROM readings") == 10,
        what="every reading stored",
    )
    assert last_seen(settings.db) != newest_stored(settings.db)  # coalesced on the way
    running.stop.set()
    running.thread.join(timeout=30)
    assert not running.thread.is_alive()
    assert last_seen(settings.db) == newest_stored(settings.db)


def test_each_device_is_coalesced_for_an_eighth_of_its_kinds_window(
    db: DatabaseSettings, fleet: Fleet, sink_pool: ConnectionPool
) -> None:
    """A transformer (30 s window: 3.75 s) and a charging pile (120 s: 15 s), the kinds'
    windows as device_kinds has them, under a 30 s cap."""
    clock = Clock()
    sink = ReadingsSink(sink_pool, mode=StorageMode.POSTGRES, liveness_flush_s=30.0, clock=clock)
    pile, transformer = fleet.pk["CHG-Q-1-01"], fleet.pk["SUB-J-1-01"]
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    devices = ["CHG-Q-1-01", "SUB-J-1-01"]
    sink.add(batch(fleet, t0, devices))
    sink.flush()
    written = last_seen(db)
    clock.now += 5.0  # past the transformer's period, within the pile's
    sink.add(batch(fleet, t0 + timedelta(minutes=1), devices))
    sink.flush()
    now = last_seen(db)
    assert now[transformer] == newest_stored(db)[transformer]
    assert now[pile] == written[pile]
    clock.now += 10.0  # 15 s since the pile's write
    sink.add(batch(fleet, t0 + timedelta(minutes=2), devices[1:]))
    sink.flush()
    assert last_seen(db) == newest_stored(db)  # the pile's pending one came along
