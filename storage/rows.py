"""Accepted readings as the writer stores them: columns with database ids resolved.

The ingest's validator (:mod:`stream.validate`) fills them, the writer (:mod:`storage.writer`)
copies them into ``readings``; they live here, with their consumer, so that storage imports
nothing of the stream stage (docs/adr/0019-floors.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt


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


@dataclass(frozen=True, slots=True, eq=False)  # arrays compare element-wise
class RowArrays:
    """The same columns as numpy arrays, in the database's types: what the writer stores.

    The ingest's validator hands a whole batch over this way (stream/validate.py
    :meth:`~stream.validate.Validator.validate_batch`), and the writer builds the binary COPY
    stream, the liveness and the rollup ranges from it without a Python loop per reading
    (bench/ingest.py measures the cost per reading)."""

    device_pk: npt.NDArray[np.int32]
    metric_id: npt.NDArray[np.int16]
    ts_us: npt.NDArray[np.int64]
    value: npt.NDArray[np.float64]
    quality: npt.NDArray[np.int16]

    def __len__(self) -> int:
        return len(self.device_pk)

    @classmethod
    def of(cls, rows: Rows | RowArrays) -> RowArrays:
        """``rows`` as arrays (out-of-range ids or timestamps raise OverflowError)."""
        if isinstance(rows, RowArrays):
            return rows
        return cls(
            np.array(rows.device_pk, np.int32),
            np.array(rows.metric_id, np.int16),
            np.array(rows.ts_us, np.int64),
            np.array(rows.value, np.float64),
            np.array(rows.quality, np.int16),
        )

    @classmethod
    def concat(cls, parts: Sequence[Rows | RowArrays]) -> RowArrays:
        arrays = [cls.of(p) for p in parts]
        if len(arrays) == 1:
            return arrays[0]
        if not arrays:
            return cls.of(Rows())
        return cls(
            np.concatenate([a.device_pk for a in arrays]),
            np.concatenate([a.metric_id for a in arrays]),
            np.concatenate([a.ts_us for a in arrays]),
            np.concatenate([a.value for a in arrays]),
            np.concatenate([a.quality for a in arrays]),
        )
