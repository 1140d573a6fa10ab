"""The ``qilu-backup-too-old`` alert rule (dashboards/alerts.py) evaluated by Prometheus' own
rule tester, as tests/integration/test_storage_jobs_alert.py does: it fires when the backup
time is old, and also when the series is gone (``qilu backup schedule`` stopped, so nothing
is scraped), which the rule without its fallback never did."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dashboards.alerts import BACKUP_TOO_OLD
from tests.helpers import promtool_alert_test

pytestmark = [pytest.mark.integration]
SERIES = 'qilu_backup_last_success_timestamp_seconds{type="any"}'


def _evaluate(tmp_path: Path, values: str, checks: list[dict[str, Any]]) -> None:
    promtool_alert_test(tmp_path, BACKUP_TOO_OLD, [{"series": SERIES, "values": values}], checks)


def test_the_alert_fires_when_the_scheduler_stops_exporting(tmp_path: Path) -> None:
    # a backup finished at time 0; the scheduler exports it for 30 minutes, then stops
    _evaluate(
        tmp_path,
        "0x30 _x60",
        [
            {"eval_time": "20m", "exp_alerts": []},  # recent: quiet
            {"eval_time": "38m", "exp_alerts": []},  # gone (stale after 5 min), pending
            {"eval_time": "50m", "exp_alerts": [{"exp_labels": {}}]},
        ],
    )


def test_the_alert_fires_when_the_newest_backup_is_older_than_26_hours(tmp_path: Path) -> None:
    # exported all along, the backup finished at time 0 and no newer one came
    _evaluate(
        tmp_path,
        "0x1700",
        [
            {"eval_time": "25h", "exp_alerts": []},
            {"eval_time": "26h15m", "exp_alerts": [{"exp_labels": {}}]},
        ],
    )
