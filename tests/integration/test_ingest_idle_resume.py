"""An idle ingest that resumed from the database's offsets at the partitions' end is caught
up, not stalled: with no committed offsets in Kafka (a new or renamed group, expired offsets)
the ingest seeks to the offsets stored with the rows (docs/adr/0016), and kafka-python then
never learns those partitions' high watermarks while nothing new arrives. The poll loop must
still see that it is read to the end (its stall watchdog would otherwise end it with exit
code 70 every ``ingest.stall_timeout_s``)."""

from __future__ import annotations

import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from qilu.ports import free_port
from qilu.settings import Settings
from tests.helpers import scalar, wait_for
from tests.integration.conftest import RunningIngest
from tests.integration.faults import (
    IngestProcess,
    Ledger,
    register_devices,
    unauthenticated,
    wait_writable,
)
from tests.integration.replay import PER_ENVELOPE, database_offsets, produce

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(300),
    # kafka-python leaves sockets of closed connections to the garbage collector
    pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning"),
]

FIRST = 4 * PER_ENVELOPE
TOTAL = FIRST + PER_ENVELOPE
STALL_S = 6.0
STORED = "SELECT count(*) FROM readings"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return unauthenticated(settings)  # the ledger's envelopes are not signed


def _lags(port: int) -> dict[tuple[str, str], float]:
    """The ingest's exported lag per (topic, partition)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {
        (s.labels["topic"], s.labels["partition"]): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "qilu_ingest_lag_records"
        for s in family.samples
    }


def test_an_idle_ingest_resumed_from_the_database_at_the_end_is_caught_up(
    settings: Settings, start_ingest: Callable[[], RunningIngest], tmp_path: Path
) -> None:
    ledger = Ledger(register_devices(settings.db), TOTAL)
    topic = f"{settings.kafka.topic_prefix}.readings.charging"
    wait_writable(settings.kafka, topic)
    produce(ledger, settings.kafka, topic, 0, FIRST)
    first = start_ingest()
    wait_for(lambda: scalar(settings.db, STORED) == FIRST, 120, "the first readings stored")
    wait_for(
        lambda: all(
            database_offsets(settings.db, topic).get((topic, p), 0) > o for p, o in ledger.offsets
        ),
        60,
        "their offsets stored",
    )
    first.stop.set()
    first.thread.join(timeout=60)
    assert not first.thread.is_alive()

    # the same database (its offsets at every partition's end), a group Kafka knows nothing of
    again = settings.model_copy(
        update={"ingest": settings.ingest.model_copy(update={"group_id": "new-" + topic})}
    )
    port = free_port()
    ingest = IngestProcess(
        again,
        tmp_path / "ingest.log",
        QILU_INGEST__STALL_TIMEOUT_S=str(STALL_S),
        QILU_INGEST__METRICS_PORT=str(port),
        # one record per poll: the fetches of the other partitions, from offset 0, are still
        # unread when the seek to the database's offsets discards them (their high watermark
        # with them), and with nothing new arriving kafka-python 3.0.12 is not told it again
        # (without this setting every fetch was read before the seek: not reproduced)
        QILU_INGEST__MAX_BATCH_RECORDS="1",
    ).start()
    try:
        wait_for(
            lambda: "a group without committed offsets" in ingest.log_text() or not ingest.alive,
            120,
            "the ingest seeking to the database's offsets",
        )
        assert ingest.proc is not None
        try:  # several stall timeouts with nothing to read
            code: int | None = ingest.proc.wait(timeout=5 * STALL_S)
        except subprocess.TimeoutExpired:
            code = None
        assert code is None, f"the idle ingest exited with {code}:\n{ingest.log_text()[-3000:]}"

        # it says it is read to the end: a lag of 0 for every partition it sought to
        partitions = {(t, str(p)) for t, p in database_offsets(settings.db, topic)}
        lags: dict[tuple[str, str], float] = {}

        def exported() -> bool:
            lags.update(_lags(port))
            return partitions <= set(lags)

        wait_for(exported, 30, "the lag exported for the partitions")
        assert {k: v for k, v in lags.items() if v != 0} == {}

        # and it still stores what comes: a new envelope, once
        produce(ledger, settings.kafka, topic, FIRST, TOTAL)
        wait_for(lambda: scalar(settings.db, STORED) == TOTAL, 120, "the new readings stored")
        assert ingest.alive
    finally:
        ingest.stop()
    t = ledger.tally("idle_resume_at_the_end", settings.db)
    assert (t.lost, t.duplicates, t.rows) == (0, 0, TOTAL)
