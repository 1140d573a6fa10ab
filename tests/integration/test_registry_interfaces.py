"""`qilu registry ...`, `qilu audit` and the admin API against the real PostgreSQL, as a user
runs them (the README's sample inventories)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from qilu.catalog import load_catalog
from qilu.contract import Sector
from qilu.inventory import parse
from qilu.settings import DatabaseSettings, Settings
from storage import registry_admin, trajectories
from storage.db import connect
from storage.registry_admin import ImportSource
from tests.helpers import scalar, wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]
SAMPLES = ROOT / "docs" / "samples"
FIX = ROOT / "tests" / "fixtures" / "inventory"
SECRET = "registry-admin-secret-" + "k" * 48


@pytest.fixture
def jwt_secret() -> str:
    return SECRET


def test_cli_import_lifecycle_and_audit(
    cli: Any, api_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    db = api_settings.db
    sample = str(SAMPLES / "charging_inventory.csv")
    code, out, err = cli("registry", "import", sample, "--sector", "charging", "--dry-run")
    assert code == 0
    assert "devices: 24 added, 0 changed, 0 unchanged" in out
    assert "dry run: nothing changed" in err
    assert scalar(db, "SELECT count(*) FROM devices") == 0

    code, out, err = cli(
        "registry", "import", sample, "--sector", "charging", "--effective", "2026-10-01"
    )
    assert code == 0
    assert "applying in one transaction" in err
    assert scalar(db, "SELECT count(*) FROM devices") == 24
    code, out, err = cli("registry", "import", sample, "--sector", "charging")
    assert code == 0
    assert "devices: 0 added, 0 changed, 24 unchanged" in out
    assert "already matches the file" in err

    code, out, _ = cli(
        "registry", "import", str(FIX / "charging_errors.csv"), "--sector", "charging"
    )
    assert code == 1
    assert "charging_errors.csv:6: unknown city '379900'" in out
    assert "4 bad row(s) of 325: nothing imported" in out
    code, out, _ = cli(
        "registry", "import", str(FIX / "charging_gb18030.csv"), "--sector", "charging",
        "--encoding", "utf-8",
    )  # fmt: skip
    assert code == 1
    assert "not valid utf-8" in out
    assert scalar(db, "SELECT count(*) FROM devices") == 24  # neither touched the registry

    device = "CS370800-0001-01"
    code, out, _ = cli("registry", "maintain", "device", device, "--effective", "2026-11-01")
    assert code == 0
    assert '"status": "maintenance"' in out
    code, out, _ = cli(
        "registry", "decommission", "site", "CS370800-0001", "--effective", "2026-11-02"
    )
    assert code == 0
    assert out.count('"status": "decommissioned"') >= 2  # the site and its piles
    code, _, _ = cli("registry", "resume", "device", device)
    assert code == 1
    assert "is decommissioned: it cannot resume" in caplog.text
    code, out, _ = cli("registry", "history", "device", device)
    assert code == 0
    lines = out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "2026-10-01 .. 2026-11-01",
        "2026-11-01 .. 2026-11-02",
        "2026-11-02 .. now",
    ]
    assert '"status": "decommissioned"' in lines[-1]
    code, out, _ = cli("audit", "--entity", "device", "--id", device, "--json")
    assert code == 0
    actions = [line for line in out.splitlines() if line]
    assert len(actions) == 3  # add, maintain, decommission
    assert '"action": "device.decommission"' in actions[-1]

    code, out, _ = cli(
        "registry", "add", "site", "CS-NEW-1", "--sector", "charging", "--city", "Qingdao",
        "--name", "新站", "--attr", "public=是", "--attr", "networked=yes",
        "--effective", "2026-11-05",
    )  # fmt: skip
    assert code == 0
    assert '"city_code": "370200"' in out
    code, _, _ = cli("registry", "add", "device", "CS-NEW-1-01", "--site", "CS-NEW-1",
                     "--kind", "charging_pile", "--effective", "2026-11-05")  # fmt: skip
    assert code == 0
    code, out, _ = cli("registry", "move", "device", "CS-NEW-1-01", "--site", "CS370800-0002",
                       "--effective", "2026-11-06")  # fmt: skip
    assert code == 1  # that station does not exist in the sample
    other = out  # nothing printed on refusal
    assert other == ""
    code, out, _ = cli("registry", "move", "site", "CS-NEW-1", "--city", "济南",
                       "--effective", "2026-11-06")  # fmt: skip
    assert code == 0
    code, out, _ = cli("registry", "show", "site", "CS-NEW-1")
    assert code == 0
    assert '"city_code": "370100"' in out
    assert '"device_id": "CS-NEW-1-01"' in out

    code, out, _ = cli("registry", "export", "--sector", "charging", "--lang", "zh")
    assert code == 0
    assert out.splitlines()[0] == "站点编号,站点名称,城市,设备编号,设备类型,是否公共,是否联网"
    assert device not in out  # decommissioned: not exported


def _token(scope: str, sub: str = "ops") -> str:
    body = {
        "sub": sub,
        "iss": "qilu",
        "aud": "qilu-api",
        "exp": datetime.now(UTC) + timedelta(minutes=5),
        "scope": scope,
    }
    return jwt.encode(body, SECRET, algorithm="HS256")


@pytest.fixture
def client(api_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings)) as c:
        wait_for(lambda: c.get("/readyz").status_code == 200, 30, what="API ready")
        yield c


def test_admin_api_import_status_audit_and_names(client: TestClient) -> None:
    admin = {"Authorization": f"Bearer {_token('admin')}"}
    reader = {"Authorization": f"Bearer {_token('coverage:read telemetry:read', 'reader')}"}
    body = (SAMPLES / "ranch_inventory.csv").read_bytes()
    url = "/v1/admin/registry/import?sector=ranch&name=ranch_inventory.csv&effective=2026-10-01"

    r = client.post("/v1/admin/registry/import?sector=ranch", content=b"", headers=admin)
    assert r.status_code == 422
    assert r.json()["detail"] == "the file is empty: no header row"
    r = client.post(url, content=body, headers=reader)
    assert r.status_code == 403  # readers stay readers
    r = client.post(url + "&dry_run=true", content=body, headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["applied"] is False
    added = r.json()["summary"]["devices_added"]
    assert added == 29
    r = client.post(url, content=body, headers=admin)
    assert r.json()["applied"] is True
    r = client.post(url, content=body, headers=admin)
    assert r.json()["applied"] is False
    assert r.json()["summary"]["devices_unchanged"] == added

    bad = (FIX / "ranch_missing_column.csv").read_bytes()[:4000]
    r = client.post("/v1/admin/registry/import?sector=ranch", content=bad, headers=admin)
    assert r.status_code == 422
    assert r.json()["error"] == "invalid_inventory"
    assert r.json()["result"]["errors"][0] == {
        "line": 1,
        "reason": "missing required column 'smart' (智慧牧场)",
    }

    site = body.decode().splitlines()[1].split(",")[0]
    r = client.get(f"/v1/admin/registry/sites/{site}", headers=admin)
    assert r.status_code == 200
    device = r.json()["devices"][0]["device_id"]
    r = client.post(
        f"/v1/admin/registry/devices/{device}/status",
        json={"status": "decommissioned", "effective": "2026-12-01"},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    assert r.json()["changed"][0]["status"] == "decommissioned"
    r = client.post(
        f"/v1/admin/registry/devices/{device}/move", json={"site_id": site}, headers=admin
    )
    assert r.status_code == 409
    r = client.get(f"/v1/admin/registry/devices/{device}", headers=admin)
    assert [v["state"]["status"] for v in r.json()["history"]] == ["active", "decommissioned"]

    # the audit log, paged with the cursor
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 10, "entity": "device"}
        if cursor:
            params["cursor"] = cursor
        r = client.get("/v1/admin/audit", params=params, headers=admin)
        assert r.status_code == 200
        seen += r.json()["items"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == added + 1
    assert len({e["audit_id"] for e in seen}) == len(seen)
    assert seen[-1]["actor"] == "api:jwt:ops"
    assert seen[-1]["before"]["status"] == "active"
    assert client.get("/v1/admin/audit", headers=reader).status_code == 403

    names = client.get("/v1/names", headers=reader).json()
    assert {"key": "ranch", "name_en": "Ranches", "name_zh": "牧场", "sector": None} in names[
        "sectors"
    ]
    kinds = {k["key"]: k["name_zh"] for k in names["device_kinds"]}
    assert kinds["charging_pile"] == "充电桩"
    assert all(t["name_zh"] and t["name_en"] for t in names["targets"])
    assert len(names["cities"]) == 16


def _simulated(db: DatabaseSettings) -> None:
    """A database as `qilu run` leaves it: the simulation's shares recorded, three modelled
    coverage rows and one measured one."""
    with connect(db) as conn:
        trajectories.record_simulation(conn, {"charging": 0.02, "all": 0.02}, 1, 0.02)
        with conn.transaction():
            for day, synthetic in (
                (date(2026, 9, 1), True),
                (date(2026, 9, 2), True),
                (date(2026, 9, 3), True),
                (date(2026, 9, 4), False),
            ):
                conn.execute(
                    "INSERT INTO coverage_daily (day, target_id, city_code, numerator,"
                    " denominator, value, synthetic) VALUES (%s, %s, '370000', 1, 1, 1, %s)",
                    (day, "charging-networked-2025", synthetic),
                )


def _left(db: DatabaseSettings) -> tuple[int, int, int]:
    return (
        scalar(db, "SELECT count(*) FROM simulated_registry"),
        scalar(db, "SELECT count(*) FROM coverage_daily WHERE synthetic"),
        scalar(db, "SELECT count(*) FROM coverage_daily WHERE NOT synthetic"),
    )


def test_a_real_import_ends_a_simulated_registry_with_a_message_and_an_audit_row(
    cli: Any, api_settings: Settings
) -> None:
    db = api_settings.db
    _simulated(db)
    sample = str(SAMPLES / "charging_inventory.csv")
    code, _, err = cli("registry", "import", sample, "--sector", "charging", "--dry-run")
    assert code == 0
    assert "this import would end the simulated registry" in err
    assert "the 3 modelled coverage rows would be deleted" in err
    assert _left(db) == (2, 3, 1)  # a dry run changes nothing

    code, _, err = cli("registry", "import", sample, "--sector", "charging")
    assert code == 0
    assert (
        "this import ended the simulated registry: thresholds are no longer scaled to its share"
        " of the province (all 2.0%, charging 2.0%), and the 3 modelled coverage rows were"
        " deleted" in err
    )
    assert _left(db) == (0, 0, 1)  # the measured row stays
    assert scalar(db, "SELECT count(*) FROM audit_log WHERE action = 'registry.simulation_ended'")
    with connect(db) as conn:
        row = conn.execute(
            "SELECT entity, before, after FROM audit_log WHERE action = 'registry.simulation_ended'"
        ).fetchone()
    assert row is not None
    assert row[0] == "import"
    assert row[1] == {
        "shares": {"all": 0.02, "charging": 0.02},
        "seed": 1,
        "scale": 0.02,
        "synthetic_rows": 3,
    }
    assert row[2] is None
    # the registry is now a real one: nothing more to end, nothing said
    code, _, err = cli(
        "registry", "import", str(SAMPLES / "ranch_inventory.csv"), "--sector", "ranch"
    )
    assert code == 0
    assert "simulated registry" not in err


def test_the_admin_api_import_ends_a_simulated_registry(
    client: TestClient, api_settings: Settings
) -> None:
    db = api_settings.db
    _simulated(db)
    admin = {"Authorization": f"Bearer {_token('admin')}"}
    body = (SAMPLES / "ranch_inventory.csv").read_bytes()
    url = "/v1/admin/registry/import?sector=ranch&name=ranch_inventory.csv"
    r = client.post(url + "&dry_run=true", content=body, headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["simulation_ended"].startswith("this import would end the simulated registry")
    assert _left(db) == (2, 3, 1)
    r = client.post(url, content=body, headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["applied"] is True
    assert r.json()["simulation_ended"].startswith("this import ended the simulated registry")
    assert _left(db) == (0, 0, 1)
    reader = {"Authorization": f"Bearer {_token('coverage:read')}"}
    networked = next(
        t
        for t in client.get("/v1/coverage", headers=reader).json()
        if t["target_id"] == "charging-networked-2025"
    )
    assert networked["scaled"] is False
    assert networked["threshold_effective"] == networked["threshold"] == 100_000


def test_the_api_role_may_end_a_simulation_but_not_delete_its_rows_itself(
    api_settings: Settings,
) -> None:
    """qilu_api runs the import's ending of the simulation (a SECURITY DEFINER function of
    migration 060) without DELETE on the tables."""
    db = api_settings.db
    _simulated(db)
    data = (SAMPLES / "ranch_inventory.csv").read_bytes()
    inv = parse(data, Sector.RANCH, load_catalog())
    src = ImportSource("ranch_inventory.csv", hashlib.sha256(data).hexdigest())
    with connect(db) as conn:
        conn.execute("SET ROLE qilu_api")
        conn.commit()
        for statement in ("DELETE FROM simulated_registry", "DELETE FROM coverage_daily"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute(statement.encode())
        d = registry_admin.import_inventory(
            conn, inv, actor="api:test", effective=date(2026, 10, 1), source=src, dry_run=False
        )
    assert d.ends_simulation is not None
    assert d.ends_simulation.synthetic_rows == 3
    assert _left(db) == (0, 0, 1)
