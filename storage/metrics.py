"""Prometheus metrics of the storage stage (numbers go here, not to the log).

Set by the maintenance loop (:class:`storage.maintain.Maintainer`, which runs inside ``qilu
ingest`` or ``qilu storage maintain --every``), so the process that runs it exports them.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

JOB_FAILING = Gauge(
    "qilu_storage_job_failing",
    "timescale mode: 1 when the last run of a TimescaleDB job of the platform failed (the "
    "server then backs off before the next try), by relation and policy",
    ["relation", "policy"],
)
JOB_BACKOFF = Gauge(
    "qilu_storage_job_backoff_seconds",
    "timescale mode: how much later than its schedule a failing job's next try comes",
    ["relation", "policy"],
)
COVERAGE_BEHIND = Gauge(
    "qilu_storage_coverage_registry_behind_seconds",
    "How long the registry has been newer than the maintenance loop's coverage model (its "
    "rebuild waits, storage.coverage_rebuild_min_s); 0 when up to date",
)
COVERAGE_BUILDS = Counter(
    "qilu_storage_coverage_full_builds_total",
    "Full builds of the maintenance loop's incremental coverage model, by reason",
    ["reason"],
)
COVERAGE_BUILD_SECONDS = Gauge(
    "qilu_storage_coverage_full_build_seconds",
    "How long the maintenance loop's coverage model's last full build took (a rebuild after a "
    "registry change waits at least 20 times this, storage.coverage_rebuild_min_s)",
)
