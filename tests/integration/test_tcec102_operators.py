"""``qilu operators`` and ``/v1/admin/operators`` on the real database: keys shown once,
stored sealed, every change audited; connectors linked to registry piles."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.cli import create_key
from qilu.cli import build_parser
from qilu.contract import Sector
from qilu.registry import Device, Registry, Site
from qilu.settings import Settings
from storage import audit
from storage.db import connect
from storage.registry_store import load_registry

pytestmark = pytest.mark.integration
OUTBOUND = {
    "OperatorSecret": "their-secret-01",
    "DataSecret": "abcdefghijklmnop",
    "DataSecretIV": "ponmlkjihgfedcba",
    "SigSecret": "their-sig-secret",
}


def _registry(settings: Settings) -> None:
    reg = Registry()
    reg.sites.append(Site("CHG-J-9", Sector.CHARGING, "370100", "J9", public=True, networked=True))
    reg.devices.append(Device("tcec102.MA0000001.EQ1", "CHG-J-9", "charging_pile"))
    with connect(settings.db) as conn:
        load_registry(conn, reg)


def _run(settings: Settings, *argv: str) -> int:
    args = build_parser().parse_args(list(argv))
    code: int = args.handler(args, settings)
    return code


def test_cli_add_link_rotate_revoke(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _registry(settings)
    out, outbound = tmp_path / "keys.json", tmp_path / "outbound.json"
    outbound.write_text(json.dumps(OUTBOUND))
    assert (
        _run(
            settings,
            *("operators", "add", "MA0000001", "--name", "国网", "--city", "370100"),
            *("--outbound-keys", str(outbound), "--out", str(out)),
        )
        == 0
    )
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    shown = json.loads(out.read_text())
    assert shown["OperatorID"] == "MA0000001"
    assert len(shown["DataSecret"]) == len(shown["DataSecretIV"]) == 16
    assert shown["endpoint"].endswith("/evcs/v1")

    csv_file = tmp_path / "connectors.csv"
    csv_file.write_text("connector_id,equipment_id,station_id\nEQ1-1,EQ1,ST1\nEQ1-2,EQ1,ST1\n")
    assert _run(settings, "operators", "link", "MA0000001", "--file", str(csv_file)) == 0
    bad = tmp_path / "bad.csv"
    bad.write_text("connector_id,equipment_id\nX-1,NOPE\n")
    with pytest.raises(Exception, match="devices not in the registry"):
        _run(settings, "operators", "link", "MA0000001", "--file", str(bad))

    capsys.readouterr()
    assert _run(settings, "operators", "rotate", "MA0000001") == 0
    rotated = json.loads(capsys.readouterr().out)
    assert rotated["key_no"] == 2
    assert rotated["SigSecret"] != shown["SigSecret"]
    assert _run(settings, "operators", "show", "MA0000001") == 0
    show = capsys.readouterr().out
    assert json.loads(show)["connectors"] == 2
    for secret in (*shown.values(), *OUTBOUND.values(), rotated["SigSecret"]):
        if isinstance(secret, str) and len(secret) >= 15:
            assert secret not in show  # never a key after it was shown
    assert _run(settings, "operators", "revoke", "MA0000001") == 0
    assert _run(settings, "operators", "list", "--all", "--json") == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line[:1] == "{"]
    assert listed[0]["revoked_at"] is not None
    with connect(settings.db) as conn:
        trail = audit.query(conn, entity="operator", entity_id="MA0000001")
        agent = audit.query(conn, entity="agent", entity_id="tcec102-MA0000001")
        stored = conn.execute("SELECT secrets FROM operators").fetchone()
    assert [e.action for e in trail] == ["operator.add", "operator.rotate", "operator.revoke"]
    assert [e.action for e in agent] == ["agent.provision", "agent.revoke"]
    assert stored is not None
    for secret in (*OUTBOUND.values(), rotated["OperatorSecret"], rotated["DataSecret"]):
        assert secret.encode() not in bytes(stored[0])


def test_admin_api(settings: Settings) -> None:
    _registry(settings)
    _, admin = create_key(settings, name="admin", scopes=["admin"])
    _, reader = create_key(settings, name="reader", scopes=["coverage:read"])
    body = {"operator_id": "MA0000001", "sites": ["CHG-J-9"], "outbound_keys": OUTBOUND}
    with TestClient(create_app(settings)) as c:
        auth = {"Authorization": f"Bearer {admin}"}
        denied = c.post(
            "/v1/admin/operators", json=body, headers={"Authorization": f"Bearer {reader}"}
        )
        assert denied.status_code == 403
        r = c.post("/v1/admin/operators", json=body, headers=auth)
        assert r.status_code == 201, r.text
        made = r.json()
        assert made["operator"]["agent_id"] == "tcec102-MA0000001"
        assert len(made["SigSecret"]) == 16
        assert c.post("/v1/admin/operators", json=body, headers=auth).status_code == 409
        unknown = {**body, "operator_id": "MB0000002", "sites": ["NO-SUCH"]}
        assert c.post("/v1/admin/operators", json=unknown, headers=auth).status_code == 409
        short = {
            **body,
            "operator_id": "MC0000003",
            "outbound_keys": {**OUTBOUND, "DataSecret": "x"},
        }
        assert c.post("/v1/admin/operators", json=short, headers=auth).status_code == 422
        listed = c.get("/v1/admin/operators", headers=auth).json()
        assert [o["operator_id"] for o in listed] == ["MA0000001"]
        assert listed[0]["link"]["failures"] == 0
        assert made["SigSecret"] not in json.dumps(listed)
        r = c.post("/v1/admin/operators/MA0000001/rotate", headers=auth)
        assert r.status_code == 200, r.text
        assert r.json()["operator"]["key_no"] == 2
        assert c.get("/v1/admin/operators/XX0000000", headers=auth).status_code == 404
        r = c.post("/v1/admin/operators/MA0000001/revoke", headers=auth)
        assert r.json()["revoked_at"] is not None
        assert c.post("/v1/admin/operators/MA0000001/rotate", headers=auth).status_code == 409
    with connect(settings.db) as conn:
        trail = audit.query(conn, entity="operator", entity_id="MA0000001")
    assert {e.actor for e in trail} == {f"api:key:{admin.split('_')[1]}"}
