"""Per-reading validation of a decoded envelope: pure, no I/O, the hot path of ingest.

Returns the accepted readings as columns ready for the database and one
:class:`qilu.errors.Rejection` per refused reading, with a machine-readable reason:

    unknown_device, unknown_metric, bad_value, non_finite_value, value_out_of_range,
    timestamp_out_of_range, bad_quality
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from qilu.contract import Envelope
from qilu.devices import KINDS
from qilu.errors import Rejection

MIN_TS_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z
_QUALITIES = frozenset({0, 1, 2})


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


class Validator:
    """Validates envelopes against the registry; build once per device-index refresh."""

    def __init__(
        self,
        devices: dict[str, tuple[int, str]],
        metric_ids: dict[str, int],
        *,
        max_future_skew_s: float = 300.0,
    ) -> None:
        self._devices = devices
        # kind -> metric key -> (metric id, low, high)
        self._kinds: dict[str, dict[str, tuple[int, float, float]]] = {
            kind.key: {
                m.key: (metric_ids[m.key], m.low, m.high)
                for m in kind.metrics
                if m.key in metric_ids
            }
            for kind in KINDS.values()
        }
        self._skew_us = int(max_future_skew_s * 1_000_000)

    def knows(self, device_id: str) -> bool:
        return device_id in self._devices

    def validate(self, env: Envelope, now_us: int) -> tuple[Rows, list[Rejection]]:
        rows = Rows()
        rejected: list[Rejection] = []
        max_ts = now_us + self._skew_us
        devices, kinds = self._devices, self._kinds
        add_pk, add_m, add_ts = rows.device_pk.append, rows.metric_id.append, rows.ts_us.append
        add_v, add_q = rows.value.append, rows.quality.append
        for i, (dev, met, ts, val, q) in enumerate(
            zip(env.devices, env.metrics, env.ts_us, env.values, env.qualities, strict=True)
        ):
            known = devices.get(dev) if isinstance(dev, str) else None
            if known is None:
                rejected.append(Rejection(i, "unknown_device", repr(dev)[:80]))
                continue
            spec = kinds[known[1]].get(met) if isinstance(met, str) else None
            if spec is None:
                rejected.append(Rejection(i, "unknown_metric", f"{met!r} for {known[1]}"[:80]))
                continue
            if type(ts) is not int or not MIN_TS_US <= ts <= max_ts:
                rejected.append(Rejection(i, "timestamp_out_of_range", repr(ts)[:40]))
                continue
            tv = type(val)
            if tv is not float and tv is not int:
                rejected.append(Rejection(i, "bad_value", f"type {tv.__name__}"))
                continue
            if not math.isfinite(val):
                rejected.append(Rejection(i, "non_finite_value", repr(val)))
                continue
            if not spec[1] <= val <= spec[2]:
                rejected.append(
                    Rejection(i, "value_out_of_range", f"{val!r} not in [{spec[1]}, {spec[2]}]")
                )
                continue
            if type(q) is not int or q not in _QUALITIES:
                rejected.append(Rejection(i, "bad_quality", repr(q)[:20]))
                continue
            add_pk(known[0])
            add_m(spec[0])
            add_ts(ts)
            add_v(float(val))
            add_q(q)
        return rows, rejected
