"""Records lost past Kafka's retention when the ingest replays from the database's offsets,
per partition and per agent (migration 064, docs/operations.md, docs/adr/0016).

When the ingest resumes a partition from the offset the database stored
(storage/offsets.py :func:`~storage.offsets.replay_plan`) and the broker no longer holds
the records from there, those records are gone with the database. :class:`ReplayLosses`
(a :class:`storage.writer.TransactionPart`, written in the transaction of the ingest's next
batch) records:

* one ``replay_losses`` row per partition and loss: the offset range and its record count
  (exact), and, once read, the broker's time of the first record it still holds (the lost
  records were appended before it; only on topics with ``LogAppendTime``);
* one ``agent_gaps`` row per agent, reason ``kafka_retention``, read by ``/v1/gaps`` and
  the dashboards like the gaps agents report. Agents are the records' key, so a partition
  carries a fixed set of agents; the agents seen in the window of records that follow the
  loss (as many records as were lost, or up to the end of the partition, whichever comes
  first) are the agents taken to have lost records. Per agent:

  - ``end_ts`` (exact): the first reading time of the agent's first envelope after the loss;
  - ``start_ts`` (a bound): the last reading the database holds, before ``end_ts``, of the
    devices of that envelope (its own time when it holds none in the look-back);
  - ``dropped_readings`` (an estimate): the lost records are assumed to carry the same mix
    of agents and readings as the window: lost records x the agent's readings in the window
    / the window's records. An agent that sent nothing after the loss is not listed (its
    share is in the partition's count only), and an agent of the window may have lost
    nothing.

``boot_id`` is ``kafka:<topic>/<partition>@<first lost offset>`` and ``gap_no`` 0, so a loss
seen twice (the partition moved to another ingest before the report was written) is stored
once. The pure part, :class:`LossWindow`, does no I/O.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
from psycopg.rows import TupleRow

from storage.offsets import ReplayLoss, TopicPartitionKey

logger = logging.getLogger(__name__)

REASON = "kafka_retention"

_INSERT_LOSS = (
    "INSERT INTO replay_losses (topic, partition, first_offset, end_offset, records,"
    " committed_offset) VALUES (%s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (topic, partition, first_offset) DO NOTHING"
)
_REPORTED = (
    "UPDATE replay_losses SET agents_reported = true, agents = %s, first_kept_at = %s"
    " WHERE topic = %s AND partition = %s AND first_offset = %s AND NOT agents_reported"
)
# start_ts: the last stored reading of the envelope's devices before the agent resumed,
# looked for within the raw retention (the readings table's partitions are pruned by time)
_INSERT_GAP = (
    "INSERT INTO agent_gaps (agent_id, boot_id, gap_no, device_id, start_ts, end_ts,"
    " dropped_readings, reason)"
    " SELECT %(agent)s, %(boot)s, 0, NULL,"
    " coalesce((SELECT max(r.ts) FROM readings r JOIN devices d ON d.device_pk = r.device_pk"
    "   WHERE d.device_id = ANY(%(devices)s::text[]) AND r.ts < %(end)s"
    "   AND r.ts >= %(end)s - %(lookback)s * interval '1 second'), %(end)s),"
    " %(end)s, %(dropped)s, %(reason)s"
    " ON CONFLICT (agent_id, boot_id, gap_no) DO NOTHING"
)


def gap_boot_id(loss: ReplayLoss) -> str:
    return f"kafka:{loss.topic}/{loss.partition}@{loss.first_offset}"


@dataclass(slots=True)
class AgentResume:
    """An agent's first envelope after the loss and its share of the window."""

    first_offset: int
    first_reading_us: int
    devices: tuple[str, ...]
    records: int = 0
    readings: int = 0


@dataclass(frozen=True, slots=True)
class AgentGap:
    agent_id: str
    boot_id: str
    end_us: int  # exact: the agent's first reading after the loss
    devices: tuple[str, ...]  # of that envelope: where start_ts is looked up
    dropped_estimate: int


@dataclass(slots=True)
class LossWindow:
    """The records that follow one loss, until as many were read as were lost or the
    partition's end is reached (pure)."""

    loss: ReplayLoss
    seen: int = 0
    next_offset: int = -1  # records below it are counted (a batch read again is not)
    first_kept_us: int | None = None
    agents: dict[str, AgentResume] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.next_offset = self.loss.end_offset

    @property
    def full(self) -> bool:
        return self.seen >= self.loss.records

    def observe(
        self,
        offset: int,
        agent: str | None,
        readings: int,
        first_reading_us: int | None,
        devices: tuple[str, ...],
        appended_us: int | None,
    ) -> None:
        """One record of the partition (``agent`` None: not decodable, counted only)."""
        if offset < self.next_offset or self.full:
            return
        if self.seen == 0:
            self.first_kept_us = appended_us
        self.seen += 1
        self.next_offset = offset + 1
        if agent is None:
            return
        a = self.agents.get(agent)
        if a is None and first_reading_us is not None:
            a = self.agents[agent] = AgentResume(offset, first_reading_us, devices)
        if a is not None:
            a.records += 1
            a.readings += readings

    def gaps(self) -> list[AgentGap]:
        """Per agent seen in the window, the estimate of the readings it lost."""
        if not self.seen:
            return []
        boot = gap_boot_id(self.loss)
        return [
            AgentGap(
                agent,
                boot,
                a.first_reading_us,
                a.devices,
                round(self.loss.records * a.readings / self.seen),
            )
            for agent, a in sorted(self.agents.items())
        ]


class ReplayLosses:
    """Losses past Kafka's retention, written with the ingest's next batch (a
    :class:`storage.writer.TransactionPart`). What is handed over stays until a transaction
    commits it: a batch abandoned does not make a loss forgotten."""

    def __init__(self, lookback_s: float) -> None:
        self._lookback_s = lookback_s
        self._losses: list[ReplayLoss] = []
        self._windows: dict[TopicPartitionKey, LossWindow] = {}
        self._done: list[LossWindow] = []
        self._writing: tuple[list[ReplayLoss], list[LossWindow]] = ([], [])
        self._known: set[tuple[str, int, int]] = set()

    # -- the consumer's side (pure)
    def lost(self, loss: ReplayLoss) -> bool:
        """A loss found on a partition assignment; False when this process knew it already
        (a rebalance before the batches after it committed shows it again)."""
        key = (loss.topic, loss.partition, loss.first_offset)
        if key in self._known:
            return False
        self._known.add(key)
        self._losses.append(loss)
        self._windows[loss.topic, loss.partition] = LossWindow(loss)
        return True

    def window(self, topic: str, partition: int) -> LossWindow | None:
        return self._windows.get((topic, partition))

    def windows(self) -> list[TopicPartitionKey]:
        return list(self._windows)

    def close(self, topic: str, partition: int) -> None:
        """The window is complete (full, or the end of the partition was reached)."""
        w = self._windows.pop((topic, partition), None)
        if w is not None:
            self._done.append(w)

    def forget(self, topic: str, partition: int) -> None:
        """The partition was revoked before its window completed: its next owner sees the
        loss again (the database's offset has not moved past it) unless a batch of ours
        committed after it; then the per-agent part is not reported (logged)."""
        w = self._windows.pop((topic, partition), None)
        if w is not None and w.seen:
            logger.warning(
                "%s/%d: partition revoked before the agents of the %d lost record(s) were "
                "known; the loss is recorded per partition only",
                topic,
                partition,
                w.loss.records,
            )

    # -- the transaction part
    @property
    def pending(self) -> int:
        return len(self._losses) + len(self._done)

    def write(self, cur: psycopg.Cursor[TupleRow]) -> None:
        losses, done = list(self._losses), list(self._done)
        for loss in losses:
            cur.execute(
                _INSERT_LOSS,
                (
                    loss.topic,
                    loss.partition,
                    loss.first_offset,
                    loss.end_offset,
                    loss.records,
                    loss.committed,
                ),
            )
        for w in done:
            gaps = w.gaps()
            for g in gaps:
                cur.execute(
                    _INSERT_GAP,
                    {
                        "agent": g.agent_id,
                        "boot": g.boot_id,
                        "devices": list(g.devices),
                        "end": datetime.fromtimestamp(g.end_us / 1e6, UTC),
                        "lookback": self._lookback_s,
                        "dropped": g.dropped_estimate,
                        "reason": REASON,
                    },
                )
            kept = (
                None
                if w.first_kept_us is None
                else datetime.fromtimestamp(w.first_kept_us / 1e6, UTC)
            )
            loss = w.loss
            cur.execute(_REPORTED, (len(gaps), kept, loss.topic, loss.partition, loss.first_offset))
        self._writing = (losses, done)

    def committed(self) -> None:
        losses, done = self._writing
        self._losses = [x for x in self._losses if all(x is not y for y in losses)]
        self._done = [w for w in self._done if all(w is not y for y in done)]
        for w in done:
            logger.warning(
                "%s/%d: %d record(s) lost past Kafka's retention reported for %d agent(s) "
                "(agent_gaps, reason %s)",
                w.loss.topic,
                w.loss.partition,
                w.loss.records,
                len(w.agents),
                REASON,
            )
        self._writing = ([], [])

    def discard(self) -> None:
        self._writing = ([], [])  # kept: written with the next batch that commits
