"""A TCP proxy between the producers and a broker, and between the consumer and the database,
that cuts, stalls and slows connections while readings flow.

The broker is our own (:func:`tests.integration.faults.private_kafka`), advertising the
proxy's port, so every Kafka connection (the ledger producer standing in for an agent, the
ingest consumer, its dead-letter producer) goes through the proxy. The consumer reaches the
database through a second proxy. A watcher reads the database directly, many times a
second: no envelope may ever be partly visible (a batch is one transaction). Afterwards
every acknowledged reading is stored exactly once.

40 s of faults here; ``bench/faults.py --full`` runs 5 minutes.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from pathlib import Path

import psycopg

from qilu.ports import free_port
from qilu.settings import DatabaseSettings, Settings
from stream.topics import ensure_topics, group_lag, readings_topics
from tests.helpers import wait_for
from tests.integration.faults import (
    READING_US,
    IngestProcess,
    Ledger,
    LedgerProducer,
    TcpProxy,
    dropped_sockets_collected,  # noqa: F401 - autouse
    env_number,
    fault_marks,
    private_kafka,
    register_devices,
    wait_writable,
)

pytestmark = fault_marks(int(env_number("QILU_FAULTS_TIMEOUT_S", 600)))

PER_ENVELOPE = 500


class PartialWatcher(threading.Thread):
    """Counts, in one snapshot at a time, envelopes whose readings are only partly stored."""

    def __init__(self, db: DatabaseSettings, ledger: Ledger) -> None:
        super().__init__(name="partial-watcher", daemon=True)
        self.db, self.ledger = db, ledger
        self.stop_event = threading.Event()
        self.snapshots = 0
        self.partial: list[tuple[int, int]] = []

    def run(self) -> None:
        q = (
            "SELECT e, count(*) FROM (SELECT ((extract(epoch FROM ts) * 1000000)::int8 - %s)"
            " / %s / %s AS e FROM readings) x GROUP BY e HAVING count(*) <> %s"
        )
        args = (self.ledger.t0_us, READING_US, PER_ENVELOPE, PER_ENVELOPE)
        with psycopg.connect(self.db.conninfo(), prepare_threshold=None, autocommit=True) as c:
            while not self.stop_event.wait(0.3):
                self.partial += [(int(e), int(n)) for e, n in c.execute(q, args).fetchall()]
                self.snapshots += 1


def test_proxy_cuts_stalls_and_slows_no_partial_batch_visible_nothing_lost(
    base_settings: Settings, db: DatabaseSettings, tmp_path: Path
) -> None:
    fault_s = env_number("QILU_FAULTS_PROXY_S", 40)
    rate = 2_000.0
    broker_port = free_port()
    with (
        TcpProxy(broker_port) as kafka_proxy,
        TcpProxy(db.port) as db_proxy,
        private_kafka(base_settings, port=broker_port, advertised_port=kafka_proxy.port) as pk,
    ):
        ks = base_settings.kafka.model_copy(
            update={"bootstrap": pk.bootstrap, "topic_prefix": "fp"}
        )
        ensure_topics(ks)
        wait_writable(ks, f"{ks.topic_prefix}.readings.charging")
        group = f"g{uuid.uuid4().hex[:8]}"
        settings = base_settings.model_copy(
            update={
                "kafka": ks,
                "db": db.model_copy(update={"port": db_proxy.port}),
                "ingest": base_settings.ingest.model_copy(update={"group_id": group}),
            }
        )
        total = int(rate * (fault_s + 10)) // PER_ENVELOPE * PER_ENVELOPE
        ledger = Ledger(register_devices(db), total)
        producer = LedgerProducer(ledger, ks, rate=rate, per_envelope=PER_ENVELOPE)
        watcher = PartialWatcher(db, ledger)
        ingest = IngestProcess(settings, tmp_path / "ingest.log").start()
        producer.start()
        watcher.start()
        rng = random.Random(3)
        faults: dict[str, int] = {}
        try:
            wait_for(lambda: ledger.acked > 5_000, 90, "readings flowing")
            until = time.monotonic() + fault_s
            while time.monotonic() < until:
                proxy = rng.choice([kafka_proxy, db_proxy])
                side = "kafka" if proxy is kafka_proxy else "db"
                kind = rng.choice(["cut", "stall", "slow", "refuse"])
                faults[f"{side}_{kind}"] = faults.get(f"{side}_{kind}", 0) + 1
                if kind == "cut":
                    proxy.cut()
                elif kind == "stall":
                    proxy.stalled = True
                    time.sleep(rng.uniform(1.0, 4.0))
                    proxy.cut()  # a stalled link usually ends in a timeout and a reset
                elif kind == "slow":
                    proxy.delay_s = rng.uniform(0.05, 0.3)
                    time.sleep(rng.uniform(2.0, 5.0))
                else:
                    proxy.refusing = True
                    proxy.cut()
                    time.sleep(rng.uniform(1.0, 3.0))
                proxy.normal()
                time.sleep(rng.uniform(0.5, 2.0))
            wait_for(lambda: producer.done() or producer.error is not None, 120, "all produced")
            assert producer.error is None, producer.error
            wait_for(lambda: group_lag(ks, group, readings_topics(ks)) == 0, 120, "caught up")
            alive = ingest.alive
        finally:
            watcher.stop_event.set()
            producer.stop_event.set()
            watcher.join(timeout=30)
            producer.join(timeout=30)
            ingest.stop()
        t = ledger.tally(
            "proxy_cut_stall_slow",
            db,
            faults=faults,
            cuts=kafka_proxy.cuts + db_proxy.cuts,
            snapshots=watcher.snapshots,
            partial_envelopes_seen=len(watcher.partial),
        )
    assert watcher.snapshots > 20
    assert watcher.partial == [], f"partly visible envelopes: {watcher.partial[:5]}"
    assert alive, ingest.log_text()[-3000:]
    assert t.ledger == total
    assert t.lost == 0
    assert t.duplicates == 0
