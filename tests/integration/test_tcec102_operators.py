"""``qilu operators`` and ``/v1/admin/operators`` on the real database: keys shown once,
stored sealed, every change audited; connectors linked to registry piles."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.cli import create_key
from interconnect.tcec102 import exchange as x
from interconnect.tcec102 import operators as ops
from interconnect.tcec102 import server
from interconnect.tcec102.secrets import box
from ops.cli import build_parser
from qilu.contract import Sector
from qilu.registry import Device, Registry, Site
from qilu.settings import Settings
from storage import audit
from storage.db import connect
from storage.registry_store import load_registry
from tests.helpers import scalar, wait_for

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


def test_a_connector_linked_to_a_device_registered_otherwise_is_stored(
    settings: Settings, tmp_path: Path, start_ingest: Callable[[], object]
) -> None:
    """`qilu operators link` with a device_id of another site (an OCPP agent's pile) gives
    the operator's agent that site: its pushes are stored, not refused as foreign_site."""
    reg = Registry()
    for sid in ("CHG-OWN", "CHG-OCPP"):
        reg.sites.append(Site(sid, Sector.CHARGING, "370100", sid, public=True, networked=True))
    reg.devices.append(Device("OCPP-PILE-7", "CHG-OCPP", "charging_pile"))
    with connect(settings.db) as conn:
        load_registry(conn, reg)
    settings = settings.model_copy(
        update={"tcec102": settings.tcec102.model_copy(update={"refresh_s": 0.2})}
    )
    shown = ops.add(
        settings, "MD0000004", name="", endpoint_url="", site_ids=["CHG-OWN"], cities=[],
        outbound=None, actor="test",
    )  # fmt: skip
    csv_file = tmp_path / "connectors.csv"
    csv_file.write_text("connector_id,equipment_id,station_id,device_id\nK1,P7,S,OCPP-PILE-7\n")
    assert _run(settings, "operators", "link", "MD0000004", "--file", str(csv_file)) == 0
    with connect(settings.db) as conn:
        sites = conn.execute(
            "SELECT site_id FROM agent_sites WHERE agent_id = 'tcec102-MD0000004' ORDER BY 1"
        ).fetchall()
        trail = audit.query(conn, entity="agent", entity_id="tcec102-MD0000004")
    assert sites == [("CHG-OCPP",), ("CHG-OWN",)]
    assert [e.action for e in trail] == ["agent.provision", "agent.sites"]

    start_ingest()
    keys = shown.inbound
    with TestClient(create_app(settings)) as client:
        ep: server.Endpoint = client.app.state.tcec102  # type: ignore[attr-defined]

        def ready() -> bool:
            link = ep.directory.links.get("MD0000004")
            return ep.sink is not None and link is not None and "K1" in link.connectors

        wait_for(ready, what="the endpoint knows the connector")
        now = datetime.now(UTC)
        token, _ = x.issue_token(box(settings).token_key, "MD0000004", 1, now, timedelta(hours=1))
        payload = {"ConnectorStatusInfo": {"ConnectorID": "K1", "Status": 3}}
        resp = client.post(
            "/evcs/v1/notification_stationStatus",
            json=x.seal_request("MD0000004", payload, keys, now).as_json(),
            headers={"Authorization": f"Bearer {token}"},
        )
        assert x.open_response(resp.content, keys).ret == 0
    db = settings.db
    wait_for(
        lambda: (
            scalar(
                db,
                "SELECT count(*) FROM readings r JOIN devices d USING (device_pk)"
                " WHERE d.device_id = 'OCPP-PILE-7'",
            )
            == 2
        ),
        what="the pushed readings stored for the OCPP pile",
    )


def test_the_endpoint_url_handed_to_operators_is_the_public_one(settings: Settings) -> None:
    _registry(settings)
    public = settings.model_copy(
        update={
            "tcec102": settings.tcec102.model_copy(
                update={"public_url": "https://evcs.example.org/evcs/v1/"}
            ),
            "api": settings.api.model_copy(update={"host": "0.0.0.0"}),  # noqa: S104 - a bind
        }
    )
    shown = ops.add(
        public, "ME0000005", name="", endpoint_url="", site_ids=["CHG-J-9"], cities=[],
        outbound=None, actor="test",
    )  # fmt: skip
    assert shown.as_json()["endpoint"] == "https://evcs.example.org/evcs/v1"
