"""Contract tier: the API over an injected snapshot and key store (no database).

The application is the real one (routers, auth, limits, error handlers); only what it reads
is injected: a coverage snapshot with known figures and a dictionary of API keys. The pool
points at a closed port, so anything that would touch the database fails visibly.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from psycopg_pool import ConnectionPool

from api import auth
from api.app import build_context, create_app
from api.service import PipelineHealth, Snapshot
from qilu.catalog import load_catalog
from qilu.settings import ApiSettings, Settings, load
from storage.coverage import CityFigure, TargetCoverage
from storage.queries_api import ApiKeyRow

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
QINGDAO, JINAN = "370200", "370100"


def snapshot(version: int = 1) -> Snapshot:
    cat = load_catalog()
    rows = []
    for t in cat.targets:
        cities = tuple(CityFigure(c, 3, 4) for c in cat.city_codes)
        rows.append(TargetCoverage(t, NOW, CityFigure("370000", 48, 64), cities))
    return Snapshot(
        version=version,
        as_of=NOW,
        computed_in_s=0.5,
        coverage=rows,
        baselines={("substation-220kv-monitoring-2024", "370000"): (date(2024, 1, 1), 0.5)},
        history_note="",
        health=PipelineHealth(NOW - timedelta(seconds=3), 100, 80, 5, 12, NOW, ""),
    )


class Keys:
    """API keys in a dictionary: make(...) returns a token."""

    def __init__(self) -> None:
        self.rows: dict[str, ApiKeyRow] = {}

    def make(self, scopes: list[str], **kw: Any) -> str:
        k = auth.new_key()
        self.rows[k.key_id] = ApiKeyRow(
            key_id=k.key_id,
            name="t",
            secret_sha256=k.secret_sha256,
            scopes=tuple(scopes),
            cities=tuple(kw.get("cities", ())),
            sectors=tuple(kw.get("sectors", ())),
            rate_per_s=kw.get("rate"),
            created_at=NOW,
            expires_at=kw.get("expires_at"),
            revoked_at=kw.get("revoked_at"),
        )
        return k.token


@asynccontextmanager
async def _no_lifespan(app: Any) -> AsyncIterator[None]:
    yield


Factory = Callable[..., tuple[TestClient, Keys]]


@pytest.fixture
def make_client() -> Iterator[Factory]:
    pools: list[ConnectionPool] = []

    def make(snap: Snapshot | None = None, **api: Any) -> tuple[TestClient, Keys]:
        settings: Settings = load(api=ApiSettings(**api))
        settings = settings.model_copy(
            update={"db": settings.db.model_copy(update={"port": 1, "host": "127.0.0.1"})}
        )
        app = create_app(settings)
        app.router.lifespan_context = _no_lifespan
        pool = ConnectionPool(settings.db.conninfo(), open=False)
        pools.append(pool)
        ctx = build_context(settings, pool)
        keys = Keys()
        ctx.keys = auth.KeyStore(keys.rows.get, 0.0)
        if snap is not None:
            ctx.refresher.publish(snap)
        app.state.ctx = ctx
        return TestClient(app), keys

    yield make
    for p in pools:
        p.close()


@pytest.fixture
def client(make_client: Factory) -> TestClient:
    return make_client(snapshot())[0]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_targets_carry_their_sources(client: TestClient) -> None:
    body = client.get("/v1/targets").json()
    assert len(body) == len(load_catalog().targets)
    first = next(t for t in body if t["id"] == "charging-public-piles-2024")
    assert first["source"]["number"] == "数字强省办发〔2024〕5号"
    assert first["source"]["article"] == "（十五）"
    assert first["threshold"] == 180000


def test_coverage_filters_shapes_and_judges(client: TestClient) -> None:
    body = client.get("/v1/coverage", params={"city": QINGDAO}).json()
    assert len(body) == len(load_catalog().targets)
    ratio = next(t for t in body if t["target_id"] == "substation-220kv-monitoring-2024")
    assert ratio["value"] == 0.75
    assert ratio["area"] == ["370000"]
    assert [c["city_code"] for c in ratio["cities"]] == [QINGDAO]
    assert ratio["cities"][0]["name_zh"] == "青岛"
    # due 2024-12-31, judged on 2026-11-23: past due and not met
    assert ratio["judgement"]["status"] == "behind"
    assert ratio["judgement"]["basis"] == "threshold"
    assert ratio["judgement"]["days_left"] < 0
    assert ratio["cities"][0]["judgement"]["status"] == "behind"
    one = client.get("/v1/coverage", params={"target": "ranch-smart-built-2024"}).json()
    assert [t["target_id"] for t in one] == ["ranch-smart-built-2024"]
    assert one[0]["value"] == 48
    assert one[0]["met"] is True
    assert one[0]["judgement"]["status"] == "met"
    assert one[0]["cities"][0]["judgement"] is None  # count thresholds are province-wide
    single = client.get("/v1/coverage/ranch-smart-built-2024").json()
    assert single == one[0]


@pytest.mark.parametrize(
    ("path", "params", "status", "error"),
    [
        ("/v1/coverage", {"target": "no-such-target"}, 404, "not_found"),
        ("/v1/coverage", {"city": "371200"}, 404, "not_found"),
        ("/v1/coverage", {"city": "Qingdao"}, 422, "invalid"),
        ("/v1/coverage/nope", {}, 404, "not_found"),
        ("/v1/targets/nope", {}, 404, "not_found"),
        ("/v1/nothing-here", {}, 404, "not_found"),
    ],
)
def test_errors_have_one_shape(
    client: TestClient, path: str, params: dict[str, str], status: int, error: str
) -> None:
    resp = client.get(path, params=params)
    assert resp.status_code == status
    assert resp.json()["error"] == error
    assert resp.json()["detail"]


def test_readiness_reports_the_database(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "checks": {}}
    resp = client.get("/readyz")
    assert resp.status_code == 503
    assert resp.json()["checks"]["snapshot"].startswith("version 1")


def test_no_snapshot_yet_answers_503_with_retry_after(make_client: Factory) -> None:
    client, _ = make_client(None)
    resp = client.get("/v1/coverage")
    assert resp.status_code == 503
    assert resp.json()["error"] == "unavailable"
    assert resp.headers["retry-after"] == "1"


def test_city_and_sector_limited_key_sees_only_its_area(make_client: Factory) -> None:
    client, keys = make_client(snapshot(), anonymous_scopes=[])
    token = keys.make(["coverage:read"], cities=[QINGDAO], sectors=["charging"])
    body = client.get("/v1/coverage", headers=bearer(token)).json()
    assert {t["sector"] for t in body} == {"charging"}
    for t in body:
        assert t["area"] == [QINGDAO]
        assert (t["numerator"], t["denominator"]) == (3, 4)
        assert [c["city_code"] for c in t["cities"]] == [QINGDAO]
        assert t["judgement"]["status"] == "no_data"  # a count threshold is province-wide
    targets = client.get("/v1/targets", headers=bearer(token)).json()
    assert {t["sector"] for t in targets} == {"charging"}
    for path, params in [
        ("/v1/coverage", {"city": JINAN}),
        ("/v1/coverage/substation-220kv-monitoring-2024", {}),
        ("/v1/coverage/iot-terminals-2025", {}),
        ("/v1/targets/substation-220kv-monitoring-2024", {}),
        ("/v1/coverage/charging-public-piles-2024/series", {"city": "370000"}),
    ]:
        resp = client.get(path, params=params, headers=bearer(token))
        assert resp.status_code == 404, (path, resp.text)
        assert resp.json()["error"] == "not_found"


def test_ratio_target_for_a_city_key_is_judged_for_that_city(make_client: Factory) -> None:
    client, keys = make_client(snapshot(), anonymous_scopes=[])
    token = keys.make(["coverage:read"], cities=[QINGDAO])
    one = client.get("/v1/coverage/substation-220kv-monitoring-2024", headers=bearer(token))
    assert one.json()["area"] == [QINGDAO]
    assert one.json()["value"] == 0.75
    assert one.json()["judgement"]["status"] == "behind"


def test_rate_limit_answers_429_with_retry_after(make_client: Factory) -> None:
    client, keys = make_client(snapshot(), rate_burst=3, rate_per_s=0.5)
    token = keys.make(["coverage:read"])
    codes = [client.get("/v1/targets", headers=bearer(token)).status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200]
    assert codes[3:] == [429, 429]
    resp = client.get("/v1/targets", headers=bearer(token))
    assert resp.json()["error"] == "rate_limited"
    assert int(resp.headers["retry-after"]) >= 1
    other = keys.make(["coverage:read"])  # the limit is per key
    assert client.get("/v1/targets", headers=bearer(other)).status_code == 200


def test_per_key_rate_overrides_the_default(make_client: Factory) -> None:
    client, keys = make_client(snapshot(), rate_burst=2, rate_per_s=1000)
    slow = keys.make(["coverage:read"], rate=0.01)
    codes = [client.get("/v1/targets", headers=bearer(slow)).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    assert int(client.get("/v1/targets", headers=bearer(slow)).headers["retry-after"]) >= 60


def test_request_body_over_the_limit_answers_413(make_client: Factory) -> None:
    client, _ = make_client(snapshot(), max_request_bytes=1000)
    resp = client.post("/v1/coverage", content=b"x" * 1001)
    assert resp.status_code == 413
    assert resp.json() == {"error": "too_large", "detail": "request body over 1000 bytes"}

    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b"y" * 100

    resp = client.post("/v1/coverage", content=chunks())
    assert resp.status_code == 413
    small = client.post("/v1/coverage", content=b"x" * 10)
    assert small.status_code == 405
    assert small.json()["error"] == "method_not_allowed"


def test_cors_is_off_unless_configured(make_client: Factory) -> None:
    origin = {"Origin": "https://ops.example"}
    off, _ = make_client(snapshot())
    assert "access-control-allow-origin" not in off.get("/v1/targets", headers=origin).headers
    on, _ = make_client(snapshot(), cors_origins=["https://ops.example"])
    resp = on.get("/v1/targets", headers=origin)
    assert resp.headers["access-control-allow-origin"] == "https://ops.example"
    assert (
        "access-control-allow-origin"
        not in on.get("/v1/targets", headers={"Origin": "https://evil.example"}).headers
    )


def test_status_page_public_or_key_protected(make_client: Factory) -> None:
    public, _ = make_client(snapshot(3), anonymous_scopes=[])
    page = public.get("/")
    assert page.status_code == 200
    assert "/static/status.js" in page.text
    assert public.get("/static/status.js").status_code == 200
    status = public.get("/v1/status").json()
    assert status["version"] == 3
    assert len(status["cities"]) == 16
    assert status["pipeline"]["lag_records"] == 12
    assert status["pipeline"]["freshness_s"] == 3.0

    private, keys = make_client(snapshot(), anonymous_scopes=[], status_public=False)
    assert private.get("/v1/status").status_code == 401
    token = keys.make(["coverage:read"], cities=[QINGDAO])
    body = private.get("/v1/status", headers=bearer(token)).json()
    assert [c["code"] for c in body["cities"]] == [QINGDAO]


def test_openapi_documents_errors_and_security(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    paths = spec["paths"]
    for path in [
        "/v1/coverage",
        "/v1/coverage/{target_id}/series",
        "/v1/devices",
        "/v1/devices/{device_id}/readings",
        "/v1/sites",
        "/v1/gaps",
        "/v1/export/readings",
        "/v1/status",
    ]:
        responses = paths[path]["get"]["responses"]
        for code in ("401", "404", "422", "429"):
            ref = responses[code]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith("/Problem"), (path, code)
    export = paths["/v1/export/readings"]["get"]["responses"]["200"]["content"]
    assert set(export) >= {"application/vnd.apache.parquet", "application/vnd.apache.arrow.stream"}
    assert json.dumps(spec["components"]["schemas"]["CoverageOut"]).count("examples") >= 3


def test_nul_characters_in_urls_are_refused(client: TestClient) -> None:
    for path in ["/v1/coverage?target=a%00b", "/v1/devices/x%00y"]:
        resp = client.get(path)
        assert resp.status_code == 400
        assert resp.json()["error"] == "bad_request"
