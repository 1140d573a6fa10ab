"""docker-compose.yml against the Compose Specification's JSON schema, and the stack's shape.

No Docker engine runs here, so the file is checked statically: the schema is the one the npm
package ``dclint`` (a Compose linter, MIT) ships as ``schemas/compose.schema.json``, a copy of
the compose-spec project's schema. ``npm pack`` fetches the pinned version once (integrity
checked) into the state folder. It is in the integration tier because it needs the npm registry.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from qilu.settings import REPO_ROOT, load

pytestmark = pytest.mark.integration

PACKAGE = "dclint@3.1.0"
INTEGRITY = (
    "sha512-afTGdzRFUXK4yCpIiEW/LOR+9TOMEDhNldDp56VCWzn7JDmD451PcUi640"
    "GGlMHgbHKJ10rDBm4PtpcBbjqlXw=="
)
SCHEMA_MEMBER = "package/schemas/compose.schema.json"
COMPOSE = REPO_ROOT / "docker-compose.yml"
# every service the platform needs (issue 6): brokers, database, migrations, ingest, API,
# agents, Prometheus, Grafana (and Mosquitto for the MQTT collectors)
NEEDED = {
    "kafka",
    "timescaledb",
    "mosquitto",
    "migrate",
    "ingest",
    "api",
    "agents",
    "prometheus",
    "grafana",
}
ONE_SHOT = {"migrate"}


def compose_schema() -> dict[str, Any]:
    cache = load().services.state_dir / "cache" / "compose-spec"
    schema_file = cache / "compose.schema.json"
    if not schema_file.exists():
        cache.mkdir(parents=True, exist_ok=True)
        npm = shutil.which("npm")
        assert npm, "npm is needed to fetch the Compose schema package"
        done = subprocess.run(
            [npm, "pack", PACKAGE, "--pack-destination", str(cache), "--silent"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        tgz = cache / done.stdout.strip().splitlines()[-1]
        digest = base64.b64encode(hashlib.sha512(tgz.read_bytes()).digest()).decode()
        assert f"sha512-{digest}" == INTEGRITY, f"{tgz.name}: integrity mismatch"
        with tarfile.open(tgz) as tar:
            member = tar.extractfile(SCHEMA_MEMBER)
            assert member is not None
            schema_file.write_bytes(member.read())
        tgz.unlink()
    data: dict[str, Any] = json.loads(schema_file.read_text())
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def test_compose_file_is_valid_against_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = compose_schema()
    assert schema.get("title") == "Compose Specification"
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)
    # the validator really rejects a broken file (so the check above can fail)
    broken = json.loads(json.dumps(compose))
    broken["services"]["grafana"]["helthcheck"] = broken["services"]["grafana"]["healthcheck"]
    broken["services"]["api"]["depends_on"]["migrate"]["condition"] = "whenever"
    assert len(list(validator.iter_errors(broken))) >= 2


def test_every_needed_service_is_there_with_a_healthcheck(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= NEEDED, NEEDED - set(services)
    for name in NEEDED - ONE_SHOT:
        check = services[name].get("healthcheck")
        assert check, f"{name}: no healthcheck"
        assert check.get("test"), f"{name}: healthcheck without a test"
        assert not check.get("disable"), name
    assert services["migrate"]["restart"] == "no"


def test_dependencies_wait_for_health_and_for_the_migrations(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("ingest", "api", "agents", "grafana"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    assert services["grafana"]["depends_on"]["timescaledb"]["condition"] == "service_healthy"
    for dep, cond in services["migrate"]["depends_on"].items():
        assert cond["condition"] == "service_healthy", dep


def test_images_are_the_ones_the_issue_names(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    assert re.fullmatch(r"timescale/timescaledb:[\d.]+-pg17", services["timescaledb"]["image"])
    assert services["grafana"]["image"].startswith("grafana/grafana")
    assert services["prometheus"]["image"].startswith("prom/prometheus:")


def test_grafana_and_prometheus_are_provisioned_from_the_repository(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in services["grafana"]["volumes"]}
    assert mounts["./dashboards/generated/provisioning"] == "/etc/grafana/provisioning"
    assert mounts["./dashboards/generated/dashboards"] == "/var/lib/grafana/dashboards/qilu"
    for local in (p for p in mounts if p.startswith("./")):
        assert (REPO_ROOT / local).is_dir(), local
    provider = yaml.safe_load(
        (REPO_ROOT / "dashboards/generated/provisioning/dashboards/qilu.yaml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards/qilu"
    prom = {v.split(":")[0]: v.split(":")[1] for v in services["prometheus"]["volumes"]}
    assert (
        Path(REPO_ROOT / prom["./infra/prometheus/prometheus.compose.yml"].lstrip("/")) != COMPOSE
    )
    assert (REPO_ROOT / "infra/prometheus/prometheus.compose.yml").is_file()


def test_secrets_come_from_the_environment_without_defaults(compose: dict[str, Any]) -> None:
    text = COMPOSE.read_text()
    for var in (
        "QILU_DB_PASSWORD",
        "QILU_GRAFANA_DB_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
        "QILU_TCEC102_SECRET_KEY",
    ):
        uses = re.findall(r"\$\{" + var + r"([^}]*)\}", text)
        assert uses, var
        assert all(u.startswith(":?") for u in uses), f"{var} must be required, not defaulted"
    assert "QILU_ENV: ${QILU_ENV:-production}" in text  # development defaults refused
    del compose


def test_operators_are_pulled_on_a_schedule(compose: dict[str, Any]) -> None:
    """T/CEC 102 pulls keep the operators' piles fresh (ADR 0015): one long-running
    `qilu operators pull` (no --once), after the migrations, with the secret key."""
    pull = compose["services"]["operators-pull"]
    assert pull["command"] == ["qilu", "operators", "pull"]
    assert pull["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert pull["restart"] == "unless-stopped"
    assert "QILU_TCEC102__SECRET_KEY" in pull["environment"]
