"""The FastAPI application factory: settings in, app out; no globals, no import-time I/O."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import Counter, Histogram, make_asgi_app
from psycopg_pool import ConnectionPool
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.routers import coverage, health, targets
from api.service import CoverageService
from qilu import __version__
from qilu.catalog import load_catalog
from qilu.settings import Settings

REQUESTS = Counter("qilu_api_requests_total", "API requests", ["route", "status"])
LATENCY = Histogram(
    "qilu_api_request_seconds",
    "API request latency",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1),
)
_ERRORS = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 422: "invalid"}


def create_app(settings: Settings) -> FastAPI:
    pool = ConnectionPool(
        settings.db.conninfo(),
        min_size=1,
        max_size=settings.db.pool_max,
        kwargs={"prepare_threshold": None, "autocommit": True},
        check=ConnectionPool.check_connection,
        open=False,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool.open(wait=False)
        app.state.coverage = CoverageService(pool, load_catalog(), settings.api.coverage_cache_s)
        yield
        pool.close()

    app = FastAPI(
        title="Qilu Telemetry API",
        version=__version__,
        description=(
            "Coverage of Shandong's digital-economy infrastructure targets (charging piles, "
            "substations, smart ranches), computed from live telemetry."
        ),
        lifespan=lifespan,
    )
    app.include_router(targets.router)
    app.include_router(coverage.router)
    app.include_router(health.router)
    app.mount("/metrics", make_asgi_app())

    @app.middleware("http")
    async def observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        name = getattr(route, "path", "unmatched")
        LATENCY.labels(name).observe(time.perf_counter() - start)
        REQUESTS.labels(name, str(response.status_code)).inc()
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        del request
        code = _ERRORS.get(exc.status_code, "error")
        return JSONResponse({"error": code, "detail": str(exc.detail)}, exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        del request
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse(
            {"error": "invalid", "detail": f"{where}: {first.get('msg', 'invalid request')}"},
            422,
        )

    return app
