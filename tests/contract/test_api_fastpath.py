"""Contract tier: the coverage fast path (api/fastpath.py) answers exactly as the routes do.

Two apps over the same injected snapshot and keys: one whose key cache keeps keys (requests
are answered by the fast path) and one whose cache keeps nothing (every keyed request goes
through FastAPI's route). Same status, body and headers; errors, limits and anything unusual
are left to the route.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from psycopg_pool import ConnectionPool

from api import auth
from api.app import build_context, create_app
from qilu.settings import ApiSettings, load
from tests.contract.test_api import JINAN, QINGDAO, Keys, snapshot

Make = Callable[..., TestClient]
TARGET = "substation-220kv-monitoring-2024"


@asynccontextmanager
async def _no_lifespan(app: Any) -> AsyncIterator[None]:
    yield


@pytest.fixture
def keys() -> Keys:
    return Keys()


@pytest.fixture
def make(keys: Keys) -> Iterator[Make]:
    pools: list[ConnectionPool] = []

    def build(key_cache_s: float, **api: Any) -> TestClient:
        settings = load(api=ApiSettings(**api))
        settings = settings.model_copy(
            update={"db": settings.db.model_copy(update={"port": 1, "host": "127.0.0.1"})}
        )
        app = create_app(settings)
        app.router.lifespan_context = _no_lifespan
        pool = ConnectionPool(settings.db.conninfo(), open=False)
        pools.append(pool)
        ctx = build_context(settings, pool)
        ctx.keys = auth.KeyStore(keys.rows.get, key_cache_s)
        ctx.refresher.publish(snapshot())
        app.state.ctx = ctx
        return TestClient(app)

    yield build
    for p in pools:
        p.close()


def fast_answers() -> float:
    return REGISTRY.get_sample_value("qilu_api_fast_answers_total") or 0.0


def route_count(path: str) -> float:
    labels = {"route": path, "status": "200"}
    return REGISTRY.get_sample_value("qilu_api_requests_total", labels) or 0.0


SAME = [
    ("/v1/coverage", {}),
    ("/v1/coverage", {"city": QINGDAO}),
    ("/v1/coverage", {"target": TARGET}),
    ("/v1/coverage", {"target": TARGET, "city": JINAN}),
    (f"/v1/coverage/{TARGET}", {}),
    (f"/v1/coverage/{TARGET}", {"city": QINGDAO}),
    ("/v1/status", {}),
]


@pytest.mark.parametrize(("path", "params"), SAME)
@pytest.mark.parametrize("limited", [False, True])
def test_fast_path_and_route_send_the_same_answer(
    make: Make, keys: Keys, path: str, params: dict[str, str], limited: bool
) -> None:
    token = keys.make(["coverage:read"], cities=[QINGDAO, JINAN] if limited else [])
    headers = {"Authorization": f"Bearer {token}"}
    fast, routed = make(60.0), make(0.0)
    fast.get(path, params=params, headers=headers)  # the first use reads the key
    before = fast_answers()
    a = fast.get(path, params=params, headers=headers)
    assert fast_answers() == before + 1  # answered by the fast path
    b = routed.get(path, params=params, headers=headers)
    assert fast_answers() == before + 1  # ... and this one by the route
    assert a.status_code == b.status_code == 200
    assert a.content == b.content
    for h in ("content-type", "content-length", "etag", "cache-control"):
        assert a.headers[h] == b.headers[h], h
    if limited and path == "/v1/coverage":
        assert all(set(t["area"]) == {QINGDAO, JINAN} for t in a.json())


def test_fast_answers_are_counted_under_the_route_template(make: Make, keys: Keys) -> None:
    client = make(60.0)
    headers = {"Authorization": f"Bearer {keys.make(['admin'])}"}
    client.get("/v1/coverage", headers=headers)
    before = route_count("/v1/coverage/{target_id}")
    assert client.get(f"/v1/coverage/{TARGET}", headers=headers).status_code == 200
    assert route_count("/v1/coverage/{target_id}") == before + 1


@pytest.mark.parametrize("key_cache_s", [60.0, 0.0])
def test_etag_answers_304_when_the_caller_has_the_answer(make: Make, key_cache_s: float) -> None:
    client = make(key_cache_s)  # anonymous: development gives coverage:read
    first = client.get("/v1/coverage", params={"city": QINGDAO})
    etag = first.headers["etag"]
    assert etag.startswith('"')
    assert etag.endswith('"')
    again = client.get("/v1/coverage", params={"city": QINGDAO}, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    other = client.get("/v1/coverage", headers={"If-None-Match": etag})
    assert other.status_code == 200  # another answer, another tag
    assert other.headers["etag"] != etag
    listed = client.get("/v1/status", headers={"If-None-Match": f'"x", W/{etag}, *'})
    assert listed.status_code == 304


@pytest.mark.parametrize(
    ("path", "params", "status", "error"),
    [
        ("/v1/coverage", {"city": "Qingdao"}, 422, "invalid"),
        ("/v1/coverage", {"city": "371200"}, 404, "not_found"),
        ("/v1/coverage", {"target": "no-such-target"}, 404, "not_found"),
        ("/v1/coverage/no-such-target", {}, 404, "not_found"),
        ("/v1/coverage", {"city": JINAN}, 404, "not_found"),  # outside the key's cities
    ],
)
def test_errors_are_left_to_the_route(
    make: Make, keys: Keys, path: str, params: dict[str, str], status: int, error: str
) -> None:
    client = make(60.0)
    headers = {"Authorization": f"Bearer {keys.make(['coverage:read'], cities=[QINGDAO])}"}
    client.get("/v1/coverage", headers=headers)
    before = fast_answers()
    resp = client.get(path, params=params, headers=headers)
    assert (resp.status_code, resp.json()["error"]) == (status, error)
    assert fast_answers() == before


def test_unusual_queries_are_left_to_the_route(make: Make) -> None:
    client = make(60.0)
    before = fast_answers()
    plain = client.get("/v1/coverage", params={"city": QINGDAO})
    assert fast_answers() == before + 1
    for query in ("city=370200&city=370200", "city=%33%37%30%32%30%30", "city=370200&x=1"):
        resp = client.get(f"/v1/coverage?{query}")
        assert resp.status_code == 200
        if "x=1" not in query and "&" not in query:
            assert resp.content == plain.content
    assert fast_answers() == before + 1


def test_scope_and_rate_limit_answer_as_the_route(make: Make, keys: Keys) -> None:
    client = make(60.0, anonymous_scopes=[], rate_burst=2)
    nobody = client.get("/v1/coverage")
    assert (nobody.status_code, nobody.json()["error"]) == (401, "unauthorized")
    telemetry = {"Authorization": f"Bearer {keys.make(['telemetry:read'])}"}
    client.get("/v1/targets", headers=telemetry)
    wrong = client.get("/v1/coverage", headers=telemetry)
    assert (wrong.status_code, wrong.json()["error"]) == (403, "forbidden")
    slow = {"Authorization": f"Bearer {keys.make(['coverage:read'], rate=0.01)}"}
    codes = [client.get("/v1/coverage", headers=slow).status_code for _ in range(4)]
    assert codes == [200, 200, 429, 429]  # a burst of 2, then the limit
    refused = client.get("/v1/coverage", headers=slow)
    assert refused.json() == {
        "error": "rate_limited",
        "detail": "rate limit of 0.01 requests/s exceeded",
    }
    assert int(refused.headers["retry-after"]) >= 1


def test_a_revoked_key_is_refused_once_reread(make: Make, keys: Keys) -> None:
    client = make(0.3)
    token = keys.make(["coverage:read"])
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/v1/coverage", headers=headers).status_code == 200
    key_id = auth.parse_token(token)
    assert key_id is not None
    row = keys.rows[key_id[0]]
    keys.rows[key_id[0]] = dataclasses.replace(row, revoked_at=row.created_at)
    time.sleep(0.35)  # past the cache time: the next request reads the key again
    resp = client.get("/v1/coverage", headers=headers)
    assert (resp.status_code, resp.json()["detail"]) == (401, "API key revoked")
