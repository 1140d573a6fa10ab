"""Accepted readings as the writer stores them: columns with database ids resolved.

The ingest's validator (:mod:`stream.validate`) fills them, the writer (:mod:`storage.writer`)
copies them into ``readings``; they live here, with their consumer, so that storage imports
nothing of the stream stage (docs/adr/0019-floors.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Rows:
    """Accepted readings, column-wise, with database ids resolved."""

    device_pk: list[int] = field(default_factory=list)
    metric_id: list[int] = field(default_factory=list)
    ts_us: list[int] = field(default_factory=list)
    value: list[float] = field(default_factory=list)
    quality: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.device_pk)

    def extend(self, other: Rows) -> None:
        self.device_pk.extend(other.device_pk)
        self.metric_id.extend(other.metric_id)
        self.ts_us.extend(other.ts_us)
        self.value.extend(other.value)
        self.quality.extend(other.quality)
