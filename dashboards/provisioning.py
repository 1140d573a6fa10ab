"""Everything Grafana needs, generated from one place: data sources, dashboards, alert rules.

``render`` returns the files Grafana's file provisioning reads (written by ``qilu dashboards
build`` into ``dashboards/generated/``, mounted by docker-compose.yml); ``qilu dashboards sync``
pushes the same objects through the HTTP API.

Layout of the generated folder::

    dashboards/<uid>.json                  one file per dashboard
    provisioning/datasources/qilu.yaml     PostgreSQL (read-only role qilu_grafana), Prometheus
    provisioning/dashboards/qilu.yaml      a file provider for the folder above
    provisioning/alerting/qilu.yaml        the alert rule groups

Secrets are never written: the data source password is ``${QILU_GRAFANA_DB_PASSWORD}``, which
Grafana expands from its environment when it reads the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from dashboards import alerts, coverage, pipeline, sectors
from dashboards.board import BuiltDashboard
from dashboards.model import PG_TYPE, PG_UID, PROM_TYPE, PROM_UID
from qilu.catalog import Catalog

GRAFANA_DASHBOARDS_PATH = "/var/lib/grafana/dashboards/qilu"
PASSWORD_FROM_ENV = "${QILU_GRAFANA_DB_PASSWORD}"  # noqa: S105 - a reference, expanded by Grafana
GRAFANA_ROLE = "qilu_grafana"


@dataclass(frozen=True, slots=True)
class DataSources:
    """Where Grafana finds the database and Prometheus (as Grafana sees them)."""

    pg_host: str = "timescaledb:5432"
    pg_database: str = "qilu"
    pg_user: str = GRAFANA_ROLE
    pg_password: str = PASSWORD_FROM_ENV
    pg_sslmode: str = "disable"
    pg_version: int = 1700
    timescaledb: bool = False  # plain-SQL macro expansions work in both storage modes
    prometheus_url: str = "http://prometheus:9090"
    scrape_interval: str = "15s"


def all_dashboards(catalog: Catalog) -> list[BuiltDashboard]:
    return [
        coverage.build(catalog),
        *sectors.build_all(catalog),
        pipeline.build(),
    ]


def to_plain(obj: object) -> Any:
    """An SDK model -> plain JSON data (dicts, lists, str, numbers)."""
    return json.loads(json.dumps(obj, cls=JSONEncoder))


def dashboard_json(built: BuiltDashboard) -> dict[str, Any]:
    data: dict[str, Any] = to_plain(built.model)
    return data


def datasources(ds: DataSources) -> list[dict[str, Any]]:
    """Data sources in the shape both the provisioning file and ``POST /api/datasources`` take."""
    return [
        {
            "uid": PG_UID,
            "name": "Qilu TimescaleDB",
            "type": PG_TYPE,
            "access": "proxy",
            "url": ds.pg_host,
            "user": ds.pg_user,
            "isDefault": True,
            "editable": False,
            "jsonData": {
                "database": ds.pg_database,
                "sslmode": ds.pg_sslmode,
                "postgresVersion": ds.pg_version,
                "timescaledb": ds.timescaledb,
                "maxOpenConns": 5,
                "connMaxLifetime": 14400,
            },
            "secureJsonData": {"password": ds.pg_password},
        },
        {
            "uid": PROM_UID,
            "name": "Qilu Prometheus",
            "type": PROM_TYPE,
            "access": "proxy",
            "url": ds.prometheus_url,
            "isDefault": False,
            "editable": False,
            "jsonData": {"timeInterval": ds.scrape_interval, "httpMethod": "POST"},
        },
    ]


_FILE_RULE_KEYS = (
    "uid",
    "title",
    "condition",
    "data",
    "noDataState",
    "execErrState",
    "for",
    "annotations",
    "labels",
    "isPaused",
)


def alert_groups_api(catalog: Catalog) -> list[dict[str, Any]]:
    """Rule groups as ``PUT /api/v1/provisioning/folder/{uid}/rule-groups/{group}`` takes them."""
    return [to_plain(g) for g in alerts.rule_groups(catalog)]


def _escape_dollars(value: Any) -> Any:
    """Grafana expands ``$VAR`` in provisioning files; ``$$`` is a literal ``$`` (templates)."""
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, dict):
        return {k: _escape_dollars(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape_dollars(v) for v in value]
    return value


def alert_file(catalog: Catalog) -> dict[str, Any]:
    """The same groups in Grafana's alerting provisioning file format (apiVersion 1)."""
    out = [
        {
            "orgId": 1,
            "name": group["title"],
            "folder": alerts.FOLDER_TITLE,
            "interval": f"{group['interval']}s",
            "rules": [
                _escape_dollars({k: r[k] for k in _FILE_RULE_KEYS if k in r})
                for r in group.get("rules", [])
            ],
        }
        for group in alert_groups_api(catalog)
    ]
    return {"apiVersion": 1, "groups": out}


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (SQL) as literal blocks, so the files read like the code."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _yaml(data: object, header: str) -> str:
    body = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return (
        f"# {header}\n# Generated by `qilu dashboards build`; edit dashboards/*.py instead.\n{body}"
    )


def render(
    catalog: Catalog,
    ds: DataSources | None = None,
    dashboards_path: str = GRAFANA_DASHBOARDS_PATH,
) -> dict[str, str]:
    """Relative path -> file text of everything Grafana provisions."""
    ds = ds or DataSources()
    files: dict[str, str] = {}
    for built in all_dashboards(catalog):
        files[f"dashboards/{built.uid}.json"] = (
            json.dumps(dashboard_json(built), indent=2, ensure_ascii=False) + "\n"
        )
    files["provisioning/datasources/qilu.yaml"] = _yaml(
        {"apiVersion": 1, "datasources": datasources(ds)},
        "Data sources: the database through the read-only role, and Prometheus.",
    )
    files["provisioning/dashboards/qilu.yaml"] = _yaml(
        {
            "apiVersion": 1,
            "providers": [
                {
                    "name": "qilu",
                    "orgId": 1,
                    "folder": alerts.FOLDER_TITLE,
                    "folderUid": alerts.FOLDER_UID,
                    "type": "file",
                    "disableDeletion": True,
                    "allowUiUpdates": False,
                    "updateIntervalSeconds": 60,
                    "options": {"path": dashboards_path},
                }
            ],
        },
        "Dashboards: the JSON files generated next to this folder.",
    )
    files["provisioning/alerting/qilu.yaml"] = _yaml(
        alert_file(catalog), "Alert rules (Grafana unified alerting)."
    )
    return files
