"""Coverage answers with a short cache: many clients, one database computation per interval."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

from psycopg_pool import ConnectionPool

from qilu.catalog import Catalog
from storage import coverage


class CoverageService:
    def __init__(self, pool: ConnectionPool, catalog: Catalog, cache_s: float) -> None:
        self.pool, self.catalog, self._cache_s = pool, catalog, cache_s
        self._lock = threading.Lock()
        self._cached: tuple[float, list[coverage.TargetCoverage]] | None = None

    def current(self) -> list[coverage.TargetCoverage]:
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < self._cache_s:
                return self._cached[1]
            with self.pool.connection() as conn:
                rows = coverage.compute(conn, self.catalog, datetime.now(UTC))
            self._cached = (time.monotonic(), rows)
            return rows

    def ping(self) -> None:
        with self.pool.connection(timeout=2) as conn:
            conn.execute("SELECT 1")
