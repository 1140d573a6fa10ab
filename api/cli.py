"""``qilu api``: serve the HTTP API with uvicorn."""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn

from api.app import create_app
from qilu.settings import Settings


def register(sub: Any) -> None:
    p = sub.add_parser("api", help="serve the coverage API (FastAPI + uvicorn)")
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 8080)")
    p.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    app = create_app(settings)
    uvicorn.run(
        app,
        host=args.host or settings.api.host,
        port=args.port or settings.api.port,
        log_level="warning",
        access_log=False,
    )
    return 0
