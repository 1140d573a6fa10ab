"""Prometheus metrics of the storage stage (numbers go here, not to the log).

Set by the maintenance loop (:class:`storage.maintain.Maintainer`, which runs inside ``qilu
ingest`` or ``qilu storage maintain --every``), so the process that runs it exports them.
"""

from __future__ import annotations

from prometheus_client import Gauge

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
