"""Pure ASGI middleware (cheaper than BaseHTTPMiddleware): metrics and the request size limit;
and the event-loop lag probe (how late the loop runs a timer: time it was blocked by
synchronous work or starved of CPU, which every request waiting on it pays too)."""

from __future__ import annotations

import asyncio
import json
import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter("qilu_api_requests_total", "API requests", ["route", "status"])
LATENCY = Histogram(
    "qilu_api_request_seconds",
    "API request latency, until the response starts",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1),
)

LOOP_LAG = Histogram(
    "qilu_api_loop_lag_seconds",
    "How late the event loop ran a timer due every 50 ms (blocked or starved of CPU)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1),
)


async def watch_loop_lag(interval_s: float = 0.05) -> None:
    """Observe :data:`LOOP_LAG` until cancelled (one timer per interval: negligible cost)."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        LOOP_LAG.observe(max(0.0, loop.time() - due))


class Observe:
    """Counts requests by route template and status; latency until the response starts (so a
    long stream, SSE or export, counts its time to first byte)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                route = scope.get("route")
                LATENCY.labels(getattr(route, "path", "unmatched")).observe(
                    time.perf_counter() - start
                )
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            route = scope.get("route")
            REQUESTS.labels(getattr(route, "path", "unmatched"), str(status)).inc()


async def _problem(send: Send, status: int, error: str, detail: str) -> None:
    body = json.dumps({"error": error, "detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """400 for NUL characters in the URL; 413 for a request body over ``max_bytes``: by
    Content-Length before reading anything, and a chunked body is read up to the limit first
    (the API takes no large bodies)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope["query_string"]:
            # no relation stores NUL in text: refuse it here rather than fail in the database
            await _problem(send, 400, "bad_request", "NUL characters are not allowed in URLs")
            return
        limit = self.max_bytes
        detail = f"request body over {limit} bytes"
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_big = int(value) > limit
                except ValueError:
                    await _problem(send, 400, "bad_request", "invalid Content-Length")
                    return
                if too_big:
                    await _problem(send, 413, "too_large", detail)
                    return
        if not any(name == b"transfer-encoding" for name, _ in scope["headers"]):
            await self.app(scope, receive, send)
            return
        # A chunked body: read it (at most the limit) before the app runs, then replay it.
        buffered: list[Message] = []
        seen = 0
        while True:
            message = await receive()
            buffered.append(message)
            if message["type"] != "http.request":
                break
            seen += len(message.get("body", b""))
            if seen > limit:
                await _problem(send, 413, "too_large", detail)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return buffered.pop(0) if buffered else await receive()

        await self.app(scope, replay, send)
