"""The alert ``qilu-storage-job-failing`` fires on what the storage metrics export for recorded
job rows, evaluated by Prometheus' own rule tester (promtool, from the prometheus package that
`qilu services up` installs): the rule's PromQL, threshold and pending period as Grafana runs
them (reduce last, then the threshold), the series as the ingest process exposes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dashboards.alerts import STORAGE_JOB_FAILING
from storage import jobs
from tests.helpers import promtool_alert_test

pytestmark = pytest.mark.integration
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def _exported(name: str) -> list[tuple[dict[str, str], float]]:
    text = generate_latest(REGISTRY).decode()
    return [
        (s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


def test_the_alert_fires_for_a_failing_job_only_after_its_pending_period(tmp_path: Path) -> None:
    recorded = [
        (1000, "rollups", jobs.REFRESH_JOB, MINUTE, "Failed", "Scheduled", NOW - 10 * MINUTE,
         NOW - 60 * MINUTE, NOW + 50 * MINUTE, 70, 5, "canceling statement due to timeout"),
        (1001, "readings", "policy_retention", 1440 * MINUTE, "Success", "Scheduled",
         NOW - 120 * MINUTE, NOW - 120 * MINUTE, NOW + 1320 * MINUTE, 3, 0, None),
    ]  # fmt: skip
    jobs.publish(jobs.from_rows(recorded))
    series = _exported("qilu_storage_job_failing")
    assert sorted(v for _, v in series) == [0.0, 1.0]

    labels = {"relation": "rollups", "policy": jobs.REFRESH_JOB}
    promtool_alert_test(
        tmp_path,
        STORAGE_JOB_FAILING,
        [
            {
                "series": "qilu_storage_job_failing{"
                + ",".join(f'{k}="{v}"' for k, v in sorted(lab.items()))
                + "}",
                "values": f"{value:g}x30",
            }
            for lab, value in series
        ],
        [
            {"eval_time": "5m", "exp_alerts": []},
            {"eval_time": "15m", "exp_alerts": [{"exp_labels": labels}]},
        ],
    )
