"""Prometheus (started by the services code) with the repository's configuration sees every
platform target up, every dashboard and alert PromQL query evaluates, and every metric the
dashboards use is exported by the component they expect.

The exporters are the real commands on test ports: `qilu ingest`, `qilu agent province` and
`qilu api`. The test copy of infra/prometheus/prometheus.yml differs only in target ports and
a 1 s scrape interval; the agents are found the way the platform finds them, in the file_sd
targets `qilu agents targets` writes from the agents table.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards import alerts, provisioning
from dashboards.board import PromSpec
from dashboards.macros import Context, Variable, expand_promql
from dashboards.pipeline import METRICS
from ops.services import Services
from ops.services.prometheus import agent_targets_file
from qilu.catalog import load_catalog
from qilu.contract import Sector
from qilu.ports import free_port
from qilu.registry import generate
from qilu.settings import REPO_ROOT, ServicesSettings, Settings
from storage.db import connect
from storage.registry_store import load_registry
from stream import provisioning as agents
from tests.helpers import wait_for
from tests.integration.test_dashboards_sql import (
    SCALE,
    SEED,
    platform_env,
    province_args,
    qilu_process,
)

pytestmark = pytest.mark.integration

JOBS = ("qilu-ingest", "qilu-agents", "qilu-api")
AGENTS = "qilu-agents"


def _get(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
        return json.loads(resp.read())


def _text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5.0) as resp:  # noqa: S310 - loopback only
        return str(resp.read().decode())


def _declared(metrics_text: str) -> set[str]:
    return set(re.findall(r"^# TYPE (\S+) ", metrics_text, flags=re.MULTILINE))


def _test_repo(tmp_path: Path, ports: dict[str, int], prom_port: int) -> Path:
    """A copy of the repo's Prometheus config pointing at the test ports."""
    data = yaml.safe_load((REPO_ROOT / "infra" / "prometheus" / "prometheus.yml").read_text())
    data["global"]["scrape_interval"] = "1s"
    data["global"]["scrape_timeout"] = "1s"
    for job in data["scrape_configs"]:
        port = prom_port if job["job_name"] == "prometheus" else ports[job["job_name"]]
        for sc in job.get("static_configs", []):
            sc["targets"] = [f"127.0.0.1:{port}"]
    root = tmp_path / "repo"
    (root / "infra" / "prometheus").mkdir(parents=True)
    (root / "infra" / "prometheus" / "prometheus.yml").write_text(yaml.safe_dump(data))
    return root


def test_prometheus_sees_every_platform_target_up(
    settings: Settings, start_ingest: Callable[[], object], tmp_path: Path
) -> None:
    del start_ingest
    reg = generate(SEED, SCALE)
    with connect(settings.db) as conn:
        load_registry(conn, reg)
    ports = {job: free_port() for job in JOBS}
    prom_port = free_port()
    repo = _test_repo(tmp_path, ports, prom_port)
    env = {**platform_env(settings), "QILU_LOG_LEVEL": "INFO"}  # logs explain a failure
    services = Services(
        ServicesSettings(state_dir=tmp_path / "state", prometheus_port=prom_port),
        settings.db,
        repo_root=repo,
    )
    with ExitStack() as stack:
        ingest = stack.enter_context(
            qilu_process(
                ["ingest", "--metrics-port", str(ports["qilu-ingest"])], env, tmp_path / "i.log"
            )
        )
        stack.enter_context(
            qilu_process(
                province_args(tmp_path / "agents", ports["qilu-agents"]), env, tmp_path / "a.log"
            )
        )
        stack.enter_context(
            qilu_process(["api", "--port", str(ports["qilu-api"])], env, tmp_path / "api.log")
        )
        services.up(["prometheus"])
        stack.callback(services.down, ["prometheus"])
        base = f"http://127.0.0.1:{prom_port}"
        # the province's agents in the table -> its endpoint in the file Prometheus watches
        province = settings.model_copy(
            update={"agent": settings.agent.model_copy(update={"metrics_port": ports[AGENTS]})}
        )
        targets = agent_targets_file(tmp_path / "state")
        wait_for(
            lambda: agents.write_targets(province, targets) == 1,
            timeout=90,
            what="the province's agents provisioned",
        )

        def all_up() -> bool:
            targets = _get(f"{base}/api/v1/targets")["data"]["activeTargets"]
            health = {t["labels"]["job"]: t["health"] for t in targets}
            return set(health) == {*JOBS, "prometheus"} and set(health.values()) == {"up"}

        wait_for(all_up, timeout=90, what="every scrape target up")
        # traffic so that labelled series exist: one API request, ingest catching up
        _text(f"http://127.0.0.1:{ports['qilu-api']}/healthz")
        try:
            wait_for(
                lambda: bool(
                    _get(f"{base}/api/v1/query?query=qilu_ingest_readings_total")["data"]["result"]
                ),
                timeout=60,
                what="ingest to store readings",
            )
        except AssertionError:
            ingest.send_signal(signal.SIGUSR1)  # its threads' stacks into i.log
            time.sleep(1.0)
            exported = _text(f"http://127.0.0.1:{ports['qilu-ingest']}/metrics")
            own = [ln for ln in exported.splitlines() if ln.startswith("qilu_ingest_")]
            logs = {n: (tmp_path / n).read_text()[-6000:] for n in ("i.log", "a.log")}
            raise AssertionError(
                f"ingest stored nothing; its metrics: {own}; logs: {logs}"
            ) from None

        # every metric the dashboards and alerts use is declared by the expected exporter
        declared = {
            "ingest": _declared(_text(f"http://127.0.0.1:{ports['qilu-ingest']}/metrics")),
            "agent": _declared(_text(f"http://127.0.0.1:{ports['qilu-agents']}/metrics")),
            "api": _declared(_text(f"http://127.0.0.1:{ports['qilu-api']}/metrics")),
        }
        # (the backup scheduler's are checked in tests/unit/test_backup.py)
        missing = {m: c for m, c in METRICS.items() if c != "backup" and m not in declared[c]}
        assert not missing, f"metrics not exported: {missing}"

        # every PromQL query of the dashboards and alert rules evaluates without error
        now = datetime.now(UTC)
        ctx = Context(
            start=now - timedelta(minutes=5),
            end=now,
            interval_s=15.0,
            variables={
                "agent": Variable("agent", (".*",), multi=False, include_all=False),
                "sector": Variable("sector", tuple(s.value for s in Sector)),
            },
        )
        catalog = load_catalog()
        exprs = [
            q.query.expr
            for b in provisioning.all_dashboards(catalog)
            for q in b.promql
            if isinstance(q.query, PromSpec)
        ]
        exprs += [s.query.expr for s in alerts.all_specs(catalog) if isinstance(s.query, PromSpec)]
        wait_for(
            lambda: bool(
                _get(f"{base}/api/v1/query?query=rate(qilu_ingest_readings_total[1m])")["data"][
                    "result"
                ]
            ),
            timeout=60,
            what="two scrapes of ingest counters (rates)",
        )
        for expr in exprs:
            query = urllib.parse.quote(expand_promql(expr, ctx))
            answer = _get(f"{base}/api/v1/query?query={query}")
            assert answer["status"] == "success", (expr, answer)  # valid PromQL
        # panels that must show something while the platform runs (drops, errors, retries and
        # dead letters stay empty on a healthy run)
        needles = (
            "up{",
            "qilu_agent_buffer_readings",
            "qilu_agent_oldest_unsent_seconds",
            "qilu_agent_readings_sent_total",
            "qilu_ingest_lag_records{",
            "qilu_ingest_readings_total",
            "qilu_ingest_flush_seconds_bucket",
            "qilu_api_requests_total",
        )
        empty: list[str] = []

        def panels_have_data() -> bool:
            empty.clear()
            for needle in needles:
                found = False
                for expr in (e for e in exprs if needle in e):
                    query = urllib.parse.quote(expand_promql(expr, ctx))
                    found = found or bool(
                        _get(f"{base}/api/v1/query?query={query}")["data"]["result"]
                    )
                if not found:
                    empty.append(needle)
            return not empty

        try:
            wait_for(panels_have_data, timeout=45, what="data in the pipeline panels")
        except AssertionError:
            raise AssertionError(f"no data for queries on {empty}") from None
        up = _get(f"{base}/api/v1/query?query=up")["data"]["result"]
        assert {r["metric"]["job"] for r in up if r["value"][1] == "1"} == {*JOBS, "prometheus"}
    shutil.rmtree(tmp_path / "state", ignore_errors=True)
