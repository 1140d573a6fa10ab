"""Dependencies shared by the routers (Annotated, resolved per request).

``ApiContext`` holds what the app built at start-up (settings, pool, snapshot refresher, key
store, rate limiter). ``require(scope)`` authenticates the caller, checks the scope, applies
the caller's rate limit and returns the :class:`~api.auth.Principal`.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated

import anyio.to_thread
import psycopg
from fastapi import Depends, HTTPException, Request
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolTimeout

from api import auth
from api.auth import AuthError, Principal, Scope
from api.ratelimit import RateLimiter, retry_after_header
from api.service import Refresher, Snapshot
from qilu.catalog import Catalog
from qilu.settings import Environment, Settings
from storage.queries_api import RelationMissingError


@dataclass
class ApiContext:
    settings: Settings
    catalog: Catalog
    pool: ConnectionPool
    refresher: Refresher
    keys: auth.KeyStore
    limiter: RateLimiter
    export_slots: threading.BoundedSemaphore


async def _ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ApiContext, Depends(_ctx)]


def unavailable(detail: str, retry_after: int = 1) -> HTTPException:
    return HTTPException(503, detail, headers={"Retry-After": str(retry_after)})


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": 'Bearer realm="qilu"'})


async def authenticate(ctx: ApiContext, request: Request) -> Principal:
    header = request.headers.get("authorization")
    api = ctx.settings.api
    if header is None:
        client = request.client.host if request.client else "unknown"
        return auth.anonymous(client, api, ctx.settings.env is Environment.DEVELOPMENT)
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("the Authorization header must be 'Bearer <API key or JWT>'")
    try:
        parsed = auth.parse_token(token)
        if parsed is None:
            return auth.principal_from_jwt(token, api)
        key_id, secret = parsed
        fresh, row = ctx.keys.cached(key_id)
        if not fresh:
            try:
                row = await anyio.to_thread.run_sync(ctx.keys.load, key_id)
            except (psycopg.Error, PoolTimeout) as exc:
                raise unavailable("the key store (database) is not reachable", 5) from exc
        return auth.principal_from_key(row, secret, auth.utcnow())
    except AuthError as exc:
        raise _unauthorized(str(exc)) from exc


def require(scope: Scope) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency that authenticates, checks ``scope`` and the caller's rate limit.

    It takes only the request (the context is ``request.app.state.ctx``): FastAPI resolves
    each dependency on every request, and the coverage endpoints are meant to cost little
    more than a dictionary lookup. The bearer scheme is declared in the OpenAPI document by
    :func:`api.app.create_app`."""

    async def dependency(request: Request) -> Principal:
        ctx: ApiContext = request.app.state.ctx
        principal = await authenticate(ctx, request)
        if not principal.allows(scope):
            if principal.subject.startswith("anonymous:"):
                raise _unauthorized(f"credentials with scope {scope.value} are required")
            raise HTTPException(403, f"this key or token lacks the scope {scope.value}")
        api = ctx.settings.api
        wait = ctx.limiter.take(principal.subject, principal.rate_per_s or api.rate_per_s)
        if wait > 0:
            raise HTTPException(
                429,
                f"rate limit of {principal.rate_per_s or api.rate_per_s:g} requests/s exceeded",
                headers={"Retry-After": retry_after_header(wait)},
            )
        return principal

    return dependency


CoverageReader = Annotated[Principal, Depends(require(Scope.COVERAGE_READ))]
TelemetryReader = Annotated[Principal, Depends(require(Scope.TELEMETRY_READ))]
Admin = Annotated[Principal, Depends(require(Scope.ADMIN))]


def context(request: Request) -> ApiContext:
    """The app's context, for handlers that take ``request`` instead of a Ctx dependency."""
    ctx: ApiContext = request.app.state.ctx
    return ctx


def current_snapshot(ctx: ApiContext) -> Snapshot:
    """The snapshot being served, or 503 (with Retry-After) before the first one exists."""
    snap = ctx.refresher.snapshot
    if snap is None:
        raise unavailable("the first coverage snapshot is still being computed")
    return snap


def _problem(description: str) -> dict[str, object]:
    from api.schemas import Problem

    return {"model": Problem, "description": description}


PROBLEMS: dict[int | str, dict[str, object]] = {
    400: _problem("Bad request (e.g. an invalid cursor or range)"),
    401: _problem("Credentials missing, unknown, expired or revoked"),
    403: _problem("The key or token lacks the scope"),
    404: _problem("Unknown, or outside the cities and sectors of the key"),
    422: _problem("A parameter is invalid; `detail` names it"),
    429: _problem("Rate limit exceeded; see Retry-After"),
    503: _problem("Not ready (first snapshot, or a relation not created yet); see Retry-After"),
}


@contextmanager
def database(ctx: ApiContext) -> Iterator[psycopg.Connection[TupleRow]]:
    """A pooled connection; a missing relation or an unreachable database answers 503."""
    try:
        with ctx.pool.connection(timeout=5) as conn:
            yield conn
    except RelationMissingError as exc:
        raise unavailable(f"not available in this database yet: {exc}", 60) from exc
    except psycopg.DataError as exc:  # a value the database cannot take: the caller's to fix
        raise HTTPException(400, f"invalid parameter: {str(exc).splitlines()[0]}") from exc
    except (psycopg.OperationalError, PoolTimeout) as exc:
        raise unavailable("the database is not reachable", 5) from exc
