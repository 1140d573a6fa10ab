"""A Kafka broker of our own killed with SIGKILL and restarted five times under traffic.

Never the shared broker: :func:`tests.integration.faults.private_kafka` starts one on free
ports. A ledger producer writes with acks=all and resends what was not acknowledged; the
ingest consumer runs as a supervised process (restarted if it exits, as its service manager
would). Every acknowledged reading must end up stored exactly once.

The broker *down for minutes* while edge agents keep collecting is
tests/integration/test_edge_faults.py::test_broker_outage_disk_within_bound_and_everything_
stored_once (60 s here; ``bench/faults.py --full`` runs it for 10 minutes).
"""

from __future__ import annotations

import random
import time
import uuid
from pathlib import Path

from qilu.settings import DatabaseSettings, Settings
from stream.topics import ensure_topics, group_lag, readings_topics
from tests.helpers import wait_for
from tests.integration.faults import (
    IngestProcess,
    Ledger,
    LedgerProducer,
    Supervisor,
    dropped_sockets_collected,  # noqa: F401 - autouse
    env_number,
    fault_marks,
    private_kafka,
    register_devices,
    wait_writable,
)

# a broker start takes 10-20 s on an idle machine, minutes on a loaded one
pytestmark = fault_marks(int(env_number("QILU_FAULTS_TIMEOUT_S", 900)))

KILLS = 5


def test_broker_sigkill_five_times_every_acknowledged_reading_stored_once(
    base_settings: Settings, db: DatabaseSettings, tmp_path: Path
) -> None:
    rate = env_number("QILU_FAULTS_BROKER_RATE", 2_000)
    with private_kafka(base_settings) as broker:
        ks = base_settings.kafka.model_copy(
            update={"bootstrap": broker.bootstrap, "topic_prefix": "fb"}
        )
        ensure_topics(ks)
        wait_writable(ks, f"{ks.topic_prefix}.readings.charging")
        ingest_cfg = base_settings.ingest.model_copy(
            update={"group_id": f"g{uuid.uuid4().hex[:8]}"}
        )
        settings = base_settings.model_copy(update={"db": db, "kafka": ks, "ingest": ingest_cfg})
        ledger = Ledger(register_devices(db), int(rate * 900))
        producer = LedgerProducer(ledger, ks, rate=rate)
        supervisor = Supervisor(IngestProcess(settings, tmp_path / "ingest.log"))
        rng = random.Random(5)
        downtimes = []
        producer.start()
        supervisor.start()
        try:
            wait_for(lambda: ledger.acked > 5_000, 90, "readings acknowledged")
            for _ in range(KILLS):
                time.sleep(rng.uniform(2.0, 6.0))  # traffic in flight when it dies
                broker.kill()
                down = time.monotonic()
                time.sleep(rng.uniform(0.5, 5.0))
                broker.start()
                downtimes.append(round(time.monotonic() - down, 1))
                acked = ledger.acked
                wait_for(lambda: ledger.acked > acked, 180, "acknowledgements again")  # noqa: B023
            time.sleep(3)
        finally:
            producer.stop_event.set()
            producer.join(timeout=30)
        try:
            assert producer.error is None, producer.error
            wait_for(
                lambda: group_lag(ks, ingest_cfg.group_id, readings_topics(ks)) == 0,
                120,
                "the consumer caught up",
            )
        finally:
            supervisor.stop()
        t = ledger.tally(
            "broker_sigkill_x5",
            db,
            kills=KILLS,
            broker_down_s=downtimes,
            producer_failures=producer.failures,
            ingest_restarts=len(supervisor.exits),
        )
    assert t.ledger > 10_000
    assert t.lost == 0, supervisor.ingest.log_text()[-3000:]
    assert t.duplicates == 0
