"""Gap records from edge agents -> ``agent_gaps``, stored exactly once.

Agents send the readings they had to drop as gap records in envelopes of their own (key
``"g"`` of the wire envelope, docs/adr/0001). The ingest consumer hands every decoded envelope
that carries gaps to :class:`GapSink` and flushes it with the readings, before it commits the
Kafka offsets; the unique (agent id, boot id, gap number) makes a redelivered envelope a no-op.
"""

from __future__ import annotations

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from qilu.contract import Envelope
from qilu.errors import BackpressureError, RetryableError

_INSERT = (
    "INSERT INTO agent_gaps (agent_id, boot_id, gap_no, device_id, start_ts, end_ts,"
    " dropped_readings, reason)"
    " SELECT a, b, n, d, 'epoch'::timestamptz + s * interval '1 microsecond',"
    " 'epoch'::timestamptz + e * interval '1 microsecond', c, r"
    " FROM unnest(%s::text[], %s::text[], %s::int4[], %s::text[], %s::int8[], %s::int8[],"
    " %s::int8[], %s::text[]) AS u(a, b, n, d, s, e, c, r)"
    " ON CONFLICT (agent_id, boot_id, gap_no) DO NOTHING"
)
Row = tuple[str, str, int, str | None, int, int, int, str]


class GapSink:
    """Batching sink for gap records: add per envelope, flush per batch (one transaction)."""

    def __init__(self, pool: ConnectionPool, *, max_rows_per_statement: int = 1000) -> None:
        self._pool = pool
        self._chunk = max(1, max_rows_per_statement)
        self._pending: list[Row] = []

    def add(self, env: Envelope) -> None:
        self._pending += [
            (env.agent_id, g.boot_id, g.gap_no, g.device_id, g.start_us, g.end_us, g.dropped,
             g.reason)
            for g in env.gaps
        ]  # fmt: skip

    @property
    def pending(self) -> int:
        return len(self._pending)

    def discard(self) -> None:
        self._pending = []

    def flush(self) -> int:
        """Store the pending gaps; returns how many were new. Raises RetryableError."""
        rows = self._pending
        if not rows:
            return 0
        stored = 0
        try:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                for lo in range(0, len(rows), self._chunk):
                    part = rows[lo : lo + self._chunk]
                    cur.execute(_INSERT, [list(col) for col in zip(*part, strict=True)])
                    stored += cur.rowcount
        except PoolTimeout as exc:
            raise BackpressureError(f"no database connection free: {exc}", 1.0) from exc
        except psycopg.OperationalError as exc:
            raise RetryableError(f"database unavailable: {exc}") from exc
        self._pending = []
        return stored
