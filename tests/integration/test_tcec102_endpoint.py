"""The T/CEC 102 endpoint on the real servers: operator -> HTTP -> Kafka -> ingest -> PostgreSQL.

An operator is added with the project's own administration code, its connectors linked to
registry piles; the API runs with its lifespan (the endpoint's Kafka producer and directory
refresher are real). Requests are sealed with the exchange layer, which the unit tests check
against independent code and published vectors (tests/unit/test_tcec102_exchange.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from interconnect.tcec102 import exchange as x
from interconnect.tcec102 import operators as ops
from interconnect.tcec102.secrets import box
from qilu.contract import Sector
from qilu.registry import Device, Registry, Site
from qilu.settings import Settings
from storage import audit
from storage import operators as store
from storage.db import connect
from storage.registry_store import load_registry
from tests.helpers import dead_letters, scalar, wait_for

pytestmark = pytest.mark.integration
OP, OTHER = "MA0000001", "MB0000002"
PREFIX = "/evcs/v1"


def _registry() -> Registry:
    reg = Registry()
    reg.sites.append(Site("CHG-OP-1", Sector.CHARGING, "370100", "J", public=True, networked=True))
    for op in (OP, OTHER):
        for n in (1, 2):
            reg.devices.append(Device(f"tcec102.{op}.E{n}", "CHG-OP-1", "charging_pile"))
    return reg


@dataclass
class Harness:
    settings: Settings
    client: TestClient
    keys: dict[str, x.KeySet]

    def post(
        self,
        interface: str,
        body: dict[str, Any] | bytes,
        token: str | None = None,
    ) -> Any:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.client.post(f"{PREFIX}/{interface}", content=raw, headers=headers)

    def sealed(
        self, op: str, payload: dict[str, Any], at: datetime | None = None
    ) -> dict[str, str]:
        return x.seal_request(op, payload, self.keys[op], at or datetime.now(UTC)).as_json()

    def token(self, op: str = OP) -> str:
        keys = self.keys[op]
        resp = self.post(
            "query_token",
            self.sealed(op, {"OperatorID": op, "OperatorSecret": keys.operator_secret}),
        )
        out = x.open_response(resp.content, keys)
        assert out.ret == 0
        assert out.payload is not None
        assert out.payload["SuccStat"] == 0
        assert out.payload["TokenAvailableTime"] == 7200
        return str(out.payload["AccessToken"])

    def push(self, op: str, connector: str, status: int, token: str) -> x.Response:
        payload = {"ConnectorStatusInfo": {"ConnectorID": connector, "Status": status}}
        resp = self.post("notification_stationStatus", self.sealed(op, payload), token)
        assert resp.status_code == 200, resp.text
        return x.open_response(resp.content, self.keys[op])


def _harness(settings: Settings, **tcec: Any) -> Iterator[Harness]:
    settings = settings.model_copy(
        update={"tcec102": settings.tcec102.model_copy(update={"refresh_s": 0.2, **tcec})}
    )
    with connect(settings.db) as conn:
        load_registry(conn, _registry())
    keys = {}
    for op in (OP, OTHER):
        shown = ops.add(
            settings,
            op,
            name=f"operator {op}",
            endpoint_url="",
            site_ids=["CHG-OP-1"],
            cities=[],
            outbound=None,
            actor="test",
        )
        keys[op] = shown.inbound
        with connect(settings.db) as conn, conn.transaction():
            store.link_connectors(
                conn,
                op,
                [store.ConnectorLink(f"C{n}", f"E{n}", "S1", f"tcec102.{op}.E{n}") for n in (1, 2)],
            )
    app = create_app(settings)
    with TestClient(app) as client:
        ep = app.state.tcec102
        wait_for(lambda: ep.sink is not None and OP in ep.directory.links, what="endpoint ready")
        yield Harness(settings, client, keys)


@pytest.fixture
def harness(settings: Settings) -> Iterator[Harness]:
    yield from _harness(settings, max_request_bytes=4096)


def _dead_letters(settings: Settings, n: int) -> list[dict[str, str]]:
    return [headers for _, headers in dead_letters(settings, n, timeout_ms=15_000)]


def test_pushes_become_stored_readings_through_the_ingest(
    harness: Harness, start_ingest: Callable[[], object]
) -> None:
    start_ingest()
    token = harness.token()
    out = harness.push(OP, "C1", 3, token)  # charging
    assert (out.ret, out.payload) == (0, {"Status": 0})
    db = harness.settings.db
    wait_for(lambda: scalar(db, "SELECT count(*) FROM readings") == 2, what="2 readings")
    rows = scalar(
        db,
        "SELECT count(*) FROM readings r JOIN devices d USING (device_pk)"
        " JOIN metrics m USING (metric_id)"
        " WHERE d.device_id = 'tcec102.MA0000001.E1'"
        "  AND ((m.key = 'connector_status' AND r.value = 2)"
        "   OR (m.key = 'fault' AND r.value = 0))",
    )
    assert rows == 2

    # a storm: 400 pushes from 8 threads, each acknowledged only once Kafka has it
    def one(i: int) -> int:
        return harness.push(OP, f"C{1 + i % 2}", (1, 2, 3, 4, 255)[i % 5], token).ret

    with ThreadPoolExecutor(8) as pool:
        rets = list(pool.map(one, range(400)))
    assert rets.count(0) == 400
    wait_for(lambda: scalar(db, "SELECT count(*) FROM readings") == 802, what="802 readings")
    assert (
        scalar(
            db,
            "SELECT count(*) FROM readings r JOIN metrics m USING (metric_id)"
            " WHERE m.key = 'fault' AND r.value = 1",
        )
        == 80
    )
    wait_for(
        lambda: (
            scalar(
                db,
                "SELECT count(*) FROM operator_links WHERE operator_id = 'MA0000001'"
                " AND last_push IS NOT NULL AND last_token IS NOT NULL",
            )
            == 1
        ),
        what="link health recorded",
    )


def test_every_bad_input_gets_its_code_and_a_dead_letter(
    harness: Harness, start_ingest: Callable[[], object]
) -> None:
    start_ingest()
    token = harness.token()
    other_token = harness.token(OTHER)
    keys = harness.keys[OP]
    status = {"ConnectorStatusInfo": {"ConnectorID": "C1", "Status": 1}}
    now = datetime.now(UTC)
    expired, _ = x.issue_token(
        box(harness.settings).token_key, OP, 1, now - timedelta(hours=3), timedelta(hours=2)
    )

    def tampered() -> dict[str, str]:
        env = harness.sealed(OP, status)
        env["Sig"] = "0" * 32
        return env

    def with_data(plain: bytes) -> dict[str, str]:
        env = harness.sealed(OP, {})
        env["Data"] = x.encrypt_data(plain, keys)
        env["Sig"] = x.sign(keys.sig_secret, OP, env["Data"], env["TimeStamp"], env["Seq"])
        return env

    def undecryptable() -> dict[str, str]:
        env = harness.sealed(OP, {})
        env["Data"] = "bm90IGFlcw=="  # Base64 of 6 bytes: no AES block
        env["Sig"] = x.sign(keys.sig_secret, OP, env["Data"], env["TimeStamp"], env["Seq"])
        return env

    cases: list[tuple[str, dict[str, Any] | bytes, str | None, int, str]] = [
        ("bad signature", tampered(), token, 4001, "bad_signature"),
        ("expired token", harness.sealed(OP, status), expired, 4002, "expired_token"),
        ("foreign token", harness.sealed(OP, status), other_token, 4002, "foreign_token"),
        ("no token", harness.sealed(OP, status), None, 4002, "missing_token"),
        ("undecryptable", undecryptable(), token, 4003, "undecryptable_data"),
        ("bad JSON inside", with_data(b'{"ConnectorStatusInfo": {'), token, 4004, "malformed_data"),
        (
            "unknown connector",
            harness.sealed(OP, {"ConnectorStatusInfo": {"ConnectorID": "C9", "Status": 1}}),
            token,
            4004,
            "unknown_connector",
        ),
        (
            "stale TimeStamp",
            harness.sealed(OP, status, now - timedelta(minutes=20)),
            token,
            4003,
            "stale_timestamp",
        ),
        ("not JSON", b"OperatorID=1", token, 4003, "malformed_request"),
        (
            "unknown operator",
            {**harness.sealed(OP, status), "OperatorID": "ZZ0000009"},
            token,
            4003,
            "unknown_operator",
        ),
    ]
    for what, body, tok, ret, _reason in cases:
        resp = harness.post("notification_stationStatus", body, tok)
        assert resp.status_code == 200, what
        assert resp.json()["Ret"] == ret, (what, resp.json())
    big = harness.post("notification_stationStatus", b"{" + b" " * 5000 + b"}", token)
    assert big.status_code == 413
    # a wrong OperatorSecret: no token, SuccStat 1, FailReason 2
    resp = harness.post(
        "query_token", harness.sealed(OP, {"OperatorID": OP, "OperatorSecret": "x"})
    )
    refused = x.open_response(resp.content, keys)
    assert refused.payload is not None
    assert (refused.payload["SuccStat"], refused.payload["FailReason"]) == (1, 2)
    # the good push among them is kept
    assert harness.push(OP, "C2", 1, token).ret == 0
    db = harness.settings.db
    wait_for(lambda: scalar(db, "SELECT count(*) FROM readings") == 2, what="the good push")

    letters = _dead_letters(harness.settings, len(cases) + 2)
    reasons = sorted(h["qilu.reason"] for h in letters)
    assert reasons == sorted(
        [f"tcec102_{c[4]}" for c in cases] + ["tcec102_oversized", "tcec102_token_refused"]
    )
    by_reason = {h["qilu.reason"]: h for h in letters}
    assert by_reason["tcec102_unknown_connector"]["qilu.source"] == (
        f"tcec102/{OP}/notification_stationStatus"
    )
    assert "C9" in by_reason["tcec102_unknown_connector"]["qilu.detail"]
    wait_for(
        lambda: (
            scalar(db, "SELECT failures FROM operator_links WHERE operator_id = 'MA0000001'")
            >= len(cases) - 2
        ),
        what="failures counted on the link",
    )


@pytest.fixture
def limited(settings: Settings) -> Iterator[Harness]:
    yield from _harness(settings, rate_per_s=0.01, rate_burst=3)


def test_an_operator_over_its_rate_gets_429(limited: Harness) -> None:
    token = limited.token()  # 1
    assert limited.push(OP, "C1", 1, token).ret == 0  # 2
    assert limited.push(OP, "C1", 2, token).ret == 0  # 3
    payload = {"ConnectorStatusInfo": {"ConnectorID": "C1", "Status": 1}}
    resp = limited.post("notification_stationStatus", limited.sealed(OP, payload), token)
    assert resp.status_code == 429
    assert int(resp.headers["Retry-After"]) >= 1
    # another operator has its own allowance
    assert limited.token(OTHER)


def test_rotation_retires_tokens_and_revocation_refuses_the_operator(harness: Harness) -> None:
    settings = harness.settings
    token = harness.token()
    shown = ops.rotate(settings, OP, outbound=None, actor="test")
    assert shown.row.key_no == 2
    assert shown.inbound != harness.keys[OP]
    ep = harness.client.app.state.tcec102  # type: ignore[attr-defined]
    ep.refresh_now()
    harness.keys[OP] = shown.inbound
    payload = {"ConnectorStatusInfo": {"ConnectorID": "C1", "Status": 1}}
    resp = harness.post("notification_stationStatus", harness.sealed(OP, payload), token)
    assert resp.json()["Ret"] == 4002  # issued before the rotation
    assert harness.push(OP, "C1", 1, harness.token()).ret == 0
    ops.revoke(settings, OP, actor="test")
    ep.refresh_now()
    resp = harness.post("notification_stationStatus", harness.sealed(OP, payload), token)
    assert resp.json()["Ret"] == 4003
    with connect(settings.db) as conn:
        trail = audit.query(conn, entity="operator", entity_id=OP)
        blob = conn.execute(
            "SELECT secrets FROM operators WHERE operator_id = %s", (OP,)
        ).fetchone()
        dump = conn.execute(
            "SELECT string_agg(coalesce(after::text, ''), '') FROM audit_log"
        ).fetchone()
        revoked = conn.execute(
            "SELECT revoked_at IS NOT NULL FROM agents WHERE agent_id = %s", (f"tcec102-{OP}",)
        ).fetchone()
    assert [e.action for e in trail] == ["operator.add", "operator.rotate", "operator.revoke"]
    assert [e.actor for e in trail] == ["test"] * 3
    assert revoked == (True,)
    assert blob is not None
    assert dump is not None
    for secret in shown.inbound.as_dict().values():
        assert secret.encode() not in bytes(blob[0])  # stored sealed, never in plain text
        assert secret not in dump[0]
