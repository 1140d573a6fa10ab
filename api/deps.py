"""Dependencies shared by the routers (Annotated, resolved per request).

``ApiContext`` holds what the app built at start-up (settings, pool, snapshot refresher, key
store, rate limiter). ``require(scope)`` authenticates the caller, checks the scope, applies
the caller's rate limit and returns the :class:`~api.auth.Principal`.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated

import anyio
import anyio.to_thread
import psycopg
from fastapi import Depends, HTTPException, Request, Response
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolTimeout

from api import auth, views
from api.auth import AuthError, Principal, Scope
from api.service import Answer, Refresher, Snapshot
from qilu.catalog import Catalog
from qilu.ratelimit import RateLimiter, retry_after_header
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
    # threads for key look-ups of their own: a request whose key must be read never queues
    # behind the (up to 40) threads of the database-bound series and listing handlers
    key_loads: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(4))


async def _ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ApiContext, Depends(_ctx)]


def unavailable(detail: str, retry_after: int = 1) -> HTTPException:
    return HTTPException(503, detail, headers={"Retry-After": str(retry_after)})


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": 'Bearer realm="qilu"'})


def authenticate_cached(ctx: ApiContext, header: str | None, client: str) -> Principal | None:
    """The caller named by an ``Authorization`` header value, without I/O: None when its API
    key must first be read from the database. Raises 401 for bad credentials."""
    api = ctx.settings.api
    if header is None:
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
        return auth.principal_from_key(row, secret, auth.utcnow()) if fresh else None
    except AuthError as exc:
        raise _unauthorized(str(exc)) from exc


async def authenticate(ctx: ApiContext, request: Request) -> Principal:
    header = request.headers.get("authorization")
    principal = authenticate_cached(
        ctx, header, request.client.host if request.client else "unknown"
    )
    if principal is not None:
        return principal
    assert header is not None  # noqa: S101 - only an API key token needs a look-up
    parsed = auth.parse_token(header.partition(" ")[2].strip())
    assert parsed is not None  # noqa: S101 - as above
    key_id, secret = parsed
    try:
        row = await anyio.to_thread.run_sync(ctx.keys.load, key_id, limiter=ctx.key_loads)
    except (psycopg.Error, PoolTimeout) as exc:
        raise unavailable("the key store (database) is not reachable", 5) from exc
    try:
        return auth.principal_from_key(row, secret, auth.utcnow())
    except AuthError as exc:
        raise _unauthorized(str(exc)) from exc


def admit(ctx: ApiContext, principal: Principal, scope: Scope) -> None:
    """Check ``scope`` (401 for anonymous callers, 403 otherwise) and take one token of the
    caller's rate limit (429 with Retry-After; a refused request takes nothing)."""
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


def require(scope: Scope) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency that authenticates, checks ``scope`` and the caller's rate limit.

    It takes only the request (the context is ``request.app.state.ctx``): FastAPI resolves
    each dependency on every request. The bearer scheme is declared in the OpenAPI document
    by :func:`api.app.create_app`. (The hottest coverage requests skip FastAPI altogether:
    :mod:`api.fastpath`, which applies the same checks.)"""

    async def dependency(request: Request) -> Principal:
        ctx: ApiContext = request.app.state.ctx
        principal = await authenticate(ctx, request)
        admit(ctx, principal, scope)
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


def snapshot_response(request: Request, answer: Answer) -> Response:
    """A snapshot answer as sent: 200 with JSON and its ETag, or 304 if the caller has it."""
    status, headers = views.respond(answer, request.headers.get("if-none-match"))
    response = Response(answer.body if status == 200 else b"", status_code=status)
    response.raw_headers = headers
    return response


NOT_MODIFIED: dict[int | str, dict[str, object]] = {
    304: {"description": "Not modified: `If-None-Match` names the current answer's ETag"}
}


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
