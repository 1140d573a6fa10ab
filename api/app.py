"""The FastAPI application factory: settings in, app out; no globals, no import-time I/O.

Start-up (lifespan) opens the connection pool without waiting for the database, and starts the
background refresher that computes the coverage snapshot; shutdown stops it and closes the
pool. ``app.state.ctx`` (an :class:`~api.deps.ApiContext`) is all the routers use, so tests can
put their own there.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import make_asgi_app
from psycopg_pool import ConnectionPool
from starlette.exceptions import HTTPException as StarletteHTTPException

from api import auth, views
from api.deps import ApiContext
from api.fastpath import FastPath
from api.middleware import BodyLimit, Observe, watch_loop_lag
from api.routers import (
    admin_points,
    admin_registry,
    agent_self,
    agents,
    assets,
    audit,
    coverage,
    deadletters,
    export,
    gaps,
    health,
    keys,
    names,
    operators,
    reported,
    status,
    targets,
    trajectories,
)
from api.service import Refresher
from interconnect.tcec102 import server as tcec102
from qilu import __version__
from qilu.catalog import load_catalog
from qilu.errors import ConfigError
from qilu.ratelimit import RateLimiter
from qilu.settings import DEV_JWT_SECRET, Environment, Settings
from storage import queries_api
from stream.lag import KafkaLag

logger = logging.getLogger(__name__)

_ERRORS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    422: "invalid",
    429: "rate_limited",
    503: "unavailable",
}

DESCRIPTION = """\
Coverage of Shandong's digital-economy infrastructure targets (charging piles, substations,
smart ranches), computed from live telemetry.

**Access.** Send `Authorization: Bearer <token>` with an API key (`qk_<id>_<secret>`, made by
`qilu apikey create`) or a JWT (fixed algorithm, issuer, audience and expiry checked). Scopes:
`coverage:read` (targets, coverage), `telemetry:read` (sites, devices, readings, gaps, export),
`admin` (all). A key limited to some cities or sectors gets **404** for anything outside them.
Each key has a rate limit (**429** with `Retry-After`); bodies over the size limit get **413**.

**Errors** always have the body `{"error": "<code>", "detail": "<what and what to do>"}`.

**Pagination.** Lists return `{"items": [...], "next_cursor": "..."}`; pass `cursor` for the
next page until `next_cursor` is null.
"""


def build_context(settings: Settings, pool: ConnectionPool) -> ApiContext:
    catalog = load_catalog()

    def fetch_key(key_id: str) -> queries_api.ApiKeyRow | None:
        with pool.connection(timeout=5) as conn:
            return queries_api.get_api_key(conn, key_id)

    def fetch_keys(key_ids: list[str]) -> dict[str, queries_api.ApiKeyRow | None]:
        with pool.connection(timeout=5) as conn:
            return {k: queries_api.get_api_key(conn, k) for k in key_ids}

    return ApiContext(
        settings=settings,
        catalog=catalog,
        pool=pool,
        refresher=Refresher(
            pool,
            catalog,
            settings,
            KafkaLag(settings.kafka, settings.ingest.group_id),
            lambda snap: views.warm(snap, catalog, settings.api.coverage_cache_s),
        ),
        keys=auth.KeyStore(fetch_key, settings.api.key_cache_s, fetch_keys),
        limiter=RateLimiter(settings.api.rate_burst),
        export_slots=threading.BoundedSemaphore(settings.api.export_concurrency),
    )


def check_settings(settings: Settings) -> None:
    """Refuse to serve with a development secret outside development (no I/O)."""
    if (
        settings.env is not Environment.DEVELOPMENT
        and settings.api.jwt_secret.get_secret_value() == DEV_JWT_SECRET
    ):
        raise ConfigError(
            "api.jwt_secret",
            "the development default is refused outside development; set "
            "QILU_API__JWT_SECRET (or set it empty to refuse bearer JWTs)",
        )


def _mount_operators(app: FastAPI, settings: Settings) -> None:
    """The T/CEC 102 routes (the reference, documented), when enabled."""
    if settings.tcec102.enabled:
        app.include_router(tcec102.build_router(settings.tcec102.path_prefix))


def _operators_fast_path(app: FastAPI, settings: Settings) -> None:
    """The routes' fast path, added last: the outermost of the app's middleware, so the
    operators' pushes skip the API's request metrics and body limit; the endpoint counts them
    and limits their size itself (docs/adr/0015, "Throughput")."""
    if settings.tcec102.enabled:
        app.add_middleware(
            tcec102.FastEndpoint,
            prefix=settings.tcec102.path_prefix,
            max_bytes=settings.tcec102.max_request_bytes,
        )


def _start_operators(
    app: FastAPI, settings: Settings, pool: ConnectionPool
) -> tcec102.Endpoint | None:
    """The T/CEC 102 endpoint operators call (docs/adr/0015-tcec102.md), when enabled."""
    if not settings.tcec102.enabled:
        return None
    endpoint = tcec102.Endpoint(
        settings, tcec102.database_loader(settings, pool), tcec102.database_link_writer(pool)
    )
    endpoint.start()
    app.state.tcec102 = endpoint
    return endpoint


def create_app(settings: Settings) -> FastAPI:
    check_settings(settings)
    pool = ConnectionPool(
        settings.db.conninfo(),
        min_size=1,
        max_size=max(settings.db.pool_max, settings.api.export_concurrency + 2),
        kwargs={"prepare_threshold": None, "autocommit": True},
        check=ConnectionPool.check_connection,
        open=False,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool.open(wait=False)
        ctx = build_context(settings, pool)
        app.state.ctx = ctx
        ctx.refresher.start()
        # Everything built so far (modules, routes, schemas) lives as long as the process:
        # move it out of the collector's sight, so a full collection scans only new objects
        # and stays short (measured: 180 ms -> none within 10,000 requests on a busy host).
        gc.collect()
        gc.freeze()
        if auth.anonymous_scopes(settings.api, settings.env is Environment.DEVELOPMENT):
            logger.warning(
                "requests without credentials get %s (development default; set "
                "QILU_API__ANONYMOUS_SCOPES='[]' to require a key)",
                ", ".join(sorted(auth.anonymous_scopes(settings.api, True))),
            )
        endpoint = _start_operators(app, settings, pool)
        lag_probe = asyncio.create_task(watch_loop_lag(), name="loop-lag")
        yield
        lag_probe.cancel()
        if endpoint is not None:
            endpoint.stop()
        ctx.refresher.stop()
        ctx.keys.close()
        pool.close()

    app = FastAPI(
        title="Qilu Telemetry API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # Metrics go to Prometheus (/metrics); FastAPI's own OpenTelemetry hooks would only
        # look up absent providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    for module in (
        *(coverage, trajectories, status, targets, names, assets, gaps, export, keys, agents),
        *(agent_self, admin_registry, admin_points, audit, deadletters, operators, health),
        reported,
    ):
        app.include_router(module.router)
    _mount_operators(app, settings)
    app.mount("/metrics", make_asgi_app())

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            spec.setdefault("components", {})["securitySchemes"] = {
                "HTTPBearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (`qk_<id>_<secret>`, from `qilu apikey create`) "
                    "or a JWT.",
                }
            }
            optional = settings.api.status_public
            for path, ops in spec["paths"].items():
                if not path.startswith("/v1/") or path.startswith("/v1/agent/"):
                    continue  # /v1/agent: the agent's signed requests, no bearer credentials
                public = optional and path.startswith("/v1/status")
                for op in ops.values():
                    op["security"] = [{}, {"HTTPBearer": []}] if public else [{"HTTPBearer": []}]
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.mount("/static", StaticFiles(packages=[("api", "static")]), name="static")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        del request
        code = _ERRORS.get(exc.status_code, "error")
        return JSONResponse(
            {"error": code, "detail": str(exc.detail)}, exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        del request
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse(
            {"error": "invalid", "detail": f"{where}: {first.get('msg', 'invalid request')}"},
            422,
        )

    app.add_middleware(FastPath)  # innermost: CORS, limits and metrics apply to it too
    if settings.api.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.api.cors_origins,
            allow_methods=["GET"],
            allow_headers=["Authorization"],
        )
    app.add_middleware(BodyLimit, max_bytes=settings.api.max_request_bytes)
    app.add_middleware(Observe)
    _operators_fast_path(app, settings)
    return app
