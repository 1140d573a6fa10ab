"""Dead-letter records: the original bytes, untouched, with the reason in headers.

Headers (all UTF-8):
    qilu.reason    machine-readable reason: malformed, unsupported_version, oversized,
                   rejected_readings (some readings of a valid envelope were refused),
                   rejected_gaps (some gap records were refused: stream/validate.py),
                   unsigned, unknown_agent, revoked_agent, unknown_key, revoked_key,
                   bad_signature (agent authentication: docs/adr/0010), ...
    qilu.detail    human-readable detail
    qilu.source    "<topic>/<partition>/<offset>" of the original record (dedupe key: the
                   dead-letter topic is at-least-once)
    qilu.rejected  for rejected_readings and rejected_gaps: JSON list of
                   {"i": index, "reason": ..., "detail": ...}

Also here, pure: :class:`DeadLetterTally`, a batch's refusals summed for the summary table
the ingest writes in the batch's transaction (storage/deadletters.py), :class:`OncePerInterval`
for the ingest's refusal log lines, and :func:`describe`, a record of the topic decoded for
``qilu deadletters show`` (docs/adr/0012-dead-letters.md).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from qilu.contract import decode, from_us
from qilu.errors import DecodeError, Rejection


@dataclass(frozen=True, slots=True)
class DeadLetter:
    key: bytes | None
    value: bytes
    reason: str
    detail: str
    source: str
    rejected: tuple[Rejection, ...] = ()

    def headers(self) -> list[tuple[str, bytes]]:
        hdrs = [
            ("qilu.reason", self.reason.encode()),
            ("qilu.detail", self.detail.encode()),
            ("qilu.source", self.source.encode()),
        ]
        if self.rejected:
            hdrs.append(("qilu.rejected", encode_rejections(self.rejected)))
        return hdrs


def encode_rejections(rejected: Sequence[Rejection]) -> bytes:
    return json.dumps(
        [{"i": r.index, "reason": r.reason, "detail": r.detail} for r in rejected],
        ensure_ascii=False,
    ).encode()


def decode_headers(headers: Sequence[tuple[str, bytes | None]]) -> dict[str, str]:
    return {k: (v or b"").decode() for k, v in headers}


# -- the summary the ingest writes with each batch (storage/deadletters.py, docs/adr/0012) -------
_MINUTE_US = 60_000_000
MAX_TEXT = 256  # agent and device ids are identifiers; a longer one is cut
MAX_DETAIL = 300


def clean_text(value: object, limit: int = MAX_TEXT) -> str:
    """An identifier or detail as the summary stores it: a string (``repr`` of anything else),
    at most ``limit`` characters, no NUL (PostgreSQL text cannot hold one)."""
    text = value if isinstance(value, str) else repr(value)
    return text[:limit].replace("\x00", "\\x00")


def key_agent(key: bytes | None) -> str:
    """The agent an undecodable record came from, as far as the record key says: agents key
    their records with their id (edge-agent/edge_agent/agent.py). Unauthenticated: a hint."""
    return clean_text(key.decode("utf-8", "replace")) if key else ""


@dataclass(frozen=True, slots=True)
class Tallied:
    """What one dead-letter record adds to one summary row."""

    topic: str
    partition: int
    offset: int
    bucket_us: int  # the minute (µs since the epoch) the ingest refused it
    agent_id: str
    reason: str
    device_id: str  # "" for a whole-envelope refusal
    records: int
    readings: int
    detail: str


@dataclass(slots=True)
class _Acc:
    records: int
    readings: int
    source: str
    detail: str
    offset: int


# (bucket µs, agent, reason, device, records, readings, example source, example detail)
SummaryRow = tuple[int, str, str, str, int, int, str, str]


class DeadLetterTally:
    """The batch's dead letters, summed for ``deadletter_summary``. Pure: no I/O.

    Filled while the ingest validates a batch (only refused records and readings touch it, so
    the good readings' hot path pays nothing), written by :class:`storage.deadletters.
    SummaryWriter` in the batch's transaction, forgotten with the batch when it is aborted.
    Each entry keeps its source record's partition and offset, so that records counted by an
    earlier transaction (a batch read again) are left out: :meth:`rows`.
    """

    def __init__(self) -> None:
        self._pending: list[Tallied] = []

    @property
    def pending(self) -> int:
        return len(self._pending)

    def entries(self) -> list[Tallied]:
        return list(self._pending)

    def clear(self) -> None:
        self._pending = []

    def add_envelope(
        self,
        source: tuple[str, int, int],
        now_us: int,
        agent_id: str,
        reason: str,
        detail: str,
        readings: int = 0,
    ) -> None:
        """A record refused whole (undecodable, unauthenticated) or its gap records."""
        topic, partition, offset = source
        self._pending.append(
            Tallied(
                topic,
                partition,
                offset,
                now_us - now_us % _MINUTE_US,
                clean_text(agent_id),
                clean_text(reason, 64),
                "",
                1,
                readings,
                clean_text(detail, MAX_DETAIL),
            )
        )

    def add_readings(
        self,
        source: tuple[str, int, int],
        now_us: int,
        agent_id: str,
        devices: Sequence[object],
        rejected: Sequence[Rejection],
    ) -> None:
        """Readings of a valid envelope refused one by one: one entry per (reason, device)."""
        topic, partition, offset = source
        groups: dict[tuple[str, str], tuple[int, str]] = {}
        for r in rejected:
            # a device id that is not a string (nil, a number) or is empty shows as its repr:
            # device "" marks a whole-envelope refusal
            dev = devices[r.index] if 0 <= r.index < len(devices) else None
            key = (r.reason, clean_text(repr(dev) if dev == "" else dev))
            got = groups.get(key)
            groups[key] = (1, r.detail) if got is None else (got[0] + 1, got[1])
        bucket = now_us - now_us % _MINUTE_US
        agent = clean_text(agent_id)
        for (reason, dev), (count, detail) in groups.items():
            self._pending.append(
                Tallied(
                    topic,
                    partition,
                    offset,
                    bucket,
                    agent,
                    clean_text(reason, 64),
                    dev,
                    1,
                    count,
                    clean_text(detail, MAX_DETAIL),
                )
            )

    def rows(
        self, marks: dict[tuple[str, int], int]
    ) -> tuple[list[SummaryRow], dict[tuple[str, int], int]]:
        """The summary rows to add and the new marks, leaving out every entry whose record lies
        before its partition's mark (``marks``: (topic, partition) -> next offset to count).

        Rows come merged per key and sorted by it, so one upsert statement touches each row
        once and concurrent writers lock rows in the same order."""
        merged: dict[tuple[int, str, str, str], _Acc] = {}
        new_marks: dict[tuple[str, int], int] = {}
        for e in self._pending:
            tp = (e.topic, e.partition)
            if e.offset < marks.get(tp, 0):
                continue  # counted by an earlier transaction
            if e.offset + 1 > new_marks.get(tp, 0):
                new_marks[tp] = e.offset + 1
            source = f"{e.topic}/{e.partition}/{e.offset}"
            key = (e.bucket_us, e.agent_id, e.reason, e.device_id)
            got = merged.get(key)
            if got is None:
                merged[key] = _Acc(e.records, e.readings, source, e.detail, e.offset)
                continue
            got.records += e.records
            got.readings += e.readings
            if e.offset >= got.offset:  # the example is the newest record
                got.source, got.detail, got.offset = source, e.detail, e.offset
        rows: list[SummaryRow] = [
            (b, a, r, d, v.records, v.readings, v.source, v.detail)
            for (b, a, r, d), v in sorted(merged.items())
        ]
        return rows, new_marks


class OncePerInterval:
    """Log a (agent, reason) the first time it is seen, then at most once per ``interval_s``
    with how many came meanwhile: a misbehaving agent fills no log. Pure: the caller passes
    the clock."""

    # keys are partly chosen by the sender (an undecodable record's key, an unknown agent's
    # id): past this many, keys whose interval is over are forgotten (they would be logged
    # at their next appearance anyway), so random ids cannot grow the memory without bound
    MAX_KEYS = 10_000

    def __init__(self, interval_s: float) -> None:
        self._interval = interval_s
        self._last: dict[tuple[str, str], float] = {}  # key -> when it was last logged
        self._since: dict[tuple[str, str], int] = {}  # key -> records since then

    def due(self, seen: dict[tuple[str, str], int], now: float) -> list[tuple[str, str, int]]:
        """``seen``: (agent, reason) -> records in this batch. Returns what to log now, as
        (agent, reason, records since it was last logged)."""
        out = []
        for key, n in sorted(seen.items()):
            count = self._since.get(key, 0) + n
            last = self._last.get(key)
            if last is None or now - last >= self._interval:
                out.append((key[0], key[1], count))
                self._last[key] = now
                self._since[key] = 0
            else:
                self._since[key] = count
        if len(self._last) > self.MAX_KEYS:
            for key in [k for k, t in self._last.items() if now - t >= self._interval]:
                del self._last[key], self._since[key]
        return out


# -- reading the dead-letter topic back (qilu deadletters tail / show) ---------------------------
@dataclass(frozen=True, slots=True)
class StoredLetter:
    """One record of the dead-letter topic, as a consumer fetched it."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: dict[str, str]

    @property
    def reason(self) -> str:
        return self.headers.get("qilu.reason", "")

    @property
    def agent_id(self) -> str:
        """The envelope's agent, or the record key's when the bytes do not decode."""
        try:
            return decode(self.value).agent_id
        except DecodeError:
            return key_agent(self.key)


def describe(letter: StoredLetter, *, max_readings: int = 1000) -> dict[str, object]:
    """A dead letter decoded for a person: why, from where, and what the envelope held, each
    refused reading next to its reason. Undecodable bytes are shown as hex (the first 512)."""
    h = letter.headers
    out: dict[str, object] = {
        "dead_letter": f"{letter.partition}/{letter.offset}",
        "refused_at": datetime.fromtimestamp(letter.timestamp_ms / 1000, UTC).isoformat(),
        "reason": h.get("qilu.reason", ""),
        "detail": h.get("qilu.detail", ""),
        "source": h.get("qilu.source", ""),
        "key": letter.key.decode("utf-8", "replace") if letter.key else None,
    }
    refused: dict[int, tuple[str, str]] = {}
    if "qilu.rejected" in h:
        try:
            items = json.loads(h["qilu.rejected"])
        except ValueError:
            items = []
        for it in items if isinstance(items, list) else []:
            if isinstance(it, dict) and isinstance(it.get("i"), int):
                refused[it["i"]] = (str(it.get("reason", "")), str(it.get("detail", "")))
    try:
        env = decode(letter.value)
    except DecodeError as exc:
        out["bytes"] = len(letter.value)
        out["hex"] = letter.value[:512].hex()
        out["decode_error"] = str(exc)
        return out
    gaps_refused = h.get("qilu.reason") == "rejected_gaps"
    readings: list[dict[str, object]] = []
    for i, (dev, met, ts, val, q) in enumerate(
        zip(env.devices, env.metrics, env.ts_us, env.values, env.qualities, strict=True)
    ):
        if i >= max_readings:
            break
        row: dict[str, object] = {
            "i": i,
            "device_id": dev,
            "metric": met,
            "ts": _iso_us(ts),
            "value": val if isinstance(val, int | float | str | None) else repr(val),
            "quality": q,
        }
        if not gaps_refused and i in refused:
            row["refused"], row["why"] = refused[i]
        readings.append(row)
    out["envelope"] = {
        "agent_id": env.agent_id,
        "boot_id": env.boot_id,
        "seq": env.seq,
        "sent_at": _iso_us(env.sent_at_us),
        "readings": len(env),
        "gaps": len(env.gaps),
    }
    out["readings"] = readings
    if env.gaps:
        out["gaps"] = [
            {
                "i": i,
                "boot_id": g.boot_id,
                "gap_no": g.gap_no,
                "device_id": g.device_id,
                "dropped": g.dropped,
                "reason": g.reason,
                **(
                    {"refused": refused[i][0], "why": refused[i][1]}
                    if gaps_refused and i in refused
                    else {}
                ),
            }
            for i, g in enumerate(env.gaps[:max_readings])
        ]
    return out


def _iso_us(ts: object) -> object:
    """Microseconds since the epoch as ISO 8601, or the value itself if it is not one."""
    if type(ts) is not int:
        return repr(ts)
    try:
        return from_us(ts).isoformat()
    except (OverflowError, OSError, ValueError):
        return ts
