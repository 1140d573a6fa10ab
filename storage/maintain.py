"""Storage maintenance: partitions ahead, retention, rollup refresh, the coverage series.

One pass (``qilu storage maintain``) does, depending on the storage mode:

==================  ==========================================  ===============================
task                postgres mode                               timescale mode
==================  ==========================================  ===============================
partitions          create the coming hours' partitions         (chunks are automatic)
retention           drop partitions past the retention          align the retention policies
rollups             ``qilu_refresh_rollups()``: invalidations,  one job refreshes them in
                    then advance the watermarks                 order in the server (051;
                                                                ``--run-jobs`` runs every job
                                                                now)
jobs                (none)                                      read the jobs' last runs:
                                                                failing ones to the metrics
                                                                and the log (storage/jobs.py)
coverage            upsert today's row of ``coverage_daily``    same
dead letters        delete ``deadletter_summary`` minutes       same
                    older than
                    ``storage.deadletter_retention_days``
                    (the marks stay: counting stays exact)
liveness changes    delete ``liveness_changes`` rows older      same
                    than ten minutes (migration 062, the API's
                    incremental coverage)
==================  ==========================================  ===============================

:class:`Maintainer` runs the same tasks on a schedule in a thread (``qilu ingest`` starts one
when ``storage.maintain_in_ingest`` is on, and ``qilu storage maintain --every N`` runs one in
the foreground). A task the connected role may not run (the ingest role may not drop partitions
or write coverage) is reported once and left to a process that runs as the owner.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pgerrors
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb

from qilu.catalog import Catalog
from qilu.settings import DatabaseSettings, StorageMode, StorageSettings
from storage import coverage, coverage_incremental, deadletters, jobs, metrics
from storage.db import connect

logger = logging.getLogger(__name__)

Conn = psycopg.Connection[TupleRow]
T = TypeVar("T")

# postgres mode: every time-partitioned table, how far back and ahead partitions should exist
_STORES = ("readings_1m_store", "readings_1h_store", "site_liveness_1h_store")
# timescale mode: the hypertable and continuous aggregates whose retention we align, in the
# order their jobs must run (a rollup before the rollups built on it, refresh before compress)
_CAGGS = ("readings_1m", "readings_1h", "site_liveness_1h")


def retention(storage: StorageSettings) -> dict[str, timedelta]:
    """Logical relation -> how long it is kept."""
    return {
        "readings": timedelta(days=storage.raw_retention_days),
        "readings_1m": timedelta(days=storage.rollup_1m_retention_days),
        "readings_1h": timedelta(days=storage.rollup_1h_retention_days),
        "site_liveness_1h": timedelta(days=storage.rollup_1h_retention_days),
    }


# -- postgres mode --------------------------------------------------------------------------------
def ensure_partitions(conn: Conn, storage: StorageSettings, now: datetime) -> int:
    """Create the partitions of the coming hours (and of the rollup stores); returns how many."""
    ahead = timedelta(hours=storage.partitions_ahead_hours)
    created = 0
    spans = {
        "readings": (now - timedelta(hours=1), now + ahead),
        "readings_1m_store": (now - timedelta(days=1), now + ahead),
        "readings_1h_store": (now - timedelta(days=1), now + ahead),
        "site_liveness_1h_store": (now - timedelta(days=1), now + ahead),
    }
    for table, (lo, hi) in spans.items():
        row = conn.execute("SELECT qilu_ensure_partitions(%s, %s, %s)", (table, lo, hi)).fetchone()
        created += int(row[0]) if row else 0
    conn.commit()
    return created


def drop_expired_partitions(conn: Conn, storage: StorageSettings, now: datetime) -> list[str]:
    keep = retention(storage)
    owners = {
        "readings": keep["readings"],
        "readings_1m_store": keep["readings_1m"],
        "readings_1h_store": keep["readings_1h"],
        "site_liveness_1h_store": keep["site_liveness_1h"],
    }
    dropped: list[str] = []
    for table, age in owners.items():
        dropped += [
            r[0] for r in conn.execute("SELECT qilu_drop_partitions(%s, %s)", (table, now - age))
        ]
    conn.commit()
    return dropped


def refresh_rollups_postgres(conn: Conn, storage: StorageSettings, now: datetime) -> dict[str, Any]:
    keep_after = now - timedelta(days=storage.raw_retention_days)
    row = conn.execute("SELECT qilu_refresh_rollups(%s, %s)", (now, keep_after)).fetchone()
    conn.commit()
    return dict(row[0]) if row and row[0] else {}


# -- timescale mode -------------------------------------------------------------------------------
def policy_jobs(conn: Conn) -> list[tuple[int, str, str, dict[str, Any]]]:
    """(job id, logical relation, policy, config) of the jobs on our relations: the policies
    and the rollup refresh job of migration 051 (relation "rollups")."""
    rows = conn.execute(
        jobs.jobs_sql(f"j.job_id, {jobs.JOB_RELATION}, j.proc_name, j.config"), jobs.JOBS_PARAMS
    ).fetchall()
    return [(int(r[0]), str(r[1]), str(r[2]), dict(r[3] or {})) for r in rows]


def align_retention_policies(conn: Conn, storage: StorageSettings) -> list[str]:
    """Make each retention policy, and the rollup refresh job's window, match the settings;
    returns the relations changed ("rollups" for the refresh job).

    The refresh job (migration 051) refreshes back as far as raw readings are kept: the ingest
    accepts a late reading up to ``storage.raw_retention_days`` old, and a shorter window
    would leave it out of the rollups for good (a refresh only recomputes the invalidated
    buckets inside its window, so a wide window costs nothing when nothing arrived late)."""
    changed: list[str] = []
    wanted = retention(storage)
    window = f"{storage.raw_retention_days} days"
    for job_id, relation, proc, config in policy_jobs(conn):
        if proc == jobs.REFRESH_JOB:
            rollups = config.get("rollups", [])
            if rollups and any(r.get("start_offset") != window for r in rollups):
                new = {**config, "rollups": [{**r, "start_offset": window} for r in rollups]}
                conn.execute("SELECT alter_job(%s, config => %s)", (job_id, Jsonb(new)))
                changed.append(relation)
            continue
        if proc != "policy_retention":
            continue
        got = conn.execute("SELECT %s::interval", (config.get("drop_after"),)).fetchone()
        if got and got[0] == wanted[relation]:
            continue
        conn.execute("SELECT remove_retention_policy(%s::regclass)", (relation,))
        conn.execute(
            "SELECT add_retention_policy(%s::regclass, drop_after => %s)",
            (relation, wanted[relation]),
        )
        changed.append(relation)
    conn.commit()
    return changed


_JOB_ORDER = {
    ("rollups", jobs.REFRESH_JOB): 0,  # refreshes readings_1m, then the rollups built on it
    # databases migrated before 051 (a policy per aggregate): the same order
    ("readings_1m", "policy_refresh_continuous_aggregate"): 1,
    ("readings_1h", "policy_refresh_continuous_aggregate"): 2,
    ("site_liveness_1h", "policy_refresh_continuous_aggregate"): 3,
}


def run_jobs(conn: Conn) -> list[str]:
    """Run every policy job of our relations now, in dependency order: the refreshes from the
    minute rollup up, then compression and retention (for servers whose background workers do
    not run, like the test engine, or after a bulk load). ``conn`` must be in autocommit."""
    done: list[str] = []
    jobs = sorted(policy_jobs(conn), key=lambda j: (_JOB_ORDER.get((j[1], j[2]), 9), j[0]))
    for job_id, relation, proc, _config in jobs:
        conn.execute("CALL run_job(%s)", (job_id,))
        done.append(f"{proc} on {relation}")
    return done


def refresh_aggregates(db: DatabaseSettings, window_start: datetime, window_end: datetime) -> None:
    """Refresh the continuous aggregates over a window, lower levels first."""
    with connect(db, autocommit=True) as conn:
        for cagg in _CAGGS:
            conn.execute(
                "CALL refresh_continuous_aggregate(%s, %s, %s)", (cagg, window_start, window_end)
            )


# -- both ----------------------------------------------------------------------------------------
def prune_deadletters(conn: Conn, storage: StorageSettings, now: datetime) -> int:
    """Delete the dead-letter summary's minutes past ``storage.deadletter_retention_days``
    (what ``qilu deadletters prune`` does by hand); returns how many rows went."""
    n = deadletters.prune(conn, now - timedelta(days=storage.deadletter_retention_days))
    conn.commit()
    return n


@dataclass(slots=True)
class PassReport:
    mode: StorageMode
    partitions_created: int = 0
    partitions_dropped: list[str] = field(default_factory=list)
    policies_aligned: list[str] = field(default_factory=list)
    jobs_run: list[str] = field(default_factory=list)
    jobs: list[jobs.JobHealth] = field(default_factory=list)
    refresh: dict[str, Any] = field(default_factory=dict)
    coverage_rows: int = 0
    deadletters_pruned: int = 0  # summary rows (minutes) past their retention
    liveness_changes_pruned: int = 0  # liveness_changes rows past their ten minutes
    not_allowed: list[str] = field(default_factory=list)


def maintain_once(
    db: DatabaseSettings,
    storage: StorageSettings,
    mode: StorageMode,
    catalog: Catalog,
    *,
    now: datetime | None = None,
    coverage_snapshot: bool = True,
    run_policy_jobs: bool = False,
) -> PassReport:
    """One maintenance pass, every task of the mode; see the module docstring."""
    now = now or datetime.now(UTC)
    report = PassReport(mode)
    with connect(db) as conn:
        if mode is StorageMode.POSTGRES:
            report.partitions_created = _allowed(
                report, "partitions", lambda: ensure_partitions(conn, storage, now), 0, conn
            )
            report.partitions_dropped = _allowed(
                report, "retention", lambda: drop_expired_partitions(conn, storage, now), [], conn
            )
            report.refresh = _allowed(
                report, "rollups", lambda: refresh_rollups_postgres(conn, storage, now), {}, conn
            )
        else:
            report.policies_aligned = _allowed(
                report, "retention", lambda: align_retention_policies(conn, storage), [], conn
            )
            report.jobs = _allowed(report, "jobs", lambda: jobs.job_health(conn), [], conn)
        report.deadletters_pruned = _allowed(
            report, "deadletters", lambda: prune_deadletters(conn, storage, now), 0, conn
        )
        report.liveness_changes_pruned = _allowed(
            report,
            "liveness changes",
            lambda: coverage_incremental.prune_changes(conn, now),
            0,
            conn,
        )
        if coverage_snapshot:
            report.coverage_rows = _allowed(
                report, "coverage", lambda: coverage.snapshot(conn, catalog, now), 0, conn
            )
    if mode is StorageMode.TIMESCALE and run_policy_jobs:
        with connect(db, autocommit=True) as conn:
            report.jobs_run = run_jobs(conn)
    return report


def _allowed(report: PassReport, task: str, fn: Callable[[], T], default: T, conn: Conn) -> T:
    """Run a task; if the role lacks the privilege, note it and go on with the others."""
    try:
        return fn()
    except pgerrors.InsufficientPrivilege as exc:
        conn.rollback()
        report.not_allowed.append(f"{task}: {str(exc).strip().splitlines()[0]}")
        return default


class Maintainer:
    """The maintenance tasks on a schedule, in a daemon thread, until ``stop`` is set.

    Rollups (postgres mode) every ``storage.refresh_interval_s``; partitions, retention and
    the dead-letter summary's retention every ten refresh intervals; the coverage row every
    ``storage.coverage_snapshot_interval_s``, from an
    :class:`~storage.coverage_incremental.IncrementalCoverage` kept between passes (``coverage``):
    the registry and every device's liveness are read in full once (again after a registry
    change, no sooner than ``storage.coverage_rebuild_min_s`` after the previous build), then
    only the liveness changes since the previous pass; its state goes to the metrics
    (:mod:`storage.metrics`). A full :func:`storage.coverage.compute` each time is
    O(devices): at province scale it took longer than the 30 s interval on the cluster
    profile and kept a PostgreSQL backend busy without a pause (bench/province_live.py).
    A database outage is logged once when it starts and once when it ends.
    """

    def __init__(
        self,
        db: DatabaseSettings,
        storage: StorageSettings,
        mode: StorageMode,
        catalog: Catalog,
        stop: threading.Event,
    ) -> None:
        self._db, self._storage, self._mode, self._catalog = db, storage, mode, catalog
        self._stop = stop
        self._thread: threading.Thread | None = None
        self._disabled: set[str] = set()
        self._failing: set[tuple[str, str]] = set()  # (relation, policy) of failing jobs
        self.passes = 0
        # only the maintenance thread uses it; ``coverage.last`` says how the last went
        self.coverage = coverage_incremental.IncrementalCoverage(
            catalog, rebuild_min_s=storage.coverage_rebuild_min_s
        )

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="storage-maintain", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        interval = self._storage.refresh_interval_s
        next_coverage = 0.0
        housekeeping_every, n = 10, 0
        down_since: float | None = None
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self._tick(
                    housekeeping=n % housekeeping_every == 0,
                    coverage_due=started >= next_coverage,
                )
            except psycopg.OperationalError as exc:
                if down_since is None:
                    down_since = started
                    logger.warning("storage maintenance paused, database unavailable: %s", exc)
            else:
                if down_since is not None:
                    logger.warning(
                        "storage maintenance resumed after %.0f s", time.monotonic() - down_since
                    )
                    down_since = None
                if started >= next_coverage:
                    next_coverage = started + self._storage.coverage_snapshot_interval_s
                n += 1
                self.passes += 1
            self._stop.wait(max(0.0, interval - (time.monotonic() - started)))

    def _tick(self, *, housekeeping: bool, coverage_due: bool) -> None:
        now = datetime.now(UTC)
        with connect(self._db) as conn:
            tasks: list[tuple[str, Callable[[], object]]] = []
            if self._mode is StorageMode.POSTGRES:
                if housekeeping:
                    tasks.append(
                        ("partitions", lambda: ensure_partitions(conn, self._storage, now))
                    )
                    tasks.append(
                        ("retention", lambda: drop_expired_partitions(conn, self._storage, now))
                    )
                tasks.append(
                    ("rollups", lambda: refresh_rollups_postgres(conn, self._storage, now))
                )
            else:
                if housekeeping:
                    tasks.append(
                        ("retention", lambda: align_retention_policies(conn, self._storage))
                    )
                tasks.append(("jobs", lambda: self._watch_jobs(conn)))
            if housekeeping:
                tasks.append(("deadletters", lambda: prune_deadletters(conn, self._storage, now)))
                tasks.append(
                    ("liveness changes", lambda: coverage_incremental.prune_changes(conn, now))
                )
            if coverage_due:
                tasks.append(("coverage", lambda: self._record_coverage(conn, now)))
            for name, task in tasks:
                if name in self._disabled:
                    continue
                try:
                    result = task()
                except pgerrors.InsufficientPrivilege as exc:
                    conn.rollback()
                    self._disabled.add(name)
                    logger.info(
                        "storage maintenance: this role may not do %s (%s); leaving it to "
                        "`qilu storage maintain` run as the owner",
                        name,
                        str(exc).strip().splitlines()[0],
                    )
                    continue
                logger.debug("storage maintenance %s: %s", name, result)

    def _record_coverage(self, conn: Conn, now: datetime) -> int:
        """Today's ``coverage_daily`` rows from the incremental model; its state to the metrics."""
        figures = self.coverage.compute(conn, now)
        done = self.coverage.last
        if done is not None:
            metrics.COVERAGE_BEHIND.set(done.registry_behind_s or 0.0)
            if done.full:
                metrics.COVERAGE_BUILDS.labels(done.reason).inc()
                metrics.COVERAGE_BUILD_SECONDS.set(done.seconds)
        return coverage.record(conn, figures, now)

    def _watch_jobs(self, conn: Conn) -> int:
        """Publish the jobs' health; log a job once when it starts failing and once when it
        works again (the server retries it with a backoff by itself)."""
        health = jobs.job_health(conn)
        conn.commit()
        jobs.publish(health)
        failing = {(h.relation, h.policy) for h in health if h.failing}
        for h in health:
            key = (h.relation, h.policy)
            if h.failing and key not in self._failing:
                logger.warning("TimescaleDB job failing: %s", h.describe())
            elif not h.failing and key in self._failing:
                logger.warning("TimescaleDB job %s on %s works again", h.policy, h.relation)
        self._failing = failing
        return len(failing)
