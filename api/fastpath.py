"""The hot coverage requests answered before FastAPI's routing (pure ASGI middleware).

``GET /v1/coverage``, ``GET /v1/coverage/{target_id}`` and ``GET /v1/status`` are answered
from bytes memoised on the snapshot, so the work left per request is authentication, the rate
limit and a dictionary lookup. FastAPI's routing and dependency resolution cost several times
that (about 200 us of CPU a request, against 45 us here; measured with cProfile). On a
two-core host shared with ingest, Kafka and PostgreSQL, the less CPU the API needs, the less
it waits for a core.

This layer answers only the plain successful case: a cached API key, a bearer JWT or no
credentials; a known target and city visible to the caller; no query parameters but
``target`` and ``city``. Everything else (a key to read from the database, any error, any
other parameter) goes on to the FastAPI route, which stays the reference: the checks are the
same functions (:func:`api.deps.authenticate_cached`, :func:`api.deps.admit`), the bodies the
same memoised answers, and the metrics label the route's template (``scope["route"]``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fastapi import HTTPException
from prometheus_client import Counter
from starlette.types import ASGIApp, Receive, Scope, Send

from api import views
from api.auth import Scope as AuthScope
from api.deps import ApiContext, admit, authenticate_cached
from api.routers.status import status_area_cached
from api.service import Answer, Snapshot

_CITY = re.compile(r"\d{6}")
ANSWERED = Counter(
    "qilu_api_fast_answers_total", "Coverage and status requests answered before routing"
)


@dataclass(frozen=True, slots=True)
class Routed:
    """What ``scope["route"]`` carries for :class:`api.middleware.Observe`: the template."""

    path: str


_COVERAGE, _ONE, _STATUS = (
    Routed("/v1/coverage"),
    Routed("/v1/coverage/{target_id}"),
    Routed("/v1/status"),
)


class FastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "GET"
            or not scope["path"].startswith(("/v1/coverage", "/v1/status"))
        ):
            await self.app(scope, receive, send)
            return
        try:
            found = self._answer(scope)
        except HTTPException:
            found = None  # the route answers errors (same checks, same body)
        if found is None:
            await self.app(scope, receive, send)
            return
        route, answer, if_none_match = found
        scope["route"] = route  # the metrics label, as if routed
        ANSWERED.inc()
        status, headers = views.respond(answer, if_none_match)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body if status == 200 else b""})

    def _answer(self, scope: Scope) -> tuple[Routed, Answer, str | None] | None:
        ctx: ApiContext | None = getattr(scope["app"].state, "ctx", None)
        snap = ctx.refresher.snapshot if ctx is not None else None
        req = _Plain.of(scope)
        if ctx is None or snap is None or req is None:
            return None
        path: str = scope["path"]
        if path == "/v1/status":
            return _status(ctx, snap, req)
        if path == "/v1/coverage":
            return _coverage(ctx, snap, req, req.query.pop("target", None))
        if path.startswith("/v1/coverage/") and path.count("/") == 3 and "target" not in req.query:
            return _coverage(ctx, snap, req, path[len("/v1/coverage/") :], one=True)
        return None


@dataclass(slots=True)
class _Plain:
    """What the fast path reads of a request."""

    query: dict[str, str]
    authorization: str | None
    if_none_match: str | None
    client: str

    @classmethod
    def of(cls, scope: Scope) -> _Plain | None:
        """None for anything unusual (escapes or other names in the query string, two
        Authorization headers): the route will judge it."""
        query = _query(scope["query_string"])
        if query is None:
            return None
        authorization = if_none_match = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if authorization is not None:
                    return None
                authorization = value.decode("latin-1")
            elif name == b"if-none-match":
                if_none_match = value.decode("latin-1")
        client = scope["client"][0] if scope.get("client") else "unknown"
        return cls(query, authorization, if_none_match, client)


def _status(
    ctx: ApiContext, snap: Snapshot, req: _Plain
) -> tuple[Routed, Answer, str | None] | None:
    area = None if req.query else status_area_cached(ctx, req.authorization, req.client)
    if area is None:
        return None
    answer = views.status_answer(snap, ctx.catalog, area, ctx.settings.api.coverage_cache_s)
    return _STATUS, answer, req.if_none_match


def _coverage(
    ctx: ApiContext, snap: Snapshot, req: _Plain, target: str | None, *, one: bool = False
) -> tuple[Routed, Answer, str | None] | None:
    catalog = ctx.catalog
    city = req.query.pop("city", None)
    plain = not req.query and (city is None or _CITY.fullmatch(city) is not None)
    who = authenticate_cached(ctx, req.authorization, req.client) if plain else None
    if who is None:
        return None
    t = catalog.target(target) if target is not None else None
    if target is not None and (t is None or not views.visible_target(who, t)):
        return None  # unknown, or outside the caller's sectors: the route answers 404
    if city is not None and (city not in catalog.city_codes or not who.sees_city(city)):
        return None
    admit(ctx, who, AuthScope.COVERAGE_READ)  # last: a refused request takes no token
    if one and target is not None:
        return _ONE, views.one_answer(snap, catalog, who.area, target, city), req.if_none_match
    answer = views.coverage_answer(snap, catalog, who.area, target, city)
    return _COVERAGE, answer, req.if_none_match


def _query(raw: bytes) -> dict[str, str] | None:
    """``target`` and ``city`` from a plain query string (no escapes, no repeats), or None."""
    out: dict[str, str] = {}
    if not raw:
        return out
    if b"%" in raw or b"+" in raw:
        return None
    for part in raw.decode("latin-1").split("&"):
        name, sep, value = part.partition("=")
        if not sep or name not in ("target", "city") or name in out:
            return None
        out[name] = value
    return out
