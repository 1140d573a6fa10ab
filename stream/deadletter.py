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
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from qilu.errors import Rejection


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
