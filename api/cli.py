"""``qilu api`` (serve the HTTP API) and ``qilu apikey create|list|revoke``."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from api.auth import Scope, new_key
from qilu.catalog import load_catalog
from qilu.errors import ConfigError
from qilu.settings import Settings
from storage import queries_api
from storage.db import connect

SECTORS = ("charging", "substation", "ranch")


def register(sub: Any) -> None:
    p = sub.add_parser("api", help="serve the coverage API and the status page (FastAPI)")
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 8080)")
    p.add_argument(
        "--ssl-certfile",
        default=None,
        help="serve HTTPS with this certificate (PEM, chain after it; api.tls_certfile)",
    )
    p.add_argument(
        "--ssl-keyfile", default=None, help="the certificate's private key (api.tls_keyfile)"
    )
    p.set_defaults(handler=_serve)

    k = sub.add_parser(
        "apikey",
        help="create, list and revoke API keys",
        description=(
            "API keys for the HTTP API. The token is printed once, at creation; only a hash is "
            "stored. Scopes: coverage:read (targets, coverage), telemetry:read (sites, devices, "
            "readings, gaps, export), admin (everything). --city/--sector limit what the key "
            "sees: anything outside answers 404."
        ),
    )
    ks = k.add_subparsers(dest="apikey_command", required=True, metavar="ACTION")
    c = ks.add_parser("create", help="create a key and print its token (once)")
    c.add_argument("--name", required=True, help="who or what uses it, e.g. 'qingdao-charging'")
    c.add_argument(
        "--scope",
        action="append",
        choices=[s.value for s in Scope],
        required=True,
        help="repeat for several scopes",
    )
    c.add_argument("--city", action="append", default=[], help="limit to this city code (repeat)")
    c.add_argument(
        "--sector", action="append", default=[], choices=SECTORS, help="limit to a sector (repeat)"
    )
    c.add_argument("--expires-days", type=float, default=None, help="expire after N days")
    c.add_argument(
        "--rate", type=float, default=None, help="requests/s for this key (default: api.rate_per_s)"
    )
    c.set_defaults(handler=_create)
    ls = ks.add_parser("list", help="list keys (never their secrets)")
    ls.add_argument("--all", action="store_true", help="include revoked keys")
    ls.set_defaults(handler=_list)
    r = ks.add_parser("revoke", help="revoke a key by its id (effective within api.key_cache_s)")
    r.add_argument("key_id", help="the 12 hex digits after qk_")
    r.set_defaults(handler=_revoke)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from api.app import create_app

    certfile = args.ssl_certfile or settings.api.tls_certfile
    keyfile = args.ssl_keyfile or settings.api.tls_keyfile
    if bool(certfile) != bool(keyfile):
        raise ConfigError(
            "api.tls_certfile / api.tls_keyfile", "HTTPS needs both the certificate and its key"
        )
    app = create_app(settings)
    uvicorn.run(
        app,
        host=args.host or settings.api.host,
        port=args.port or settings.api.port,
        ssl_certfile=str(certfile) if certfile else None,
        ssl_keyfile=str(keyfile) if keyfile else None,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=5,
    )
    return 0


def create_key(
    settings: Settings,
    *,
    name: str,
    scopes: list[str],
    cities: list[str] | None = None,
    sectors: list[str] | None = None,
    expires_days: float | None = None,
    rate: float | None = None,
) -> tuple[str, str]:
    """Store a new key; returns (key_id, token). The token is not kept anywhere."""
    cities, sectors = sorted(set(cities or ())), sorted(set(sectors or ()))
    known = load_catalog().city_codes
    for code in cities:
        if code not in known:
            raise ConfigError("apikey.city", f"{code!r} is not one of Shandong's 16 city codes")
    for s in scopes:
        Scope(s)
    if rate is not None and rate <= 0:
        raise ConfigError("apikey.rate", "must be positive")
    key = new_key()
    now = datetime.now(UTC)
    row = queries_api.ApiKeyRow(
        key_id=key.key_id,
        name=name,
        secret_sha256=key.secret_sha256,
        scopes=tuple(sorted(set(scopes))),
        cities=tuple(cities),
        sectors=tuple(sectors),
        rate_per_s=rate,
        created_at=now,
        expires_at=now + timedelta(days=expires_days) if expires_days else None,
    )
    with connect(settings.db) as conn:
        queries_api.insert_api_key(conn, row)
    return key.key_id, key.token


def _create(args: argparse.Namespace, settings: Settings) -> int:
    key_id, token = create_key(
        settings,
        name=args.name,
        scopes=args.scope,
        cities=args.city,
        sectors=args.sector,
        expires_days=args.expires_days,
        rate=args.rate,
    )
    sys.stderr.write(
        f"created key {key_id} ({args.name}); the token below is shown only now, keep it safe:\n"
    )
    sys.stdout.write(token + "\n")
    return 0


def _list(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings.db) as conn:
        rows = queries_api.list_api_keys(conn, include_revoked=args.all)
    head = f"{'key_id':<13}{'name':<24}{'scopes':<36}{'limits':<28}{'created':<18}state"
    out = [head]
    now = datetime.now(UTC)
    for r in rows:
        limits = ",".join(r.cities + r.sectors) or "-"
        state = "active"
        if r.revoked_at is not None:
            state = f"revoked {r.revoked_at:%Y-%m-%d %H:%M}"
        elif r.expires_at is not None:
            state = ("expired " if r.expires_at <= now else "expires ") + f"{r.expires_at:%Y-%m-%d}"
        out.append(
            f"{r.key_id:<13}{r.name[:23]:<24}{' '.join(r.scopes):<36}{limits[:27]:<28}"
            f"{r.created_at:%Y-%m-%d %H:%M}  {state}"
        )
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def _revoke(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings.db) as conn:
        found = queries_api.revoke_api_key(conn, args.key_id, datetime.now(UTC))
    if not found:
        sys.stderr.write(f"qilu: no API key {args.key_id!r} (see `qilu apikey list --all`)\n")
        return 1
    sys.stderr.write(
        f"revoked {args.key_id}; API processes refuse it within their key cache time\n"
    )
    return 0
