"""Helpers of the replay tests (test_ingest_offsets.py, test_backup_drill.py): a ledger's
readings produced synchronously in slices, and the offsets the database stored."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from edge_agent.agent import close_producer, new_producer

from qilu.settings import DatabaseSettings, KafkaSettings
from qilu.signing import Signer
from storage.db import connect
from storage.offsets import TopicPartitionKey, stored_offsets
from tests.integration.faults import Ledger

PER_ENVELOPE = 250
AGENTS = 8


def agent_ids() -> list[str]:
    """The agent ids :func:`produce` keys envelopes by unless told others."""
    return [f"replay-agent-{i}" for i in range(AGENTS)]


def produce(
    ledger: Ledger,
    kafka: KafkaSettings,
    topic: str,
    lo: int,
    hi: int,
    *,
    agents: Sequence[str] = (),
    signers: Mapping[str, Signer] | None = None,
) -> None:
    """Readings ``lo .. hi-1`` of the ledger as envelopes of :data:`PER_ENVELOPE`, keyed by
    ``agents`` in turn (default :func:`agent_ids`, spread over the partitions), each
    acknowledged by the broker; signed with the agent's signer when ``signers`` is given."""
    producer: Any = new_producer(kafka.bootstrap, "replay-ledger", request_timeout_s=10.0)
    boot = uuid.uuid4().hex[:8]
    ids = list(agents) or agent_ids()
    try:
        futures = []
        for seq, a in enumerate(range(lo, hi, PER_ENVELOPE)):
            b = min(a + PER_ENVELOPE, hi)
            agent = ids[(a // PER_ENVELOPE) % len(ids)]
            value = ledger.envelope(a, b, agent, boot, seq)
            headers = signers[agent].headers(value) if signers is not None else None
            futures.append(
                (a, b, producer.send(topic, key=agent.encode(), value=value, headers=headers))
            )
        for a, b, fut in futures:
            meta = fut.get(timeout=30)
            ledger.ack(a, b, meta.partition, meta.offset)
    finally:
        close_producer(producer, 10.0)


def database_offsets(db: DatabaseSettings, topic: str) -> dict[TopicPartitionKey, int]:
    with connect(db) as conn:
        return stored_offsets(conn, [topic])
