"""A PostgreSQL of our own killed in the middle of a batch, then stopped for a while.

Never the shared server: :func:`tests.integration.faults.private_postgres` runs its own
cluster on a free port. The ingest consumer (one process, never restarted) must:

- send nothing to the dead-letter topic because the database is away;
- commit no offset past the database: every envelope below a committed offset is stored;
- recover by itself when the database returns, and lose nothing.

The outage lasts 20 s here; ``bench/faults.py --full`` makes it 2 minutes.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import psycopg

from qilu.settings import KafkaSettings, Settings
from stream.topics import deadletter_topic, group_lag, readings_topics
from tests.helpers import wait_for
from tests.integration.faults import (
    IngestProcess,
    Ledger,
    LedgerProducer,
    committed,
    dropped_sockets_collected,  # noqa: F401 - autouse
    env_number,
    fault_marks,
    private_postgres,
    read_topic,
    register_devices,
)

pytestmark = fault_marks(int(env_number("QILU_FAULTS_TIMEOUT_S", 420)))

BACKLOG = 100_000  # produced before ingest starts: its first batches are big and slow


def copy_in_progress(conninfo: str) -> bool:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
            " AND query ILIKE 'COPY %%readings%%'"
        ).fetchone()
        return bool(row and row[0])


def test_postgres_killed_mid_batch_then_down_nothing_dead_lettered_nothing_lost(
    base_settings: Settings, kafka: KafkaSettings, tmp_path: Path
) -> None:
    outage_s = env_number("QILU_FAULTS_DB_OUTAGE_S", 20)
    rate = 2_000.0
    with private_postgres(base_settings) as pg:
        group = f"g{uuid.uuid4().hex[:8]}"
        ingest_cfg = base_settings.ingest.model_copy(update={"group_id": group})
        settings = base_settings.model_copy(
            update={"db": pg.db, "kafka": kafka, "ingest": ingest_cfg}
        )
        topics = readings_topics(kafka)
        ledger = Ledger(register_devices(pg.db), BACKLOG + int(rate * (outage_s + 60)))
        producer = LedgerProducer(ledger, kafka, rate=rate, backlog=BACKLOG)
        producer.start()
        wait_for(lambda: ledger.acked >= BACKLOG, 120, "the backlog produced")
        ingest = IngestProcess(settings, tmp_path / "ingest.log").start()
        try:
            # 1. SIGKILL while a COPY into readings is running: crash recovery mid-batch
            conninfo = pg.db.conninfo()
            wait_for(lambda: copy_in_progress(conninfo), 120, "a batch being written")
            pg.kill()
            pg.start()
            # 2. down for a while (fast shutdown), traffic still coming
            wait_for(lambda: group_lag(kafka, group, topics) < BACKLOG // 2, 120, "progress")
            pg.stop()
            time.sleep(3)  # a commit of a batch stored just before the stop may still land
            before = committed(kafka, group, topics)
            until = time.monotonic() + outage_s
            while time.monotonic() < until:
                assert ingest.alive, ingest.log_text()[-3000:]
                time.sleep(1)
            during = committed(kafka, group, topics)
            pg.start()
            back = time.monotonic()
            wait_for(lambda: ledger.acked == ledger.total, 180, "all produced")
            wait_for(lambda: group_lag(kafka, group, topics) == 0, 120, "ingest caught up")
            recovered_s = time.monotonic() - back
            assert ingest.alive, "ingest exited instead of waiting for the database"
            final = committed(kafka, group, topics)
        finally:
            producer.stop_event.set()
            producer.join(timeout=30)
            ingest.stop()
        assert producer.error is None, producer.error
        letters = read_topic(kafka, deadletter_topic(kafka))
        t = ledger.tally(
            "postgres_killed_mid_batch_and_down",
            pg.db,
            outage_s=outage_s,
            dead_letters=len(letters),
            caught_up_after_s=round(recovered_s, 1),
        )
        # offsets never ran ahead of the database
        assert during == before, "offsets were committed while the database was down"
        topic = producer.topic
        assert ledger.committed_not_stored(pg.db, topic, before) == 0
        assert ledger.committed_not_stored(pg.db, topic, final) == 0
    assert letters == [], [dict(r.headers) for r in letters[:5]]
    assert t.ledger == ledger.total
    assert t.lost == 0
    assert t.duplicates == 0
