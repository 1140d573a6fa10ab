"""Dashboards, alert rules and provisioning files as built by the code (no Grafana, no I/O)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import alerting as galert
from grafana_foundation_sdk.models import dashboard as gdash

from dashboards import alerts, provisioning
from dashboards.board import PromSpec
from dashboards.model import PG_UID, PROM_UID, SqlQuery, SqlSpec, register_sdk_variants
from dashboards.pipeline import METRICS
from qilu.catalog import load_catalog
from qilu.settings import REPO_ROOT

CATALOG = load_catalog()
BUILT = provisioning.all_dashboards(CATALOG)
FILES = provisioning.render(CATALOG)
ADR_RELATIONS = {
    "cities",
    "device_kinds",
    "metrics",
    "sites",
    "devices",
    "device_liveness",
    # migration 066: the one liveness rule over today's registry in service (ADR 0018)
    "device_connected",
    "sites_in_service",
    "readings_1m",
    "readings_1h",
    "site_liveness_1h",
    "coverage_daily",
    "simulated_registry",
    "reported_figures",
    "deadletter_summary",
    # T/CEC 102 operators' links and connectors, never their secrets (docs/adr/0015-tcec102.md)
    "operators",
    "operator_links",
    "operator_connectors",
    # the WAL archiver's state, for qilu-wal-archive-stalled (storage/wal_archive.py ARCHIVE_SQL)
    "pg_stat_archiver",
}


def _json(obj: object) -> str:
    return json.dumps(obj, cls=JSONEncoder, sort_keys=True)


@pytest.mark.parametrize("built", BUILT, ids=lambda b: b.uid)
def test_dashboard_json_round_trips_through_the_sdk_models(
    built: provisioning.BuiltDashboard,
) -> None:
    register_sdk_variants()
    text = FILES[f"dashboards/{built.uid}.json"]
    model = gdash.Dashboard.from_json(json.loads(text))
    assert _json(model) == _json(json.loads(text))
    # SQL targets decode into our model (registered variant), not the SDK's untyped bag
    sql_targets = [
        t for p in model.panels or [] if isinstance(p, gdash.Panel) for t in p.targets or []
    ]
    assert sql_targets
    if built.sql:
        assert any(isinstance(t, SqlQuery) for t in sql_targets)


def test_alert_rule_groups_round_trip_through_the_sdk_models() -> None:
    register_sdk_variants()
    for group in provisioning.alert_groups_api(CATALOG):
        back = galert.RuleGroup.from_json(group)
        assert _json(back) == _json(group)


def test_every_dashboard_has_city_variable_and_units() -> None:
    for built in BUILT:
        data = json.loads(FILES[f"dashboards/{built.uid}.json"])
        names = {v["name"] for v in data["templating"]["list"]}
        if built.uid != "qilu-pipeline":
            assert "city" in names, built.uid
        for panel in data["panels"]:
            if panel["type"] == "row":
                continue
            defaults = panel.get("fieldConfig", {}).get("defaults", {})
            if panel["type"] in ("timeseries", "stat", "gauge", "bargauge"):
                assert defaults.get("unit"), (built.uid, panel["title"])
                assert defaults.get("thresholds", {}).get("steps"), (built.uid, panel["title"])
    coverage = json.loads(FILES["dashboards/qilu-coverage.json"])
    assert {"city", "sector", "target"} <= {v["name"] for v in coverage["templating"]["list"]}
    pipeline = json.loads(FILES["dashboards/qilu-pipeline.json"])
    assert "sector" in {v["name"] for v in pipeline["templating"]["list"]}


def test_panels_have_the_expected_kinds() -> None:
    types = {q.panel_type for b in BUILT for q in b.queries}
    assert {"geomap", "table", "timeseries", "stat", "gauge", "bargauge", "piechart"} <= types


def test_sql_reads_only_the_logical_relations_of_adr_0002() -> None:
    specs = [q.query for b in BUILT for q in b.sql] + [
        s.query for s in alerts.all_specs(CATALOG) if isinstance(s.query, SqlSpec)
    ]
    assert specs
    for spec in specs:
        assert isinstance(spec, SqlSpec)
        used = set(re.findall(r"\b(?:FROM|JOIN)\s+([a-z_0-9]+)", spec.sql))
        ctes = set(re.findall(r"\b([a-z_0-9]+)(?:\([^)]*\))?\s+AS\s+\(", spec.sql))
        unknown = used - ADR_RELATIONS - ctes - {"unnest"}
        assert not unknown, (unknown, spec.sql[:200])
        assert not re.search(r"\breadings\b(?!_)", spec.sql), "raw readings scanned"


def test_targets_come_from_the_catalog() -> None:
    text = FILES["dashboards/qilu-coverage.json"]
    for target in CATALOG.targets:
        assert target.id in text
        assert f"DATE '{target.due.isoformat()}'" in text


def test_alert_rules_cover_the_issue() -> None:
    specs = {s.uid: s for s in alerts.all_specs(CATALOG)}
    assert set(specs) == {
        "qilu-target-behind",
        "qilu-site-silent",
        "qilu-devices-silent",
        "qilu-consumer-lag",
        "qilu-ingest-stalled",
        "qilu-dead-letters",
        "qilu-edge-drops",
        "qilu-storage-job-failing",
        "qilu-wal-archive-stalled",
        "qilu-backup-too-old",
    }
    for spec in specs.values():
        if isinstance(spec.query, SqlSpec):
            # alerts have no dashboard variables; Grafana would send "$city" verbatim
            assert "${" not in spec.query.sql
            assert "$city" not in spec.query.sql
            numeric = [c for c, t in spec.query.columns if t == "number"]
            assert len(numeric) == 1, spec.uid  # one value column; text columns become labels
    groups = provisioning.alert_groups_api(CATALOG)
    for group in groups:
        for rule in group["rules"]:
            assert rule["condition"] == "C"
            assert [d["refId"] for d in rule["data"]] == ["A", "B", "C"]
            assert rule["data"][0]["datasourceUid"] in (PG_UID, PROM_UID)
            assert rule["folderUID"] == alerts.FOLDER_UID
            assert rule["ruleGroup"] == group["title"]


def test_alert_file_escapes_template_dollars_for_grafanas_env_expansion() -> None:
    data = yaml.safe_load(FILES["provisioning/alerting/qilu.yaml"])
    assert data["apiVersion"] == 1
    rules = [r for g in data["groups"] for r in g["rules"]]
    assert len(rules) == len(alerts.all_specs(CATALOG))
    summary = next(r for r in rules if r["uid"] == "qilu-consumer-lag")["annotations"]["summary"]
    assert "$$labels.topic" in summary
    assert all("folderUID" not in r for r in rules)


def test_datasources_use_the_read_only_role_and_no_secret() -> None:
    data = yaml.safe_load(FILES["provisioning/datasources/qilu.yaml"])
    pg = next(d for d in data["datasources"] if d["uid"] == PG_UID)
    assert pg["user"] == "qilu_grafana"
    assert pg["secureJsonData"]["password"] == "${QILU_GRAFANA_DB_PASSWORD}"
    prom = next(d for d in data["datasources"] if d["uid"] == PROM_UID)
    assert prom["type"] == "prometheus"


def test_every_promql_metric_is_listed_with_its_exporter() -> None:
    exprs = [q.query.expr for b in BUILT for q in b.promql if isinstance(q.query, PromSpec)]
    exprs += [s.query.expr for s in alerts.all_specs(CATALOG) if isinstance(s.query, PromSpec)]
    names = {n for e in exprs for n in re.findall(r"\b(qilu_[a-z_]+)", e)}
    bases = {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}
    assert bases <= set(METRICS), bases - set(METRICS)


def test_generated_files_in_the_repository_are_up_to_date() -> None:
    out = REPO_ROOT / "dashboards" / "generated"
    stale = [rel for rel, text in FILES.items() if not (out / rel).is_file()]
    stale += [
        rel
        for rel, text in FILES.items()
        if (out / rel).is_file() and (out / rel).read_text(encoding="utf-8") != text
    ]
    assert not stale, f"run `qilu dashboards build`: {stale}"


def test_prometheus_configs_have_the_same_jobs() -> None:
    def jobs(name: str) -> dict[str, tuple[str, int | None]]:
        data = yaml.safe_load(Path(REPO_ROOT / "infra" / "prometheus" / name).read_text())
        out: dict[str, tuple[str, int | None]] = {}
        for job in data["scrape_configs"]:
            port: int | None = None  # file_sd: each target brings its own port
            if "static_configs" in job:
                port = int(job["static_configs"][0]["targets"][0].rsplit(":", 1)[1])
            elif "dns_sd_configs" in job:
                port = job["dns_sd_configs"][0]["port"]
            out[job["job_name"]] = (job.get("metrics_path", "/metrics"), port)
        return out

    local, compose = jobs("prometheus.yml"), jobs("prometheus.compose.yml")
    assert set(local) == set(compose) == {"prometheus", "qilu-ingest", "qilu-agents", "qilu-api"}
    for job in ("qilu-ingest", "qilu-api"):
        assert local[job] == compose[job], job
    # agents have no fixed port: the local configuration finds them in the platform's file
    assert local["qilu-agents"] == ("/metrics", None)
    assert compose["qilu-agents"][0] == "/metrics"
