"""Columnar export: rows in batches -> Arrow IPC stream or Parquet bytes, as they are made.

Each batch becomes one Arrow record batch (IPC) or one Parquet row group, and the bytes the
writer produced are handed on at once, so memory stays at about one batch whatever the range.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.ipc  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

SCHEMA = pa.schema(
    [
        pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("device_id", pa.string(), nullable=False),
        pa.field("site_id", pa.string(), nullable=False),
        pa.field("city_code", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("metric", pa.string(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
        pa.field("quality", pa.int16(), nullable=False),
    ]
)


class ExportFormat(enum.StrEnum):
    PARQUET = "parquet"
    ARROW = "arrow"

    @property
    def media_type(self) -> str:
        if self is ExportFormat.PARQUET:
            return "application/vnd.apache.parquet"
        return "application/vnd.apache.arrow.stream"

    @property
    def suffix(self) -> str:
        return "parquet" if self is ExportFormat.PARQUET else "arrows"


class _Chunks:
    """A write-only file object that keeps what was written until taken."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._pos = 0
        self.closed = False

    def write(self, data: Any) -> int:
        b = bytes(data)
        self._parts.append(b)
        self._pos += len(b)
        return len(b)

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def to_batch(rows: list[tuple[Any, ...]]) -> pa.RecordBatch:
    cols: list[list[Any]] = [list(c) for c in zip(*rows, strict=True)] if rows else []
    if not cols:
        cols = [[] for _ in SCHEMA]
    arrays = [pa.array(c, type=f.type) for c, f in zip(cols, SCHEMA, strict=True)]
    return pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)


def encode(batches: Iterable[list[tuple[Any, ...]]], fmt: ExportFormat) -> Iterator[bytes]:
    """Bytes of the whole file, yielded batch by batch (a valid file even with no rows)."""
    sink = _Chunks()
    stream = pa.PythonFile(sink, mode="w")
    writer: pq.ParquetWriter | pyarrow.ipc.RecordBatchStreamWriter
    if fmt is ExportFormat.PARQUET:
        writer = pq.ParquetWriter(stream, SCHEMA, compression="zstd")
    else:
        writer = pyarrow.ipc.new_stream(stream, SCHEMA)
    try:
        for rows in batches:
            writer.write_batch(to_batch(rows))
            chunk = sink.take()
            if chunk:
                yield chunk
    finally:
        writer.close()
    tail = sink.take()
    if tail:
        yield tail


def filename(fmt: ExportFormat, start: datetime, end: datetime) -> str:
    return f"readings_{start:%Y%m%dT%H%M%SZ}_{end:%Y%m%dT%H%M%SZ}.{fmt.suffix}"
