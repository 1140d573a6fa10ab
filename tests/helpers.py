"""Small helpers shared by the integration tests."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from kafka import KafkaConsumer

from dashboards.alerts import AlertSpec
from dashboards.board import PromSpec
from ops.services.prometheus import CANDIDATES
from qilu.settings import DatabaseSettings, Settings
from stream.deadletter import decode_headers
from stream.topics import deadletter_topic


def wait_for(check: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def scalar(dbs: DatabaseSettings, query: str) -> int:
    with psycopg.connect(dbs.conninfo(), prepare_threshold=None) as conn:
        row = conn.execute(query.encode()).fetchone()
        return int(row[0]) if row and row[0] is not None else 0


def signing_headers(
    settings: Settings, agent_id: str, sites: list[str] | None = None
) -> Callable[[bytes], list[tuple[str, bytes]]]:
    """Provision ``agent_id`` (for ``sites``, default every site in the database) and return
    what makes the signature headers of its records: the ingest refuses unsigned envelopes
    (docs/adr/0010-agent-authentication.md)."""
    from stream.provisioning import provision_province

    if sites is None:
        with psycopg.connect(settings.db.conninfo(), prepare_threshold=None) as conn:
            sites = [r[0] for r in conn.execute("SELECT site_id FROM sites")]
    return provision_province(settings, {agent_id: sites}, actor="test")[agent_id].headers


def promtool() -> str:
    """The promtool next to the Prometheus that ``qilu services up`` installs, else on PATH."""
    for prometheus in CANDIDATES:
        if (prometheus.parent / "promtool").is_file():
            return str(prometheus.parent / "promtool")
    found = shutil.which("promtool")
    assert found, "promtool comes with the prometheus package (qilu services up installs it)"
    return found


def promtool_alert_test(
    tmp_path: Path,
    spec: AlertSpec,
    input_series: list[dict[str, str]],
    checks: list[dict[str, Any]],
) -> None:
    """Evaluate the alert rule ``spec`` as Grafana runs it (its PromQL above its threshold for its
    pending period) with Prometheus' own rule tester on ``input_series`` (1-minute steps) and
    assert that every check of ``checks`` (``eval_time`` and ``exp_alerts``) holds."""
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
    test = {
        "rule_files": ["rules.json"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": input_series,
                "alert_rule_test": [{"alertname": spec.uid, **c} for c in checks],
            }
        ],
    }
    (tmp_path / "rules.json").write_text(json.dumps(rules))  # JSON is YAML
    (tmp_path / "test.json").write_text(json.dumps(test))
    done = subprocess.run(
        [promtool(), "test", "rules", "test.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def dead_letters(settings: Settings, n: int, timeout_ms: int) -> list[tuple[bytes, dict[str, str]]]:
    """The first ``n`` records of the dead-letter topic as (value, decoded headers); fewer when
    no record came for ``timeout_ms``."""
    consumer = KafkaConsumer(
        deadletter_topic(settings.kafka),
        bootstrap_servers=settings.kafka.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=timeout_ms,
    )
    out: list[tuple[bytes, dict[str, str]]] = []
    try:
        for rec in consumer:
            out.append((rec.value, decode_headers(rec.headers)))
            if len(out) == n:
                break
    finally:
        consumer.close()
    return out
