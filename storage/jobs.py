"""TimescaleDB's background jobs of the platform (timescale mode): which they are, how they fare.

A native TimescaleDB server runs the jobs by itself: the rollup refresh job of migration 051
(``qilu_refresh_rollups_job``) and the compression and retention policies. When a run fails,
the server records it (``timescaledb_information.job_stats``, ``job_errors``) and backs off
before the next try, minutes to hours; nothing fails loudly. This module reads those views
(:func:`job_health`), turns their rows into :class:`JobHealth` without I/O (:func:`from_rows`)
and publishes them as the ``qilu_storage_job_failing`` and ``qilu_storage_job_backoff_seconds``
gauges (:func:`publish`) for the alert ``qilu-storage-job-failing`` and the pipeline dashboard.
``qilu storage status`` prints them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from storage import metrics

REFRESH_JOB = "qilu_refresh_rollups_job"  # migration 051
# the platform's relations: the raw hypertable and the continuous aggregates
RELATIONS = ("readings", "readings_1m", "readings_1h", "site_liveness_1h")

JOB_RELATION = "coalesce(c.view_name, j.hypertable_name, 'rollups')"
JOBS_PARAMS: dict[str, Any] = {"relations": list(RELATIONS), "refresh": REFRESH_JOB}


def jobs_sql(columns: str, joins: str = "") -> str:
    """A query over the jobs of this schema: the policies on our relations (a continuous
    aggregate's policies sit on its materialization hypertable) and the refresh job, whose
    relation (:data:`JOB_RELATION`) is "rollups". Run it with :data:`JOBS_PARAMS`."""
    return (
        f"SELECT {columns} FROM timescaledb_information.jobs j {joins}"  # noqa: S608 - code's own
        " LEFT JOIN timescaledb_information.continuous_aggregates c"
        "   ON c.materialization_hypertable_schema = j.hypertable_schema"
        "  AND c.materialization_hypertable_name = j.hypertable_name"
        " WHERE (coalesce(c.view_schema, j.hypertable_schema) = current_schema()"
        "        AND coalesce(c.view_name, j.hypertable_name) = ANY(%(relations)s))"
        "    OR (j.proc_schema = current_schema() AND j.proc_name = %(refresh)s)"
        " ORDER BY j.job_id"
    )


# Timestamps the server has not set yet are -infinity there (no Python datetime): NULL here.
HEALTH_SQL = jobs_sql(
    f"j.job_id, {JOB_RELATION}, j.proc_name, j.schedule_interval,"  # noqa: S608 - constants
    " s.last_run_status, s.job_status,"
    " CASE WHEN isfinite(s.last_run_started_at) THEN s.last_run_started_at END,"
    " CASE WHEN isfinite(s.last_successful_finish) THEN s.last_successful_finish END,"
    " CASE WHEN isfinite(coalesce(s.next_start, j.next_start))"
    "  THEN coalesce(s.next_start, j.next_start) END,"
    " coalesce(s.total_runs, 0), coalesce(s.total_failures, 0),"
    " (SELECT e.err_message FROM timescaledb_information.job_errors e"
    "   WHERE e.job_id = j.job_id ORDER BY e.start_time DESC NULLS LAST LIMIT 1)",
    "LEFT JOIN timescaledb_information.job_stats s ON s.job_id = j.job_id",
)


@dataclass(frozen=True, slots=True)
class JobHealth:
    """One job as the server last recorded it."""

    job_id: int
    relation: str  # "readings", a continuous aggregate, or "rollups" (the refresh job)
    policy: str  # the job's procedure: policy_retention, qilu_refresh_rollups_job, ...
    schedule_interval: timedelta
    last_status: str | None  # Success, Failed, or None before the first run
    job_status: str | None  # Scheduled, Running, Paused
    last_start: datetime | None
    last_success: datetime | None
    next_start: datetime | None
    runs: int
    failures: int
    last_error: str | None  # the newest entry of job_errors

    @property
    def failing(self) -> bool:
        """The last run failed: the server retries after a backoff."""
        return self.last_status == "Failed"

    @property
    def backoff(self) -> timedelta:
        """How much later than its schedule the next try comes (zero unless failing)."""
        if not self.failing or self.next_start is None or self.last_start is None:
            return timedelta(0)
        return max(timedelta(0), self.next_start - (self.last_start + self.schedule_interval))

    def describe(self) -> str:
        """One line for ``qilu storage status``."""
        head = f"{self.relation}: {self.policy} (job {self.job_id}, every {self.schedule_interval})"
        if self.job_status == "Paused":
            return f"{head}: PAUSED"
        if self.last_status is None:
            return f"{head}: not run yet, next start {_at(self.next_start)}"
        if not self.failing:
            return (
                f"{head}: ok, last success {_at(self.last_success)},"
                f" next start {_at(self.next_start)}"
            )
        backoff = f" (backing off {self.backoff})" if self.backoff else ""
        error = f": {self.last_error}" if self.last_error else ""
        return (
            f"{head}: FAILING, {self.failures} of {self.runs} runs failed, last try"
            f" {_at(self.last_start)}, last success {_at(self.last_success)},"
            f" next try {_at(self.next_start)}{backoff}{error}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "relation": self.relation,
            "policy": self.policy,
            "failing": self.failing,
            "last_status": self.last_status,
            "job_status": self.job_status,
            "last_start": self.last_start,
            "last_success": self.last_success,
            "next_start": self.next_start,
            "backoff_s": self.backoff.total_seconds(),
            "runs": self.runs,
            "failures": self.failures,
            "last_error": self.last_error if self.failing else None,
        }


def _at(t: datetime | None) -> str:
    return t.isoformat(timespec="seconds") if t is not None else "never"


def from_rows(rows: Iterable[Sequence[Any]]) -> list[JobHealth]:
    """:class:`JobHealth` from rows of :data:`HEALTH_SQL`'s shape (pure)."""
    return [
        JobHealth(
            job_id=int(r[0]),
            relation=str(r[1]),
            policy=str(r[2]),
            schedule_interval=r[3],
            last_status=r[4],
            job_status=r[5],
            last_start=r[6],
            last_success=r[7],
            next_start=r[8],
            runs=int(r[9]),
            failures=int(r[10]),
            last_error=r[11],
        )
        for r in rows
    ]


def job_health(conn: psycopg.Connection[TupleRow]) -> list[JobHealth]:
    """The platform's jobs in this schema and how their last runs went."""
    return from_rows(conn.execute(HEALTH_SQL, JOBS_PARAMS).fetchall())


def publish(health: Iterable[JobHealth]) -> None:
    """Set the gauges to ``health`` (jobs that are gone lose their series).

    The new values are computed first and only vanished label sets are removed, so a scrape
    at any moment sees every job that exists (clearing first would show none in between)."""
    new = {
        (h.relation, h.policy): (1.0 if h.failing else 0.0, h.backoff.total_seconds())
        for h in health
    }
    for labels, (failing, backoff) in new.items():
        metrics.JOB_FAILING.labels(*labels).set(failing)
        metrics.JOB_BACKOFF.labels(*labels).set(backoff)
    for gauge in (metrics.JOB_FAILING, metrics.JOB_BACKOFF):
        shown = {
            (s.labels["relation"], s.labels["policy"])
            for family in gauge.collect()
            for s in family.samples
        }
        for labels in shown - new.keys():
            gauge.remove(*labels)
