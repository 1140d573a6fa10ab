"""Contract tier: a topic the broker refuses for good is quarantined, not treated as an outage.

The fake producer refuses the substation topic the way kafka-python does for a topic the
agent's principal may not write (``TopicAuthorizationFailedError`` from ``send``) and
acknowledges everything else. The real-broker version, with ACLs, is
tests/integration/test_agent_quarantine.py.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import pytest
from edge_agent import metrics as m
from edge_agent.agent import Agent, Delivery, refusal_of
from edge_agent.buffer import Buffer, Outgoing, Quarantined, requeue_quarantine
from kafka.errors import KafkaTimeoutError, TopicAuthorizationFailedError

from qilu.contract import Reading, Sector
from tests.contract.test_agent_delivery import FakeFuture, ListCollector, run

REFUSED_TOPIC = "t.readings.substation"


class RefusingProducer:
    def __init__(self, refused: set[str]) -> None:
        self.refused = refused
        self.sent: dict[str, list[bytes]] = {}
        self.refusals = 0

    def send(self, topic: str, *, key: bytes, value: bytes) -> FakeFuture:
        del key
        if topic in self.refused:
            self.refusals += 1
            raise TopicAuthorizationFailedError({topic})
        self.sent.setdefault(topic, []).append(value)
        fut = FakeFuture()
        threading.Timer(0.01, fut.succeed).start()
        return fut


def mixed(n: int) -> list[Reading]:
    """Charging and substation readings, interleaved."""
    t0 = 1_763_900_000_000_000
    return [
        Reading(f"pile-{i}", "power_kw", t0 + i, float(i))
        if i % 2
        else Reading(f"sub-{i}", "oil_temp_c", t0 + i, 40.0)
        for i in range(n)
    ]


def make(tmp: Path, producer: RefusingProducer, readings: list[Reading]) -> Agent:
    buffer = Buffer(tmp / "buf.db", "agent-q", max_bytes=16 << 20, max_age_s=3600, fsync="os")
    return Agent(
        "agent-q",
        [ListCollector(readings)],
        buffer,
        lambda: producer,
        "t",
        Delivery(batch_max_readings=4, batch_max_delay_s=0.05, retry_initial_s=0.05),
        replace_producer=False,
    )


def quarantine(tmp: Path) -> list[Quarantined]:
    b = Buffer(tmp / "buf.db", "agent-q", max_bytes=16 << 20, max_age_s=3600)
    b.open()
    try:
        return b.quarantine()
    finally:
        b.close()


def test_refusal_is_recognised_by_its_error_code() -> None:
    assert refusal_of(TopicAuthorizationFailedError({"x"})) == "topic_authorization_failed"
    assert refusal_of(KafkaTimeoutError("broker away")) is None
    assert refusal_of(OSError(29, "an OS error with the same number")) is None


def test_refused_sector_is_quarantined_and_the_rest_keeps_flowing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    producer = RefusingProducer({REFUSED_TOPIC})
    agent = make(tmp_path, producer, mixed(40))
    with caplog.at_level(logging.WARNING, logger="edge_agent.agent"):
        run(agent, 1.5)
    # every charging reading went out; none waited behind the refused sector
    assert agent.sent_readings == 20
    # the substation ones are kept, counted, and not retried as an outage
    (q,) = quarantine(tmp_path)
    assert (q.sector, q.readings, q.reason) == (
        Sector.SUBSTATION,
        20,
        "topic_authorization_failed",
    )
    assert agent.refused_envelopes == q.envelopes
    # one refused request, then the hold-off quarantines the sector's envelopes unsent
    assert producer.refusals == 1
    assert m.QUARANTINE_READINGS.labels("agent-q", "substation")._value.get() == 20
    assert m.QUARANTINE_ENVELOPES.labels("agent-q", "substation")._value.get() == q.envelopes
    assert "broker unavailable" not in caplog.text
    said = [r for r in caplog.records if "not authorised" in r.getMessage()]
    assert len(said) == 1  # once per sector, not per envelope
    assert "requeue-quarantine" in said[0].getMessage()

    # a restart without rights: the quarantine is not sent again, the new readings flow
    producer2 = RefusingProducer({REFUSED_TOPIC})
    again = make(tmp_path, producer2, [r for r in mixed(8) if r.metric == "power_kw"])
    run(again, 0.8)
    assert again.sent_readings == 4
    assert producer2.refusals == 0
    assert quarantine(tmp_path)[0].readings == 20

    # the agent's rights changed: requeued, sent unchanged at the next start
    refused_bytes = sorted(
        o.payload for o in _outbox_with_refusals(tmp_path) if o.sector is Sector.SUBSTATION
    )
    (done,) = requeue_quarantine(tmp_path / "buf.db", "agent-q")
    assert (done.sector, done.readings) == (Sector.SUBSTATION, 20)
    assert quarantine(tmp_path) == []
    producer3 = RefusingProducer(set())
    last = make(tmp_path, producer3, [])
    run(last, 0.8)
    assert last.sent_readings == 20
    assert sorted(producer3.sent[REFUSED_TOPIC]) == refused_bytes  # byte for byte


def _outbox_with_refusals(tmp: Path) -> list[Outgoing]:
    """Every envelope in the outbox, quarantined ones included (requeued a copy first)."""
    import shutil

    copy = tmp / "copy"
    copy.mkdir()
    for suffix in ("", "-wal", "-shm"):
        src = tmp / f"buf.db{suffix}"
        if src.exists():
            shutil.copy(src, copy / src.name)
    requeue_quarantine(copy / "buf.db", "agent-q")
    b = Buffer(copy / "buf.db", "agent-q", max_bytes=16 << 20, max_age_s=3600)
    b.open()
    try:
        return list(b.unsent_outbox())
    finally:
        b.close()


def test_a_full_quarantine_evicts_its_oldest_counted_and_the_rest_keeps_flowing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The quarantine holds at most its share of the bound (here ~4 KB): past it, its oldest
    envelopes go, counted as quarantine_full (metric, one log line), while every reading of
    the authorised sector is delivered."""
    producer = RefusingProducer({REFUSED_TOPIC})
    buffer = Buffer(
        tmp_path / "buf.db", "agent-qf", max_bytes=16 << 20, max_age_s=3600, fsync="os",
        quarantine_max_share=4096 / (16 << 20),
    )  # fmt: skip
    agent = Agent(
        "agent-qf",
        [ListCollector(mixed(400))],
        buffer,
        lambda: producer,
        "t",
        Delivery(batch_max_readings=10, batch_max_delay_s=0.05, group_commit_s=0.0),
        replace_producer=False,
    )
    dropped = m.READINGS_DROPPED.labels("agent-qf", "quarantine_full")
    collector = agent.collectors[0]
    assert isinstance(collector, ListCollector)

    async def main() -> None:  # until every reading is handed over and the charging half sent
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        while not (collector.handed_over == 400 and agent.sent_readings >= 200):  # noqa: ASYNC110 - counters nobody signals
            await asyncio.sleep(0.05)
        stop.set()
        await task

    with caplog.at_level(logging.WARNING, logger="edge_agent.agent"):
        asyncio.run(asyncio.wait_for(main(), 120))
    assert agent.sent_readings == 200  # the charging half, all of it
    b = Buffer(tmp_path / "buf.db", "agent-qf", max_bytes=16 << 20, max_age_s=3600)
    b.open()
    (q,), pending = b.quarantine(), b.pending
    b.close()
    evicted = dropped._value.get()
    assert evicted > 0
    assert 0 < q.readings <= pending
    assert agent.sent_readings + evicted + pending == 400  # every reading sent, kept or counted
    said = [r.getMessage() for r in caplog.records if "quarantine_full" in r.getMessage()]
    assert len(said) == 1, said
