"""Helpers of the replay tests (test_ingest_offsets.py, test_backup_drill.py): a ledger's
readings produced synchronously in slices, and the offsets the database stored."""

from __future__ import annotations

import uuid
from typing import Any

from edge_agent.agent import close_producer, new_producer

from qilu.settings import DatabaseSettings, KafkaSettings
from storage.db import connect
from storage.offsets import TopicPartitionKey, stored_offsets
from tests.integration.faults import Ledger

PER_ENVELOPE = 250
AGENTS = 8


def produce(ledger: Ledger, kafka: KafkaSettings, topic: str, lo: int, hi: int) -> None:
    """Readings ``lo .. hi-1`` of the ledger as envelopes of :data:`PER_ENVELOPE`, keyed by
    :data:`AGENTS` agent ids (spread over the partitions), each acknowledged by the broker."""
    producer: Any = new_producer(kafka.bootstrap, "replay-ledger", request_timeout_s=10.0)
    boot = uuid.uuid4().hex[:8]
    try:
        futures = []
        for seq, a in enumerate(range(lo, hi, PER_ENVELOPE)):
            b = min(a + PER_ENVELOPE, hi)
            agent = f"replay-agent-{(a // PER_ENVELOPE) % AGENTS}"
            value = ledger.envelope(a, b, agent, boot, seq)
            futures.append((a, b, producer.send(topic, key=agent.encode(), value=value)))
        for a, b, fut in futures:
            meta = fut.get(timeout=30)
            ledger.ack(a, b, meta.partition, meta.offset)
    finally:
        close_producer(producer, 10.0)


def database_offsets(db: DatabaseSettings, topic: str) -> dict[TopicPartitionKey, int]:
    with connect(db) as conn:
        return stored_offsets(conn, [topic])
