"""IEC 104 point tables against the real PostgreSQL: `qilu points import|export` and the admin
API check a utility's table against the registry (nothing stored on any error, errors with
their lines), store it audited, and write the table the agent's collector then reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from collectors.iec104.collector import Iec104Collector, Target
from qilu.settings import Settings
from storage.db import connect
from tests.helpers import scalar
from tests.integration import test_registry_interfaces as registry_interfaces

pytestmark = pytest.mark.integration
# the registry interface tests' JWT secret, token maker and API client, reused (the API
# settings and the CLI runner are the integration conftest's)
jwt_secret = registry_interfaces.jwt_secret
_token = registry_interfaces._token
client = registry_interfaces.client

AGENT = "edge-jinan-01"
GOOD = """信息体地址,类型,设备编号,指标,系数,单位,描述,备注
16385,M_ME_NC_1,SUB-T-0001,oil_temp_c,,degC,1号主变油温,
16386,M_ME_NB_1,SUB-T-0001,load_pct,0.1,%,1号主变负载率,
16387,13,SUB-T-0002,voltage_kv,,kV,220kV I母电压,
1,M_SP_TB_1,SUB-T-0003,sf6_alarm,,,SF6低气压告警,
"""
BAD = """ioa,type,device_id,metric,scale
16385,M_ME_NC_1,SUB-T-0001,oil_temp_c,
16386,M_ME_NC_1,SUB-T-0001,voltage_kv,
16387,M_ME_NC_1,SUB-T-0009,voltage_kv,
16388,M_ME_NC_1,SUB-OTHER-1,voltage_kv,
16389,M_ME_NC_1,SUB-T-0002,voltage_kv,0
"""


def seed(settings: Settings) -> None:
    """Two substation sites, one the agent's; a transformer, a bus meter and a GIS monitor on
    it, a bus meter on the other site."""
    with connect(settings.db) as conn, conn.transaction():
        for site in ("SUB-T", "SUB-OTHER"):
            conn.execute(
                "INSERT INTO sites (site_id, sector, city_code, name, voltage_kv)"
                " VALUES (%s, 'substation', '370100', %s, 220)",
                (site, f"{site} 220kV"),
            )
        for dev, site, kind in (
            ("SUB-T-0001", "SUB-T", "transformer"),
            ("SUB-T-0002", "SUB-T", "bus_meter"),
            ("SUB-T-0003", "SUB-T", "gis_monitor"),
            ("SUB-OTHER-1", "SUB-OTHER", "bus_meter"),
        ):
            conn.execute(
                "INSERT INTO devices (device_id, site_id, kind) VALUES (%s, %s, %s)",
                (dev, site, kind),
            )
        conn.execute("INSERT INTO agents (agent_id) VALUES (%s)", (AGENT,))
        conn.execute("INSERT INTO agent_sites VALUES (%s, 'SUB-T')", (AGENT,))


def test_cli_checks_against_the_registry_stores_audited_and_the_agent_reads_it(
    cli: Any, api_settings: Settings, tmp_path: Path
) -> None:
    db = api_settings.db
    seed(api_settings)
    bad = tmp_path / "bad.csv"
    bad.write_text(BAD, encoding="utf-8")
    code, out, _ = cli("points", "import", str(bad), "--agent", AGENT, "--station", "east")
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith(f"{bad}:3: metric voltage_kv is not a metric of SUB-T-0001's")
    assert lines[1] == f"{bad}:4: device SUB-T-0009 is not in the registry"
    assert lines[2] == (
        f"{bad}:5: device SUB-OTHER-1 is on site SUB-OTHER, not one of agent {AGENT}'s sites"
    )
    assert lines[3].startswith(f"{bad}:6: scale '0' is not a non-zero number")
    assert lines[4] == "4 bad row(s) of 5: nothing imported"
    assert scalar(db, "SELECT count(*) FROM point_table_points") == 0

    good = tmp_path / "east.csv"
    good.write_bytes(GOOD.encode("gb18030"))  # as a Chinese Excel saves it
    checked = tmp_path / "checked.csv"
    code, _, err = cli(
        "points", "import", str(good), "--agent", AGENT, "--station", "east", "--dry-run",
        "-o", str(checked),
    )  # fmt: skip
    assert code == 0, err
    assert "4 points, would change (4 added" in err
    assert f"would write {checked}" in err
    assert scalar(db, "SELECT count(*) FROM point_table_points") == 0
    assert not checked.exists()  # a dry run changes nothing, no file either

    code, _, err = cli(
        "points", "import", str(good), "--agent", AGENT, "--station", "east", "-o", str(checked)
    )
    assert code == 0, err
    assert scalar(db, "SELECT count(*) FROM point_table_points") == 4
    assert scalar(db, "SELECT count(*) FROM audit_log WHERE action = 'point_table.import'") == 1
    code, _, err = cli("points", "import", str(good), "--agent", AGENT, "--station", "east")
    assert "unchanged (0 added, 0 changed, 0 removed)" in err
    assert scalar(db, "SELECT count(*) FROM audit_log WHERE action = 'point_table.import'") == 1

    exported = tmp_path / "exported.csv"
    code, _, _ = cli("points", "export", "--agent", AGENT, "--station", "east", "-o", str(exported))
    assert code == 0
    assert exported.read_text() == checked.read_text()
    # the agent's collector reads the exported table as its station's point table
    c = Iec104Collector.from_config(
        "sub",
        {
            "type": "iec104",
            "stations": [{"name": "east", "host": "192.0.2.1", "point_table": str(exported)}],
        },
    )
    c.validate()
    assert c.stations[0].table[16386] == Target("SUB-T-0001", "load_pct", 0.1, 0.0)
    assert sorted(c.stations[0].table) == [1, 16385, 16386, 16387]


def test_admin_api_imports_and_exports_a_point_table(
    client: TestClient, api_settings: Settings
) -> None:
    seed(api_settings)
    admin = {"Authorization": f"Bearer {_token('admin')}"}
    reader = {"Authorization": f"Bearer {_token('coverage:read telemetry:read', 'reader')}"}
    url = f"/v1/admin/points/{AGENT}/east"
    assert client.post(url, content=GOOD.encode(), headers=reader).status_code == 403
    r = client.post(url, content=BAD.encode(), headers=admin)
    assert r.status_code == 422
    assert [e["line"] for e in r.json()["result"]["errors"]] == [3, 4, 5, 6]
    assert client.get(url, headers=admin).status_code == 404
    r = client.post(url + "?name=east.csv", content=GOOD.encode(), headers=admin)
    assert r.status_code == 200, r.text
    assert (r.json()["added"], r.json()["applied"]) == (4, True)
    r = client.get(url, headers=admin)
    assert r.status_code == 200
    assert r.text.splitlines()[0] == "ioa,type,device_id,metric,scale,offset,unit,description"
    assert "16386,M_ME_NB_1,SUB-T-0001,load_pct,0.1,0,%,1号主变负载率" in r.text
    r = client.post("/v1/admin/points/nobody/east", content=GOOD.encode(), headers=admin)
    assert r.status_code == 422
    assert "not registered" in r.json()["detail"]
