"""API keys, JWTs, rate limits, cursors and the columnar encoder: pure parts of the API."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pyarrow.parquet as pq
import pytest
from fastapi import HTTPException
from pyarrow import ipc

from api import auth, export, pagination
from api.app import create_app
from qilu.errors import ConfigError
from qilu.ratelimit import RateLimiter, retry_after_header
from qilu.settings import ApiSettings, load
from storage.queries_api import ApiKeyRow

NOW = datetime(2026, 11, 23, tzinfo=UTC)
API = ApiSettings(jwt_secret="s3cret-for-tests-only-" + "x" * 64)  # type: ignore[arg-type]


def row(key: auth.NewKey, **kw: Any) -> ApiKeyRow:
    return ApiKeyRow(
        key_id=key.key_id,
        name="t",
        secret_sha256=key.secret_sha256,
        scopes=tuple(kw.get("scopes", ("coverage:read",))),
        cities=tuple(kw.get("cities", ())),
        sectors=tuple(kw.get("sectors", ())),
        rate_per_s=None,
        created_at=NOW,
        expires_at=kw.get("expires_at"),
        revoked_at=kw.get("revoked_at"),
    )


def test_key_tokens_round_trip_and_only_a_digest_is_kept() -> None:
    k = auth.new_key()
    assert k.token.startswith("qk_" + k.key_id + "_")
    parsed = auth.parse_token(k.token)
    assert parsed is not None
    assert parsed[0] == k.key_id
    assert parsed[1] not in k.secret_sha256.hex()
    assert len(k.secret_sha256) == 32
    p = auth.principal_from_key(row(k, cities=["370200"]), parsed[1], NOW)
    assert p.subject == f"key:{k.key_id}"
    assert p.allows(auth.Scope.COVERAGE_READ)
    assert not p.allows(auth.Scope.TELEMETRY_READ)
    assert p.sees_city("370200")
    assert not p.sees_city("370100")


@pytest.mark.parametrize("token", ["", "qk_", "qk_xyz_abc", "qk_0123456789ab", "eyJ.a.b"])
def test_malformed_key_tokens_are_not_keys(token: str) -> None:
    assert auth.parse_token(token) is None


def test_wrong_secret_revoked_expired_and_unknown_keys_are_refused() -> None:
    k = auth.new_key()
    _, secret = auth.parse_token(k.token) or ("", "")
    with pytest.raises(auth.AuthError, match="unknown"):
        auth.principal_from_key(row(k), secret + "x", NOW)
    with pytest.raises(auth.AuthError, match="unknown"):
        auth.principal_from_key(None, secret, NOW)
    with pytest.raises(auth.AuthError, match="revoked"):
        auth.principal_from_key(row(k, revoked_at=NOW), secret, NOW)
    with pytest.raises(auth.AuthError, match="expired"):
        auth.principal_from_key(row(k, expires_at=NOW), secret, NOW)


def test_admin_implies_every_scope() -> None:
    k = auth.new_key()
    _, secret = auth.parse_token(k.token) or ("", "")
    p = auth.principal_from_key(row(k, scopes=["admin"]), secret, NOW)
    assert all(p.allows(s) for s in auth.Scope)


def token(**claims: Any) -> str:
    body = {
        "sub": "ops",
        "iss": API.jwt_issuer,
        "aud": API.jwt_audience,
        "exp": datetime.now(UTC) + timedelta(minutes=5),
        "scope": "coverage:read telemetry:read",
    }
    body.update(claims)
    key = claims.pop("_key", API.jwt_secret.get_secret_value())
    body.pop("_key", None)
    alg = body.pop("_alg", "HS256")
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=alg)


def test_a_valid_jwt_gives_its_scopes_and_limits() -> None:
    p = auth.principal_from_jwt(token(cities=["370200"], sectors=["charging"]), API)
    assert p.subject == "jwt:ops"
    assert p.allows(auth.Scope.TELEMETRY_READ)
    assert p.area.cities == frozenset({"370200"})
    assert p.area.sectors == frozenset({"charging"})


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"exp": datetime.now(UTC) - timedelta(seconds=5)}, "expired"),
        ({"aud": "someone-else"}, "audience"),
        ({"iss": "evil"}, "issuer"),
        ({"_key": "another-secret-" + "y" * 64}, "invalid token"),
        ({"_alg": "HS512"}, "invalid token"),  # only the configured algorithm is accepted
        ({"exp": None}, "invalid token"),  # exp is required
        ({"sub": None}, "invalid token"),
        ({"scope": "coverage:read root"}, "unknown scope"),
        ({"cities": "370200"}, "lists"),
    ],
)
def test_bad_jwts_are_refused(claims: dict[str, Any], message: str) -> None:
    with pytest.raises(auth.AuthError, match=message):
        auth.principal_from_jwt(token(**claims), API)


def test_unsigned_jwt_is_refused() -> None:
    unsigned = jwt.encode(
        {"sub": "x", "iss": "qilu", "aud": "qilu-api", "exp": NOW + timedelta(days=9999)},
        None,
        algorithm="none",
    )
    with pytest.raises(auth.AuthError):
        auth.principal_from_jwt(unsigned, API)


def test_jwts_refused_when_no_secret_is_configured() -> None:
    api = ApiSettings(jwt_secret="")  # type: ignore[arg-type]
    with pytest.raises(auth.AuthError, match="not accepted"):
        auth.principal_from_jwt(token(), api)


def test_development_jwt_secret_is_refused_in_production() -> None:
    prod = load(env="production", db={"password": "x"})  # other processes do not care
    with pytest.raises(ConfigError, match=r"api\.jwt_secret"):
        create_app(prod)
    ok = load(env="production", db={"password": "x"}, api={"jwt_secret": "r" * 32})
    assert create_app(ok).title == "Qilu Telemetry API"
    assert create_app(load(env="production", db={"password": "x"}, api={"jwt_secret": ""}))
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        load(api={"jwt_secret": "short"})


def test_anonymous_scopes_default_to_coverage_in_development_only() -> None:
    assert auth.anonymous_scopes(ApiSettings(), True) == {auth.Scope.COVERAGE_READ}
    assert auth.anonymous_scopes(ApiSettings(), False) == frozenset()
    assert auth.anonymous_scopes(ApiSettings(anonymous_scopes=[]), True) == frozenset()


def test_token_bucket() -> None:
    clock = [0.0]
    rl = RateLimiter(burst=2, clock=lambda: clock[0])
    assert [rl.take("a", 1.0) for _ in range(2)] == [0.0, 0.0]
    wait = rl.take("a", 1.0)
    assert wait == pytest.approx(1.0)
    assert retry_after_header(wait) == "1"
    assert rl.take("b", 1.0) == 0.0  # per key
    clock[0] = 0.5
    assert rl.take("a", 1.0) == pytest.approx(0.5)
    clock[0] = 1.6
    assert rl.take("a", 1.0) == 0.0
    assert retry_after_header(0.01) == "1"
    assert retry_after_header(2.2) == "3"


def test_cursors_round_trip_and_refuse_garbage() -> None:
    key = [NOW, 7]
    assert pagination.decode(pagination.encode(key), (datetime, int)) == key
    for bad in ["%%%", pagination.encode(["x"]), pagination.encode([NOW.isoformat(), "7"])]:
        with pytest.raises(HTTPException) as exc:
            pagination.decode(bad, (datetime, int))
        assert exc.value.status_code == 400
    naive = pagination.encode([NOW.replace(tzinfo=None), 1])
    with pytest.raises(HTTPException):
        pagination.decode(naive, (datetime, int))


ROWS = [
    (
        NOW + timedelta(seconds=i),
        f"D{i % 3}",
        "S1",
        "370200",
        "charging_pile",
        "power_kw",
        i * 1.5,
        0,
    )
    for i in range(10)
]


@pytest.mark.parametrize("fmt", list(export.ExportFormat))
def test_export_encodes_batches_into_one_readable_file(fmt: export.ExportFormat) -> None:
    data = b"".join(export.encode([ROWS[:4], ROWS[4:]], fmt))
    if fmt is export.ExportFormat.PARQUET:
        table = pq.read_table(io.BytesIO(data))
        assert pq.ParquetFile(io.BytesIO(data)).num_row_groups == 2
    else:
        table = ipc.open_stream(data).read_all()
    assert table.schema == export.SCHEMA
    assert table.column("value").to_pylist() == [r[6] for r in ROWS]
    assert table.column("ts").to_pylist() == [r[0] for r in ROWS]


@pytest.mark.parametrize("fmt", list(export.ExportFormat))
def test_export_of_nothing_is_a_valid_empty_file(fmt: export.ExportFormat) -> None:
    data = b"".join(export.encode([], fmt))
    table = (
        pq.read_table(io.BytesIO(data))
        if fmt is export.ExportFormat.PARQUET
        else ipc.open_stream(data).read_all()
    )
    assert table.num_rows == 0
    assert table.schema == export.SCHEMA
