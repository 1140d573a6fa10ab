"""The readings writer: a batching sink. Add per record, flush per batch, one transaction.

The ingest consumer commits Kafka offsets only after :meth:`ReadingsSink.flush` returned, i.e.
after the database transaction committed. The natural key (device, metric, time) makes a
redelivered batch a no-op (``ON CONFLICT DO NOTHING``); liveness moves only forward
(``GREATEST``), so it is idempotent too. A lost connection raises RetryableError (the pool
replaces the connection); a saturated database raises BackpressureError. Nothing is dropped:
the pending batch stays in the sink until a flush succeeds or the caller discards it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import psycopg
from psycopg import errors as pgerrors
from psycopg_pool import ConnectionPool, PoolTimeout

from qilu.errors import BackpressureError, RetryableError
from stream.validate import Rows

logger = logging.getLogger(__name__)

_INSERT = (
    "INSERT INTO readings (device_pk, metric_id, ts, value, quality)"
    " SELECT d, m, 'epoch'::timestamptz + t * interval '1 microsecond', v, q"
    " FROM unnest(%s::int4[], %s::int2[], %s::int8[], %s::float8[], %s::int2[]) AS u(d, m, t, v, q)"
    " ON CONFLICT DO NOTHING"
)
_LIVENESS = (
    "INSERT INTO device_liveness (device_pk, last_seen)"
    " SELECT d, 'epoch'::timestamptz + t * interval '1 microsecond'"
    " FROM unnest(%s::int4[], %s::int8[]) AS u(d, t) ORDER BY d"
    " ON CONFLICT (device_pk) DO UPDATE"
    " SET last_seen = GREATEST(device_liveness.last_seen, EXCLUDED.last_seen)"
)
# server-side conditions that mean "the database is overloaded, come back later"
_SATURATED = (
    pgerrors.TooManyConnections,
    pgerrors.QueryCanceled,  # statement_timeout
    pgerrors.LockNotAvailable,
    pgerrors.DiskFull,
    pgerrors.OutOfMemory,
)


@dataclass(frozen=True, slots=True)
class WriteResult:
    offered: int
    inserted: int
    seconds: float

    @property
    def duplicates(self) -> int:
        return self.offered - self.inserted


class ReadingsSink:
    def __init__(self, pool: ConnectionPool, *, max_rows_per_statement: int = 0) -> None:
        self._pool = pool
        self._chunk = max_rows_per_statement if max_rows_per_statement > 0 else 1 << 30
        self._pending = Rows()

    def add(self, rows: Rows) -> None:
        self._pending.extend(rows)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def discard(self) -> None:
        """Forget the pending batch (its Kafka records will be redelivered to someone)."""
        self._pending = Rows()

    def flush(self) -> WriteResult:
        """Write the pending rows in one transaction; on success the batch is cleared."""
        rows = self._pending
        start = time.perf_counter()
        if not rows:
            return WriteResult(0, 0, 0.0)
        last: dict[int, int] = {}
        for d, t in zip(rows.device_pk, rows.ts_us, strict=True):
            if t > last.get(d, -1):
                last[d] = t
        inserted = 0
        try:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                for lo in range(0, len(rows), self._chunk):
                    hi = lo + self._chunk
                    cur.execute(
                        _INSERT,
                        (
                            rows.device_pk[lo:hi],
                            rows.metric_id[lo:hi],
                            rows.ts_us[lo:hi],
                            rows.value[lo:hi],
                            rows.quality[lo:hi],
                        ),
                    )
                    inserted += cur.rowcount
                devs = sorted(last)
                for lo in range(0, len(devs), self._chunk):
                    part = devs[lo : lo + self._chunk]
                    cur.execute(_LIVENESS, (part, [last[d] for d in part]))
        except _SATURATED as exc:
            raise BackpressureError(f"database saturated: {exc}", retry_after=1.0) from exc
        except PoolTimeout as exc:
            raise BackpressureError(f"no database connection free: {exc}", 1.0) from exc
        except psycopg.OperationalError as exc:
            raise RetryableError(f"database unavailable: {exc}") from exc
        self._pending = Rows()
        return WriteResult(len(rows), inserted, time.perf_counter() - start)
