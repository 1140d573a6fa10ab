"""The T/CEC 102 part 4 exchange layer: envelopes, encryption, signatures, tokens. No I/O.

A request is a JSON object of five strings::

    {"OperatorID": "<9 chars>", "Data": "<Base64 AES-128-CBC of the business JSON>",
     "TimeStamp": "yyyyMMddHHmmss", "Seq": "0001", "Sig": "<HMAC-MD5, upper-case hex>"}

``Sig`` is HMAC-MD5 with the link's ``SigSecret`` over OperatorID + Data + TimeStamp + Seq;
a response ``{"Ret": 0, "Msg": "", "Data": "...", "Sig": "..."}`` is signed over
Ret + Msg + Data. ``Data`` is the business JSON, AES-128-CBC with PKCS#7 padding under
``DataSecret`` and ``DataSecretIV`` (16 characters each), then Base64.

Checks run in the order that costs an attacker the most and us the least: the envelope's
shape, then the signature (before anything is decrypted), then the time stamp, then the
decryption, then the business JSON. Each failure raises :class:`ExchangeError` with the
standard's closest result code (:class:`Ret`) and a machine-readable reason for the dead-letter
record. ``Seq`` is not a replay guard: several senders send a constant "0001"; freshness comes
from ``TimeStamp`` within a tolerance window.

Tokens (``query_token``) are stateless: an HMAC-SHA256 over (operator, key number, expiry)
with a server key, so every API worker accepts them, a restart keeps them valid and rotating
an operator's keys (a new key number) retires its tokens at once.

Design and the sources of every field name and code: docs/adr/0015-tcec102.md.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from qilu.errors import ConfigError, DecodeError

# China Standard Time: UTC+8 all year (no daylight saving since 1991), what TimeStamp means
CST = timezone(timedelta(hours=8), "Asia/Shanghai")
TIMESTAMP_FORMAT = "%Y%m%d%H%M%S"
KEY_CHARS = 16  # DataSecret, DataSecretIV: 16 characters -> AES-128
REQUEST_FIELDS = ("OperatorID", "Data", "TimeStamp", "Seq", "Sig")
_OPERATOR_ID = re.compile(r"^[0-9A-Za-z]{9}$")  # an organisation code: 9 characters
_SEQ = re.compile(r"^[0-9]{1,4}$")
_HEX32 = re.compile(r"^[0-9A-Fa-f]{32}$")
_EPOCH_MS = re.compile(r"^[0-9]{13}$")


class Ret(enum.IntEnum):
    """Result codes of part 4 (docs/adr/0015 says where each is confirmed)."""

    BUSY = -1  # system busy: retry later
    OK = 0
    SIGNATURE = 4001  # signature error
    TOKEN = 4002  # token error (missing, expired, foreign)
    POST_PARAMETERS = 4003  # invalid POST parameters (the envelope)
    BUSINESS_PARAMETERS = 4004  # invalid business parameters (the decrypted Data)
    SYSTEM = 500  # system error


MESSAGES = {
    Ret.BUSY: "system busy, retry later",
    Ret.OK: "",
    Ret.SIGNATURE: "signature error",
    Ret.TOKEN: "token error",
    Ret.POST_PARAMETERS: "invalid POST parameters",
    Ret.BUSINESS_PARAMETERS: "invalid business parameters",
    Ret.SYSTEM: "system error",
}


class ExchangeError(DecodeError):
    """A request (or response) the exchange layer refuses: ``ret`` is the code to answer,
    ``reason`` the dead-letter reason, ``detail`` what exactly was wrong."""

    def __init__(self, ret: Ret, reason: str, detail: str = "") -> None:
        super().__init__(reason, detail)
        self.ret = ret


@dataclass(frozen=True, slots=True)
class KeySet:
    """One direction of one operator link: what signs and encrypts the messages.

    The same values may serve both directions, and DataSecretIV may equal DataSecret (one
    supervision platform in the wild does both); each is configurable on its own.
    """

    operator_secret: str
    data_secret: str
    data_secret_iv: str
    sig_secret: str

    def __post_init__(self) -> None:
        for name in ("data_secret", "data_secret_iv"):
            value = getattr(self, name)
            if len(value.encode("utf-8")) != KEY_CHARS:
                raise ConfigError(name, f"must be {KEY_CHARS} ASCII characters (AES-128)")
        if not self.sig_secret:
            raise ConfigError("sig_secret", "must not be empty")
        if not self.operator_secret:
            raise ConfigError("operator_secret", "must not be empty")

    def as_dict(self) -> dict[str, str]:
        return {
            "OperatorSecret": self.operator_secret,
            "DataSecret": self.data_secret,
            "DataSecretIV": self.data_secret_iv,
            "SigSecret": self.sig_secret,
        }


# ------------------------------------------------------------------------------ primitives


def sign(sig_secret: str, *parts: str) -> str:
    """HMAC-MD5 over the concatenated parts, upper-case hex."""
    mac = hmac.new(sig_secret.encode("utf-8"), "".join(parts).encode("utf-8"), hashlib.md5)
    return mac.hexdigest().upper()


@functools.lru_cache(maxsize=1024)
def _cipher(key: str, iv: str) -> Cipher[modes.CBC]:
    """A reusable cipher description per key set (each message gets its own context)."""
    return Cipher(algorithms.AES(key.encode("utf-8")), modes.CBC(iv.encode("utf-8")))


def encrypt_data(plain: bytes, keys: KeySet) -> str:
    """AES-128-CBC with PKCS#7 padding, then standard Base64."""
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plain) + padder.finalize()
    enc = _cipher(keys.data_secret, keys.data_secret_iv).encryptor()
    return base64.b64encode(enc.update(padded) + enc.finalize()).decode("ascii")


def decrypt_data(data: str, keys: KeySet) -> bytes:
    """The inverse of :func:`encrypt_data`; ExchangeError(4003, undecryptable_data)."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ExchangeError(
            Ret.POST_PARAMETERS, "undecryptable_data", "Data is not Base64"
        ) from exc
    if not raw or len(raw) % 16:
        raise ExchangeError(
            Ret.POST_PARAMETERS,
            "undecryptable_data",
            f"Data is {len(raw)} bytes, not a whole number of AES blocks",
        )
    dec = _cipher(keys.data_secret, keys.data_secret_iv).decryptor()
    padded = dec.update(raw) + dec.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError as exc:
        raise ExchangeError(
            Ret.POST_PARAMETERS, "undecryptable_data", "bad padding: wrong DataSecret or IV?"
        ) from exc


def format_timestamp(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("naive datetime: pass a timezone-aware one")
    return at.astimezone(CST).strftime(TIMESTAMP_FORMAT)


def parse_timestamp(text: str) -> datetime:
    """yyyyMMddHHmmss in China Standard Time, or (as some senders do) epoch milliseconds."""
    if _EPOCH_MS.match(text):
        return datetime.fromtimestamp(int(text) / 1000, UTC)
    if len(text) != 14 or not text.isdigit():
        raise ExchangeError(
            Ret.POST_PARAMETERS, "bad_timestamp", f"TimeStamp {text[:20]!r} is not yyyyMMddHHmmss"
        )
    try:  # by hand: strptime costs more than the rest of a request's checks
        return datetime(
            int(text[0:4]),
            int(text[4:6]),
            int(text[6:8]),
            int(text[8:10]),
            int(text[10:12]),
            int(text[12:14]),
            tzinfo=CST,
        )
    except ValueError as exc:
        raise ExchangeError(
            Ret.POST_PARAMETERS, "bad_timestamp", f"TimeStamp {text!r} is not a date"
        ) from exc


def _json(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# ------------------------------------------------------------------------------ requests


@dataclass(frozen=True, slots=True)
class Envelope:
    """The five fields of a request, as strings."""

    operator_id: str
    data: str
    timestamp: str
    seq: str
    sig: str

    def as_json(self) -> dict[str, str]:
        return {
            "OperatorID": self.operator_id,
            "Data": self.data,
            "TimeStamp": self.timestamp,
            "Seq": self.seq,
            "Sig": self.sig,
        }


def seal_request(
    operator_id: str, payload: Mapping[str, Any], keys: KeySet, at: datetime, seq: int = 1
) -> Envelope:
    """A signed, encrypted request from ``operator_id`` carrying ``payload``."""
    data = encrypt_data(_json(payload), keys)
    ts = format_timestamp(at)
    s = f"{seq % 10_000:04d}"
    return Envelope(operator_id, data, ts, s, sign(keys.sig_secret, operator_id, data, ts, s))


def read_envelope(body: bytes) -> Envelope:
    """The request's shape: a JSON object of five strings. ExchangeError(4003) otherwise."""
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExchangeError(
            Ret.POST_PARAMETERS, "malformed_request", f"the body is not JSON: {exc}"[:200]
        ) from exc
    if not isinstance(obj, dict):
        raise ExchangeError(Ret.POST_PARAMETERS, "malformed_request", "the body is not an object")
    missing = [f for f in REQUEST_FIELDS if not isinstance(obj.get(f), str)]
    if missing:
        raise ExchangeError(
            Ret.POST_PARAMETERS,
            "malformed_request",
            f"missing or not a string: {', '.join(missing)}",
        )
    env = Envelope(*(obj[f] for f in REQUEST_FIELDS))
    if not _OPERATOR_ID.match(env.operator_id):
        raise ExchangeError(
            Ret.POST_PARAMETERS,
            "malformed_request",
            f"OperatorID {env.operator_id[:20]!r} is not 9 letters or digits",
        )
    if not _SEQ.match(env.seq):
        raise ExchangeError(
            Ret.POST_PARAMETERS, "malformed_request", f"Seq {env.seq[:10]!r} is not 4 digits"
        )
    if not _HEX32.match(env.sig):
        raise ExchangeError(Ret.SIGNATURE, "bad_signature", "Sig is not 32 hexadecimal digits")
    return env


def open_request(
    env: Envelope, keys: KeySet, now: datetime, tolerance: timedelta
) -> dict[str, Any]:
    """Verify, check freshness, decrypt and parse: the business payload of a request.

    Raises ExchangeError: 4001 bad_signature, 4003 stale_timestamp / bad_timestamp /
    undecryptable_data, 4004 malformed_data (not a JSON object)."""
    expected = sign(keys.sig_secret, env.operator_id, env.data, env.timestamp, env.seq)
    if not hmac.compare_digest(expected, env.sig.upper()):
        raise ExchangeError(Ret.SIGNATURE, "bad_signature", "Sig does not match the SigSecret")
    sent = parse_timestamp(env.timestamp)
    skew = sent - now
    if abs(skew) > tolerance:
        raise ExchangeError(
            Ret.POST_PARAMETERS,
            "stale_timestamp",
            f"TimeStamp {env.timestamp} is {skew.total_seconds():+.0f} s from our clock "
            f"(tolerance {tolerance.total_seconds():.0f} s)",
        )
    return parse_payload(decrypt_data(env.data, keys))


def parse_payload(plain: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(plain)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExchangeError(
            Ret.BUSINESS_PARAMETERS, "malformed_data", f"Data is not JSON: {exc}"[:200]
        ) from exc
    if not isinstance(obj, dict):
        raise ExchangeError(Ret.BUSINESS_PARAMETERS, "malformed_data", "Data is not an object")
    return obj


# ------------------------------------------------------------------------------ responses


def seal_response(
    ret: Ret, keys: KeySet | None, payload: Mapping[str, Any] | None = None, msg: str = ""
) -> dict[str, Any]:
    """A signed response. Without keys (an operator we cannot identify) Data and Sig are
    empty: there is nothing the caller could verify."""
    if keys is None:
        return {"Ret": int(ret), "Msg": msg or MESSAGES[ret], "Data": "", "Sig": ""}
    msg = msg or MESSAGES[ret]
    data = encrypt_data(_json(payload), keys) if payload is not None else ""
    return {
        "Ret": int(ret),
        "Msg": msg,
        "Data": data,
        "Sig": sign(keys.sig_secret, str(int(ret)), msg, data),
    }


@dataclass(frozen=True, slots=True)
class Response:
    ret: int
    msg: str
    payload: dict[str, Any] | None


def open_response(body: bytes, keys: KeySet) -> Response:
    """A peer's response: shape, signature (over Ret + Msg + Data), then Data.

    Raises ExchangeError (reasons malformed_response, bad_signature, undecryptable_data,
    malformed_data) for answers the client must treat as garbage."""
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExchangeError(Ret.SYSTEM, "malformed_response", "the answer is not JSON") from exc
    if not isinstance(obj, dict):
        raise ExchangeError(Ret.SYSTEM, "malformed_response", "the answer is not an object")
    ret, msg, data, sig = obj.get("Ret"), obj.get("Msg", ""), obj.get("Data", ""), obj.get("Sig")
    if isinstance(ret, str) and ret.lstrip("-").isdigit():
        ret = int(ret)  # some peers send Ret as a string
    if not isinstance(ret, int) or not isinstance(msg, str) or not isinstance(data, str):
        raise ExchangeError(Ret.SYSTEM, "malformed_response", "Ret, Msg or Data of a wrong type")
    if data or sig:
        expected = sign(keys.sig_secret, str(ret), msg, data)
        if not isinstance(sig, str) or not hmac.compare_digest(expected, sig.upper()):
            raise ExchangeError(Ret.SIGNATURE, "bad_signature", "the answer's Sig does not match")
    payload = parse_payload(decrypt_data(data, keys)) if data else None
    return Response(ret, msg, payload)


# ------------------------------------------------------------------------------ tokens


@dataclass(frozen=True, slots=True)
class Token:
    operator_id: str
    key_no: int
    expires_at: datetime


TOKEN_PREFIX = "t1"  # noqa: S105 - the format tag of our tokens, not a secret


def issue_token(
    token_key: bytes, operator_id: str, key_no: int, now: datetime, lifetime: timedelta
) -> tuple[str, Token]:
    """A bearer token for ``operator_id`` (its keys number ``key_no``) valid for ``lifetime``."""
    expires = int((now + lifetime).timestamp())
    body = f"{TOKEN_PREFIX}.{operator_id}.{key_no}.{expires}"
    mac = hmac.new(token_key, body.encode("ascii"), hashlib.sha256).digest()
    text = f"{body}.{base64.urlsafe_b64encode(mac).decode('ascii').rstrip('=')}"
    return text, Token(operator_id, key_no, datetime.fromtimestamp(expires, UTC))


def check_token(
    token_key: bytes, authorization: str | None, operator_id: str, key_no: int, now: datetime
) -> Token:
    """The token of an ``Authorization: Bearer`` header, checked against the request's
    operator and its current key number; ExchangeError(4002, token_*) otherwise."""
    if not authorization or not authorization.startswith("Bearer "):
        raise ExchangeError(Ret.TOKEN, "missing_token", "no Authorization: Bearer header")
    text = authorization.removeprefix("Bearer ").strip()
    parts = text.split(".")
    if len(parts) != 5 or parts[0] != TOKEN_PREFIX:
        raise ExchangeError(Ret.TOKEN, "bad_token", "not a token of this platform")
    body = ".".join(parts[:4])
    mac = hmac.new(token_key, body.encode("ascii", "replace"), hashlib.sha256).digest()
    if not hmac.compare_digest(base64.urlsafe_b64encode(mac).decode("ascii").rstrip("="), parts[4]):
        raise ExchangeError(Ret.TOKEN, "bad_token", "not a token of this platform")
    tok = Token(parts[1], int(parts[2]), datetime.fromtimestamp(int(parts[3]), UTC))
    if tok.operator_id != operator_id:
        raise ExchangeError(
            Ret.TOKEN, "foreign_token", f"the token was issued to {tok.operator_id}"
        )
    if tok.key_no != key_no:
        raise ExchangeError(Ret.TOKEN, "rotated_token", "issued before the operator's keys rotated")
    if tok.expires_at <= now:
        raise ExchangeError(Ret.TOKEN, "expired_token", f"expired at {tok.expires_at.isoformat()}")
    return tok
