"""The cluster profile's PostgreSQL under a fault: the primary's machine lost mid-stream.

etcd and two PostgreSQL nodes under Patroni of our own (``faults.private_pg_cluster``:
127.0.0.20-22, free ports, synchronous replication), reached by ``qilu ingest`` through one
connection string listing both nodes with ``target_session_attrs=read-write``. While
readings flow from the shared Kafka, the primary's Patroni and PostgreSQL are SIGKILLed
together (the machine is gone) and stay down: Patroni promotes the replica, the same ingest
process reconnects to it by itself, and every acknowledged reading is stored exactly once.
Plain PostgreSQL (the TimescaleDB test engine takes one connection and has no replication;
docs/adr/0017-postgres-failover.md says what changes with TimescaleDB).
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from qilu.settings import Settings
from tests.helpers import wait_for
from tests.integration.faults import (
    IngestProcess,
    Ledger,
    LedgerProducer,
    assert_exactly_once,
    dropped_sockets_collected,  # noqa: F401 - autouse
    env_number,
    fault_marks,
    private_pg_cluster,
    register_devices,
    stop_and_drain,
    unauthenticated,
    wait_writable,
)

pytestmark = fault_marks(int(env_number("QILU_FAULTS_TIMEOUT_S", 420)))


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The conftest settings, with unsigned envelopes accepted (faults.unauthenticated)."""
    return unauthenticated(settings)


def rows(settings: Settings) -> int:
    """Rows in ``readings`` on the primary now; -1 while no node takes writes."""
    try:
        with psycopg.connect(
            settings.db.conninfo(), prepare_threshold=None, connect_timeout=2
        ) as conn:
            row = conn.execute("SELECT count(*) FROM readings").fetchone()
    except psycopg.OperationalError:
        return -1
    return int(row[0]) if row else 0


def test_primary_lost_mid_stream_replica_promoted_nothing_lost(
    settings: Settings, tmp_path: Path
) -> None:
    rate = env_number("QILU_FAULTS_PG_RATE", 2_000)
    with private_pg_cluster(settings) as cluster:
        s = settings.model_copy(update={"db": cluster.db})
        ledger = Ledger(register_devices(s.db), int(rate * 180))
        producer = LedgerProducer(ledger, s.kafka, rate=rate)
        wait_writable(s.kafka, producer.topic)
        ingest = IngestProcess(
            s, tmp_path / "ingest.log", QILU_INGEST__GROUP_INSTANCE_ID="pg-failover-ingest"
        )
        producer.start()
        ingest.start()
        try:
            wait_for(lambda: rows(s) >= rate * 3, 120, "three seconds of readings stored")
            wait_for(cluster.synchronous, 120, "the replica a synchronous standby")
            old = cluster.primary()
            assert old is not None
            cluster.kill(old)
            killed_at = time.monotonic()
            at_kill = ledger.acked
            wait_for(lambda: cluster.primary(0.5) not in (None, old), 90, "a new primary")
            promoted_s = time.monotonic() - killed_at
            # stored again: more rows than the broker had acknowledged at the kill
            wait_for(lambda: rows(s) > at_kill, 120, "writes on the new primary")
            writes_resumed_s = time.monotonic() - killed_at
            assert ingest.alive, ingest.log_text()[-3000:]  # reconnected by itself
            time.sleep(5)  # some more traffic on the new primary
            stop_and_drain(producer, s.kafka, s.ingest.group_id, join_s=60)
        finally:
            producer.stop_event.set()
            ingest.stop()
            producer.join(timeout=30)
        t = ledger.tally(
            "pg_primary_lost",
            s.db,
            killed=old,
            promoted_after_s=round(promoted_s, 1),
            writes_resumed_s=round(writes_resumed_s, 1),
            acked_at_kill=at_kill,
        )
    assert_exactly_once(t, ingest)
