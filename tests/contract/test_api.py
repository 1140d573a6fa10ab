"""Contract tier: the API over an injected coverage service (no database)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from qilu.catalog import load_catalog
from qilu.settings import load
from storage.coverage import CityFigure, TargetCoverage


class FakeCoverage:
    def __init__(self) -> None:
        self.catalog = load_catalog()

    def current(self) -> list[TargetCoverage]:
        now = datetime(2026, 11, 23, tzinfo=UTC)
        out = []
        for t in self.catalog.targets:
            cities = tuple(CityFigure(c, 3, 4) for c in self.catalog.city_codes)
            out.append(TargetCoverage(t, now, CityFigure("370000", 48, 64), cities))
        return out

    def ping(self) -> None:
        raise psycopg.OperationalError("connection refused")


@pytest.fixture
def client() -> TestClient:
    app = create_app(load())
    app.router.lifespan_context = _no_lifespan
    app.state.coverage = FakeCoverage()
    return TestClient(app)


@asynccontextmanager
async def _no_lifespan(app: Any) -> AsyncIterator[None]:
    yield


def test_targets_carry_their_sources(client: TestClient) -> None:
    body = client.get("/v1/targets").json()
    assert len(body) == len(load_catalog().targets)
    first = next(t for t in body if t["id"] == "charging-public-piles-2024")
    assert first["source"]["number"] == "数字强省办发〔2024〕5号"
    assert first["source"]["article"] == "（十五）"
    assert first["threshold"] == 180000


def test_coverage_filters_and_shapes(client: TestClient) -> None:
    body = client.get("/v1/coverage", params={"city": "370200"}).json()
    assert len(body) == len(load_catalog().targets)
    ratio = next(t for t in body if t["kind"] == "ratio")
    assert ratio["value"] == 0.75
    assert [c["city_code"] for c in ratio["cities"]] == ["370200"]
    assert ratio["cities"][0]["name_zh"] == "青岛"
    one = client.get("/v1/coverage", params={"target": "ranch-smart-built-2024"}).json()
    assert [t["target_id"] for t in one] == ["ranch-smart-built-2024"]
    assert one[0]["value"] == 48
    assert one[0]["met"] is True


@pytest.mark.parametrize(
    ("params", "status", "error"),
    [
        ({"target": "no-such-target"}, 404, "not_found"),
        ({"city": "371200"}, 404, "not_found"),
        ({"city": "Qingdao"}, 422, "invalid"),
    ],
)
def test_errors_have_one_shape(
    client: TestClient, params: dict[str, str], status: int, error: str
) -> None:
    resp = client.get("/v1/coverage", params=params)
    assert resp.status_code == status
    assert resp.json()["error"] == error
    assert resp.json()["detail"]


def test_readiness_reports_the_database(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "checks": {}}
    assert client.get("/readyz").status_code == 503
