"""Who is calling: API keys (stored hashed) and bearer JWTs, turned into a :class:`Principal`.

API key tokens look like ``qk_<key_id>_<secret>``: ``key_id`` is 12 hex digits (public, the
database key, shown by ``qilu apikey list``), ``secret`` is 32 random bytes in URL-safe base64.
Only SHA-256(secret) is stored. A fast hash is enough here because the secret has 256 bits of
entropy (nothing to brute-force); the digest is compared in constant time. Lookups are cached
for ``api.key_cache_s`` seconds, so a revocation takes effect within that time.

Bearer JWTs are verified with one fixed algorithm (never the token's own ``alg`` choice), and
must carry ``exp``, ``iss``, ``aud`` and ``sub``; ``scope`` is a space-separated list as in
OAuth 2.0, ``cities`` and ``sectors`` optional lists that limit what the token sees.

Scopes: ``coverage:read`` (targets, coverage, series), ``telemetry:read`` (sites, devices,
readings, gaps, export), ``admin`` (everything, key listing). A principal limited to some cities
or sectors gets 404 for anything outside them, exactly as for something that does not exist.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import jwt

from qilu.settings import ApiSettings
from storage.queries_api import ApiKeyRow, Area

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "qk_"  # noqa: S105 - a public marker, not a secret
_KEY_ID_HEX = 12


class Scope(enum.StrEnum):
    COVERAGE_READ = "coverage:read"
    TELEMETRY_READ = "telemetry:read"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str  # "key:<key_id>", "jwt:<sub>" or "anonymous:<client address>"
    scopes: frozenset[Scope]
    area: Area
    rate_per_s: float | None = None  # None: the default of the settings

    def allows(self, scope: Scope) -> bool:
        return Scope.ADMIN in self.scopes or scope in self.scopes

    def sees_city(self, code: str) -> bool:
        return self.area.cities is None or code in self.area.cities

    def sees_sector(self, sector: str) -> bool:
        return self.area.sectors is None or sector in self.area.sectors

    @property
    def whole_province(self) -> bool:
        return self.area.cities is None


class AuthError(Exception):
    """Credentials missing, malformed, unknown, expired or revoked (answer 401)."""


# -- API key tokens --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class NewKey:
    key_id: str
    token: str  # shown once
    secret_sha256: bytes


def new_key() -> NewKey:
    key_id = secrets.token_hex(_KEY_ID_HEX // 2)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    return NewKey(key_id, f"{TOKEN_PREFIX}{key_id}_{secret}", _digest(secret))


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def parse_token(token: str) -> tuple[str, str] | None:
    """(key_id, secret) of an API key token, or None if it is not one."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    key_id, sep, secret = token[len(TOKEN_PREFIX) :].partition("_")
    if not sep or len(key_id) != _KEY_ID_HEX or not secret:
        return None
    if any(c not in "0123456789abcdef" for c in key_id):
        return None
    return key_id, secret


class KeyStore:
    """API key lookups with a short cache (hits and misses), safe to share between threads.

    An entry is served for at most ``cache_s`` seconds after it was read, which bounds how long
    a revoked key keeps working. So that a busy key never waits for the database, an entry
    used in the second half of its life is re-read ahead of time by one background thread
    ("key-refresh"), which gathers the keys due within ``BATCH_S`` and reads them together
    (``fetch_many``: one pooled connection for all); a request blocks on the database only for
    a key unseen for ``cache_s``.
    """

    BATCH_S = 0.1

    def __init__(
        self,
        fetch: Callable[[str], ApiKeyRow | None],
        cache_s: float,
        fetch_many: Callable[[list[str]], dict[str, ApiKeyRow | None]] | None = None,
    ) -> None:
        self._fetch, self._cache_s = fetch, cache_s
        self._fetch_many = fetch_many or (lambda ids: {k: fetch(k) for k in ids})
        self._cache: dict[str, tuple[float, ApiKeyRow | None]] = {}
        self._lock = threading.Lock()
        self._due: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._queued: set[str] = set()
        self._thread: threading.Thread | None = None
        self._closed = False

    def cached(self, key_id: str) -> tuple[bool, ApiKeyRow | None]:
        """(found in a fresh cache entry, the row); no I/O. A fresh entry past half its
        life is queued for a background re-read."""
        hit = self._cache.get(key_id)
        if hit is None:
            return False, None
        age = time.monotonic() - hit[0]
        if age >= self._cache_s:
            return False, None
        if age >= self._cache_s / 2 and key_id not in self._queued:
            self._refresh_ahead(key_id)
        return True, hit[1]

    def load(self, key_id: str) -> ApiKeyRow | None:
        """Fetch from the database (blocking) and cache."""
        read_at = time.monotonic()  # the row is at least as fresh as the moment we asked
        row = self._fetch(key_id)
        self._store(read_at, {key_id: row})
        return row

    def _store(self, read_at: float, rows: dict[str, ApiKeyRow | None]) -> None:
        with self._lock:
            if len(self._cache) > 10_000:  # unknown ids must not grow the cache without bound
                self._cache.clear()
            for key_id, row in rows.items():
                self._cache[key_id] = (read_at, row)

    def close(self) -> None:
        """Stop the background re-reads (entries already cached stay until they expire)."""
        self._closed = True
        if self._thread is not None:
            self._due.put(None)
            self._thread.join(timeout=10)
            self._thread = None

    def _refresh_ahead(self, key_id: str) -> None:
        with self._lock:
            if self._closed or key_id in self._queued:
                return
            self._queued.add(key_id)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="key-refresh", daemon=True)
                self._thread.start()
        self._due.put(key_id)

    def _run(self) -> None:
        while (first := self._due.get()) is not None:
            time.sleep(self.BATCH_S)  # let the other keys falling due join this read
            batch, stop = [first], False
            while not self._due.empty():
                key_id = self._due.get()
                if key_id is None:
                    stop = True
                    break
                batch.append(key_id)
            read_at = time.monotonic()
            try:
                self._store(read_at, self._fetch_many(batch))
            except Exception as exc:  # noqa: BLE001 - the request path retries on expiry
                # the entries simply expire and the next request reads its key itself
                # (answering 503 if the database is down): nothing is lost by not retrying
                logger.debug("re-reading %d API keys failed: %s", len(batch), exc)
            finally:
                with self._lock:
                    self._queued.difference_update(batch)
            if stop:
                return


def principal_from_key(row: ApiKeyRow | None, secret: str, now: datetime) -> Principal:
    # Compare against a digest even for unknown ids so timing does not tell them apart.
    stored = row.secret_sha256 if row is not None else b"\0" * 32
    if not hmac.compare_digest(_digest(secret), stored) or row is None:
        raise AuthError("unknown API key")
    if row.revoked_at is not None:
        raise AuthError("API key revoked")
    if row.expires_at is not None and row.expires_at <= now:
        raise AuthError("API key expired")
    return Principal(
        f"key:{row.key_id}",
        frozenset(Scope(s) for s in row.scopes),
        Area(
            frozenset(row.cities) if row.cities else None,
            frozenset(row.sectors) if row.sectors else None,
        ),
        row.rate_per_s,
    )


# -- JWT ------------------------------------------------------------------------------------
def principal_from_jwt(token: str, api: ApiSettings) -> Principal:
    key = api.jwt_secret.get_secret_value()
    if not key:
        raise AuthError("bearer JWTs are not accepted here (api.jwt_secret is not set)")
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[api.jwt_algorithm],
            audience=api.jwt_audience,
            issuer=api.jwt_issuer,
            options={"require": ["exp", "iss", "aud", "sub"]},
            leeway=api.jwt_leeway_s,
        )
    except jwt.ExpiredSignatureError as exc:
        raise AuthError("token expired") from exc
    except jwt.InvalidAudienceError as exc:
        raise AuthError("token audience is not this API") from exc
    except jwt.InvalidIssuerError as exc:
        raise AuthError("token issuer is not accepted") from exc
    except jwt.InvalidTokenError as exc:
        raise AuthError(f"invalid token: {exc}") from exc
    try:
        scopes = frozenset(Scope(s) for s in str(claims.get("scope", "")).split())
    except ValueError as exc:
        raise AuthError(f"invalid token: unknown scope ({exc})") from exc
    cities, sectors = claims.get("cities"), claims.get("sectors")
    if not (cities is None or isinstance(cities, list)) or not (
        sectors is None or isinstance(sectors, list)
    ):
        raise AuthError("invalid token: cities and sectors must be lists")
    return Principal(
        f"jwt:{claims['sub']}",
        scopes,
        Area(
            frozenset(map(str, cities)) if cities else None,
            frozenset(map(str, sectors)) if sectors else None,
        ),
    )


def anonymous(client: str, api: ApiSettings, development: bool) -> Principal:
    return Principal(f"anonymous:{client}", anonymous_scopes(api, development), Area())


def anonymous_scopes(api: ApiSettings, development: bool) -> frozenset[Scope]:
    """What a request without credentials may do: ``api.anonymous_scopes`` when set, else
    coverage:read in development (so the local demo works without a key) and nothing
    elsewhere."""
    if api.anonymous_scopes is not None:
        return frozenset(Scope(s) for s in api.anonymous_scopes)
    return frozenset({Scope.COVERAGE_READ}) if development else frozenset()


def utcnow() -> datetime:
    return datetime.now(UTC)
