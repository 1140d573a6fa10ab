"""TimescaleDB jobs' health from recorded job_stats/job_errors rows (storage/jobs.py): pure."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY

from storage import jobs

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
# the columns of jobs.HEALTH_SQL: id, relation, policy, schedule, last status, job status,
# last start, last success, next start, runs, failures, newest error
FAILING = (
    1000,
    "rollups",
    jobs.REFRESH_JOB,
    MINUTE,
    "Failed",
    "Scheduled",
    NOW - 10 * MINUTE,
    NOW - 60 * MINUTE,
    NOW + 50 * MINUTE,
    70,
    5,
    "canceling statement due to statement timeout",
)
OK = (
    1001,
    "readings",
    "policy_retention",
    timedelta(days=1),
    "Success",
    "Scheduled",
    NOW - 2 * 60 * MINUTE,
    NOW - 2 * 60 * MINUTE,
    NOW + 22 * 60 * MINUTE,
    3,
    1,
    "an old failure, since recovered",
)
NEVER = (
    1002,
    "readings_1m",
    "policy_compression",
    5 * 60 * MINUTE,
    None,
    "Scheduled",
    None,
    None,
    NOW + 5 * MINUTE,
    0,
    0,
    None,
)


def test_a_failed_last_run_is_failing_with_its_backoff_and_error() -> None:
    failing, ok, never = jobs.from_rows([FAILING, OK, NEVER])
    assert (failing.failing, ok.failing, never.failing) == (True, False, False)
    # next try 50 min from now instead of 1 min after the last start (10 min ago)
    assert failing.backoff == 59 * MINUTE
    assert ok.backoff == never.backoff == timedelta(0)
    assert failing.describe() == (
        "rollups: qilu_refresh_rollups_job (job 1000, every 0:01:00): FAILING, 5 of 70 runs"
        " failed, last try 2026-12-06T11:50:00+00:00, last success 2026-12-06T11:00:00+00:00,"
        " next try 2026-12-06T12:50:00+00:00 (backing off 0:59:00): canceling statement due to"
        " statement timeout"
    )
    assert ok.describe().endswith(
        ": ok, last success 2026-12-06T10:00:00+00:00, next start 2026-12-07T10:00:00+00:00"
    )
    assert never.describe().endswith(": not run yet, next start 2026-12-06T12:05:00+00:00")
    # an error of a run before the last (successful) one is history, not the job's state
    assert ok.as_dict()["last_error"] is None
    assert failing.as_dict()["backoff_s"] == 59 * 60


def test_paused_jobs_say_so() -> None:
    (paused,) = jobs.from_rows([(*OK[:5], "Paused", *OK[6:])])
    assert paused.describe().endswith(": PAUSED")


def _gauge(name: str, relation: str, policy: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"relation": relation, "policy": policy})


def test_publish_sets_the_gauges_and_forgets_jobs_that_are_gone() -> None:
    jobs.publish(jobs.from_rows([FAILING, OK]))
    assert _gauge("qilu_storage_job_failing", "rollups", jobs.REFRESH_JOB) == 1.0
    assert _gauge("qilu_storage_job_backoff_seconds", "rollups", jobs.REFRESH_JOB) == 3540.0
    assert _gauge("qilu_storage_job_failing", "readings", "policy_retention") == 0.0
    jobs.publish(jobs.from_rows([OK]))
    assert _gauge("qilu_storage_job_failing", "rollups", jobs.REFRESH_JOB) is None
    assert _gauge("qilu_storage_job_failing", "readings", "policy_retention") == 0.0


def test_publish_never_shows_an_empty_set_to_a_scrape_in_between() -> None:
    """A scrape while publish() runs still sees the jobs that exist: the gauges are not
    cleared first. The scrape here happens while publish() reads the new health."""
    jobs.publish(jobs.from_rows([FAILING, OK]))
    seen: list[float | None] = []

    def health() -> Iterator[jobs.JobHealth]:
        seen.append(_gauge("qilu_storage_job_failing", "rollups", jobs.REFRESH_JOB))
        yield from jobs.from_rows([FAILING])
        seen.append(_gauge("qilu_storage_job_failing", "rollups", jobs.REFRESH_JOB))

    jobs.publish(health())
    assert seen == [1.0, 1.0]
    assert _gauge("qilu_storage_job_failing", "rollups", jobs.REFRESH_JOB) == 1.0
    assert _gauge("qilu_storage_job_failing", "readings", "policy_retention") is None
    assert _gauge("qilu_storage_job_backoff_seconds", "readings", "policy_retention") is None
