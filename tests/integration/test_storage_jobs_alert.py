"""The alert ``qilu-storage-job-failing`` fires on what the storage metrics export for recorded
job rows, evaluated by Prometheus' own rule tester (promtool, from the prometheus package that
`qilu services up` installs): the rule's PromQL, threshold and pending period as Grafana runs
them (reduce last, then the threshold), the series as the ingest process exposes them."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dashboards.alerts import STORAGE_JOB_FAILING
from dashboards.board import PromSpec
from qilu.services.prometheus import CANDIDATES
from storage import jobs

pytestmark = pytest.mark.integration
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def _promtool() -> str:
    for prometheus in CANDIDATES:
        if (prometheus.parent / "promtool").is_file():
            return str(prometheus.parent / "promtool")
    found = shutil.which("promtool")
    assert found, "promtool comes with the prometheus package (qilu services up installs it)"
    return found


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

    spec = STORAGE_JOB_FAILING
    assert isinstance(spec.query, PromSpec)
    assert spec.op == "gt"
    rules = {
        "groups": [
            {
                "name": spec.group,
                "rules": [
                    {
                        "alert": spec.uid,
                        "expr": f"({spec.query.expr}) > {spec.threshold}",
                        "for": spec.for_,
                    }
                ],
            }
        ]
    }
    labels = {"relation": "rollups", "policy": jobs.REFRESH_JOB}
    test = {
        "rule_files": ["rules.json"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": "qilu_storage_job_failing{"
                        + ",".join(f'{k}="{v}"' for k, v in sorted(lab.items()))
                        + "}",
                        "values": f"{value:g}x30",
                    }
                    for lab, value in series
                ],
                "alert_rule_test": [
                    {"eval_time": "5m", "alertname": spec.uid, "exp_alerts": []},
                    {
                        "eval_time": "15m",
                        "alertname": spec.uid,
                        "exp_alerts": [{"exp_labels": labels}],
                    },
                ],
            }
        ],
    }
    (tmp_path / "rules.json").write_text(json.dumps(rules))  # JSON is YAML
    (tmp_path / "test.json").write_text(json.dumps(test))
    done = subprocess.run(
        [_promtool(), "test", "rules", "test.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
