"""The access matrix against a real database: keys made and revoked with the CLI, JWTs minted
with the configured secret (and with wrong ones), every answer checked with its error body.

Requests without credentials get nothing here (``anonymous_scopes = []``, as outside
development).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from qilu.settings import Settings
from storage.db import connect
from storage.registry_store import load_registry
from tests.helpers import wait_for
from tests.integration.test_api_endpoints import registry, store_readings

pytestmark = pytest.mark.integration
SECRET = "access-matrix-secret-" + "k" * 48
QINGDAO, JINAN = "370200", "370100"


@pytest.fixture
def jwt_secret() -> str:
    return SECRET


@pytest.fixture
def client(api_settings: Settings) -> Iterator[TestClient]:
    with connect(api_settings.db) as conn:
        load_registry(conn, registry())
    store_readings(api_settings.db, datetime.now(UTC))
    with TestClient(create_app(api_settings)) as c:
        wait_for(lambda: c.get("/readyz").status_code == 200, 30, what="API ready")
        yield c


def mint(**claims: Any) -> str:
    key = claims.pop("_key", SECRET)
    alg = claims.pop("_alg", "HS256")
    body = {
        "sub": "analyst",
        "iss": "qilu",
        "aud": "qilu-api",
        "exp": datetime.now(UTC) + timedelta(minutes=5),
        "scope": "coverage:read telemetry:read",
        **claims,
    }
    return jwt.encode(body, key, algorithm=alg)


def call(client: TestClient, token: str | None, path: str, **params: Any) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = client.get(path, params=params, headers=headers)
    body = resp.json()
    if resp.status_code >= 400:
        assert set(body) == {"error", "detail"}, body
        assert body["detail"]
        if resp.status_code == 401:
            assert resp.headers["www-authenticate"].startswith("Bearer")
    return resp.status_code, body


def create(cli: Any, *args: str) -> str:
    code, out, _ = cli("apikey", "create", "--name", "t", *args)
    assert code == 0
    token = out.strip()
    assert token.startswith("qk_")
    return token


def test_access_matrix(client: TestClient, cli: Any) -> None:
    coverage = create(cli, "--scope", "coverage:read")
    telemetry = create(cli, "--scope", "telemetry:read")
    admin = create(cli, "--scope", "admin")
    qingdao = create(
        cli,
        "--scope",
        "coverage:read",
        "--scope",
        "telemetry:read",
        "--city",
        QINGDAO,
        "--sector",
        "charging",
    )
    forged_key = coverage[:-4] + ("AAAA" if not coverage.endswith("AAAA") else "BBBB")
    cases: list[tuple[str, str | None, str, dict[str, Any], int]] = [
        ("no key", None, "/v1/coverage", {}, 401),
        ("no key", None, "/v1/devices", {}, 401),
        ("no key", None, "/v1/targets", {}, 401),
        ("coverage key", coverage, "/v1/coverage", {}, 200),
        ("coverage key", coverage, "/v1/coverage/charging-public-piles-2024", {}, 200),
        ("wrong scope", coverage, "/v1/devices", {}, 403),
        ("wrong scope", coverage, "/v1/export/readings", _range(), 403),
        ("wrong scope", coverage, "/v1/keys", {}, 403),
        ("wrong scope", telemetry, "/v1/coverage", {}, 403),
        ("telemetry key", telemetry, "/v1/devices", {}, 200),
        ("telemetry key", telemetry, "/v1/devices/SUB-J-1-01", {}, 200),
        ("admin", admin, "/v1/keys", {}, 200),
        ("admin", admin, "/v1/devices", {}, 200),
        ("forged key", forged_key, "/v1/coverage", {}, 401),
        ("unknown key", "qk_0123456789ab_" + "x" * 43, "/v1/coverage", {}, 401),
        ("other city", qingdao, "/v1/devices", {"city": JINAN}, 404),
        ("other city", qingdao, "/v1/devices/CHG-J-1-01", {}, 404),
        ("other city", qingdao, "/v1/devices/CHG-J-1-01/readings", {}, 404),
        ("other city", qingdao, "/v1/coverage", {"city": JINAN}, 404),
        ("other city", qingdao, "/v1/export/readings", {**_range(), "city": JINAN}, 404),
        ("other sector", qingdao, "/v1/devices/RAN-Q-1-01", {}, 404),
        ("other sector", qingdao, "/v1/sites", {"sector": "ranch"}, 404),
        ("other sector", qingdao, "/v1/coverage/substation-220kv-monitoring-2024", {}, 404),
        ("own area", qingdao, "/v1/devices/CHG-Q-1-01", {}, 200),
        ("own area", qingdao, "/v1/devices/CHG-Q-1-01/readings", {}, 200),
        ("jwt", mint(), "/v1/devices", {}, 200),
        ("jwt no scope", mint(scope="coverage:read"), "/v1/devices", {}, 403),
        ("jwt expired", mint(exp=datetime.now(UTC) - timedelta(seconds=1)), "/v1/targets", {}, 401),
        ("jwt forged", mint(_key="someone-elses-secret-" + "z" * 48), "/v1/targets", {}, 401),
        ("jwt wrong audience", mint(aud="grafana"), "/v1/targets", {}, 401),
        ("jwt wrong issuer", mint(iss="elsewhere"), "/v1/targets", {}, 401),
        ("jwt other algorithm", mint(_alg="HS512"), "/v1/targets", {}, 401),
        ("jwt other city", mint(cities=[QINGDAO]), "/v1/devices/CHG-J-1-01", {}, 404),
        ("jwt own city", mint(cities=[QINGDAO]), "/v1/devices/CHG-Q-1-01", {}, 200),
    ]
    failures = []
    for name, token, path, params, want in cases:
        got, body = call(client, token, path, **params)
        if got != want:
            failures.append(f"{name}: GET {path} {params} -> {got} {body}, wanted {want}")
    assert not failures, "\n".join(failures)

    # what a limited key sees in lists is its area, nothing else
    _, devices = call(client, qingdao, "/v1/devices")
    assert {d["device_id"] for d in devices["items"]} == {
        "CHG-Q-1-01",
        "CHG-Q-1-02",
        "CHG-Q-1-03",
        "CHG-Q-1-04",
    }
    _, cov = call(client, qingdao, "/v1/coverage")
    assert {t["sector"] for t in cov} == {"charging"}
    assert all(t["area"] == [QINGDAO] for t in cov)
    resp = client.get(
        "/v1/export/readings",
        params={**_range(), "format": "arrow"},
        headers={"Authorization": f"Bearer {qingdao}"},
    )
    from pyarrow import ipc

    table = ipc.open_stream(resp.content).read_all()
    assert set(table.column("city_code").to_pylist()) == {QINGDAO}
    assert set(table.column("kind").to_pylist()) == {"charging_pile"}


def _range() -> dict[str, str]:
    now = datetime.now(UTC)
    return {"start": (now - timedelta(days=1)).isoformat(), "end": now.isoformat()}


def test_unsigned_and_malformed_credentials(client: TestClient) -> None:
    unsigned = jwt.encode(
        {"sub": "x", "iss": "qilu", "aud": "qilu-api", "exp": time.time() + 60}, None, "none"
    )
    assert call(client, unsigned, "/v1/targets")[0] == 401
    resp = client.get("/v1/targets", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert resp.status_code == 401
    assert "Bearer" in resp.json()["detail"]


def test_revoked_and_expired_keys(client: TestClient, cli: Any) -> None:
    token = create(cli, "--scope", "coverage:read")
    key_id = token.split("_")[1]
    assert call(client, token, "/v1/targets")[0] == 200
    code, listing, _ = cli("apikey", "list")
    assert code == 0
    assert key_id in listing
    assert token.split("_", 2)[2] not in listing  # the secret is never shown again
    assert cli("apikey", "revoke", key_id)[0] == 0
    # revocation takes effect within api.key_cache_s (1 s here)
    wait_for(lambda: call(client, token, "/v1/targets")[0] == 401, 5, what="revocation")
    assert call(client, token, "/v1/targets")[1]["detail"] == "API key revoked"
    assert key_id not in cli("apikey", "list")[1]
    assert "revoked" in cli("apikey", "list", "--all")[1]
    assert cli("apikey", "revoke", "ffffffffffff")[0] == 1

    short = create(cli, "--scope", "coverage:read", "--expires-days", "0.00002")  # ~1.7 s
    wait_for(lambda: call(client, short, "/v1/targets")[0] == 401, 10, what="expiry")
    assert call(client, short, "/v1/targets")[1]["detail"] == "API key expired"


def test_cli_refuses_unknown_city(cli: Any) -> None:
    code, out, _ = cli("apikey", "create", "--name", "x", "--scope", "admin", "--city", "999999")
    assert code == 2
    assert out == ""
