"""The WAL archiver's state as any role can read it: one query, and what it means.

``qilu backup status`` (ops/backup.py) judges it, the Grafana alert rule
qilu-wal-archive-stalled (dashboards/alerts.py) runs the same query; it lives in storage so that
both read it without the dashboards importing the control plane (docs/adr/0019-floors.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.rows import TupleRow

from qilu.errors import ServiceError

# The archiver's state, readable by any role (pg_stat_archiver and the current WAL file): one
# row, also the query of the Grafana alert rule (dashboards/alerts.py), whose value is the
# last column
ARCHIVE_SQL = """WITH a AS (
  SELECT s.archived_count, s.last_archived_wal, s.last_archived_time, s.failed_count,
    s.last_failed_wal, s.last_failed_time, pg_walfile_name(pg_current_wal_lsn()) AS current_wal,
    pg_postmaster_start_time() AS started, now() AS now,
    current_setting('archive_mode') AS archive_mode,
    s.last_failed_time IS NOT NULL AND (s.last_archived_time IS NULL
      OR s.last_failed_time > s.last_archived_time) AS failing
  FROM pg_stat_archiver s),
n AS (
  SELECT a.*,
    ('x' || lpad(substr(current_wal, 9, 8), 16, '0'))::bit(64)::int8 * 256
      + ('x' || lpad(substr(current_wal, 17, 8), 16, '0'))::bit(64)::int8 AS cur_seg,
    CASE WHEN last_archived_wal IS NULL THEN -1
         WHEN last_archived_wal ~ '^[0-9A-F]{24}'
         THEN ('x' || lpad(substr(last_archived_wal, 9, 8), 16, '0'))::bit(64)::int8 * 256
           + ('x' || lpad(substr(last_archived_wal, 17, 8), 16, '0'))::bit(64)::int8
    END AS last_seg
  FROM a)
SELECT archived_count, last_archived_wal, last_archived_time, failed_count, last_failed_wal,
  last_failed_time, current_wal, started, now, archive_mode,
  CASE WHEN archive_mode = 'off' THEN 0.0
       WHEN last_seg IS NULL AND NOT failing THEN 0.0
       WHEN last_seg IS NOT NULL AND cur_seg - last_seg <= 1 THEN 0.0
       ELSE extract(epoch FROM (now - coalesce(last_archived_time, started)))::float8
  END AS archive_lag_s
FROM n"""


@dataclass(frozen=True, slots=True)
class ArchiverState:
    archived_count: int
    last_archived_wal: str | None
    last_archived_time: datetime | None
    failed_count: int
    last_failed_wal: str | None
    last_failed_time: datetime | None
    current_wal: str
    started: datetime
    now: datetime
    archive_mode: str

    @property
    def failing(self) -> bool:
        """The last attempt to archive failed (PostgreSQL keeps retrying)."""
        return self.last_failed_time is not None and (
            self.last_archived_time is None or self.last_failed_time > self.last_archived_time
        )


_SEGMENT = re.compile(r"^[0-9A-F]{24}")


def segment_number(wal_file: str) -> int | None:
    """The segment number of a WAL file name (timeline left out; 16 MB segments), None
    for a timeline history file (``00000002.history``, archived at a promotion)."""
    if not _SEGMENT.match(wal_file):
        return None
    return int(wal_file[8:16], 16) * 256 + int(wal_file[16:24], 16)


def pending_segments(state: ArchiverState) -> int | None:
    """Completed WAL segments not archived yet (the current one is still being written);
    None when the last file archived was not a segment (unknown)."""
    current = segment_number(state.current_wal) or 0
    last = segment_number(state.last_archived_wal) if state.last_archived_wal else -1
    if last is None:
        return None
    return max(0, current - last - 1)


def archive_lag_s(state: ArchiverState) -> float:
    """How long archiving has made no progress while segments wait for it (0: none waits;
    when that is unknown, while the last attempt failed). The same rule as the last column
    of :data:`ARCHIVE_SQL`."""
    pending = pending_segments(state)
    if state.archive_mode == "off" or pending == 0 or (pending is None and not state.failing):
        return 0.0
    since = state.last_archived_time or state.started
    return max(0.0, (state.now - since).total_seconds())


def read_archiver(conn: psycopg.Connection[TupleRow]) -> ArchiverState:
    row = conn.execute(ARCHIVE_SQL).fetchone()
    if row is None:
        raise ServiceError("pg_stat_archiver returned no row")
    return ArchiverState(
        archived_count=int(row[0]),
        last_archived_wal=row[1],
        last_archived_time=row[2],
        failed_count=int(row[3]),
        last_failed_wal=row[4],
        last_failed_time=row[5],
        current_wal=str(row[6]),
        started=row[7],
        now=row[8],
        archive_mode=str(row[9]),
    )
