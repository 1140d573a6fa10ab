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

Also here, pure: :class:`OncePerInterval` for the ingest's refusal log lines and
:func:`describe`, a record of the topic decoded for ``qilu deadletters show``
(docs/adr/0012-dead-letters.md). A batch's refusals summed for the summary table are
:class:`storage.deadletter_tally.DeadLetterTally`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from qilu.contract import decode, from_us
from qilu.errors import DecodeError, Rejection
from storage.deadletter_tally import clean_text


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


def key_agent(key: bytes | None) -> str:
    """The agent an undecodable record came from, as far as the record key says: agents key
    their records with their id (edge-agent/edge_agent/agent.py). Unauthenticated: a hint."""
    return clean_text(key.decode("utf-8", "replace")) if key else ""


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
