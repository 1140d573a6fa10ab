"""Operator secrets at rest: AES-256-GCM under the platform's ``tcec102.secret_key``. No I/O.

The database holds one sealed blob per operator (both directions' key sets and the signing key
of its platform-side agent), bound to the operator's id (associated data), so a blob copied to
another operator's row does not open. Bearer tokens are keyed by a key derived from the same
setting (HMAC-SHA256 with a label), never by the setting itself.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import string
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from interconnect.tcec102.exchange import KEY_CHARS, KeySet
from qilu.errors import ConfigError, QiluError
from qilu.settings import DEV_TCEC102_SECRET_KEY, Environment, Settings

_NONCE = 12
_ALPHABET = string.ascii_letters + string.digits


class SecretsError(QiluError):
    """A stored secret does not open: the row was altered or the secret key changed."""


def random_secret(n: int = KEY_CHARS) -> str:
    """``n`` random letters and digits (the standard's secrets are printable characters)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(n))


def random_keyset() -> KeySet:
    return KeySet(random_secret(), random_secret(), random_secret(), random_secret())


@dataclass(frozen=True, slots=True)
class OperatorSecrets:
    """What the platform holds for one operator link, in plain text only in memory."""

    inbound: KeySet  # the operator calls us: we verify and answer with these
    outbound: KeySet | None  # we call the operator (None: not configured, no pulls)
    signing_key: str  # base64 Ed25519 seed of the operator's platform-side agent

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "inbound": self.inbound.as_dict(),
                "outbound": None if self.outbound is None else self.outbound.as_dict(),
                "signing_key": self.signing_key,
            }
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> OperatorSecrets:
        obj: dict[str, Any] = json.loads(raw)
        return cls(
            keyset(obj["inbound"]),
            None if obj["outbound"] is None else keyset(obj["outbound"]),
            obj["signing_key"],
        )


def keyset(obj: dict[str, Any]) -> KeySet:
    """A key set from the standard's field names; ConfigError naming a missing field."""
    names = ("OperatorSecret", "DataSecret", "DataSecretIV", "SigSecret")
    missing = [n for n in names if not isinstance(obj.get(n), str)]
    if missing:
        raise ConfigError(missing[0], "missing from the key set (a string)")
    return KeySet(*(obj[n] for n in names))


class SecretBox:
    """Seals and opens operator secrets; also derives the token key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ConfigError("tcec102.secret_key", "must be base64 of exactly 32 bytes")
        self._aead = AESGCM(key)
        self.token_key = hmac.new(key, b"qilu tcec102 tokens", hashlib.sha256).digest()

    def seal(self, operator_id: str, value: OperatorSecrets) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, value.to_json(), operator_id.encode())

    def open(self, operator_id: str, blob: bytes) -> OperatorSecrets:
        try:
            plain = self._aead.decrypt(blob[:_NONCE], blob[_NONCE:], operator_id.encode())
        except InvalidTag as exc:
            raise SecretsError(
                f"operator {operator_id}: stored secrets do not open (altered row, or "
                "tcec102.secret_key changed since they were stored)"
            ) from exc
        return OperatorSecrets.from_json(plain)


def box(settings: Settings) -> SecretBox:
    """The box of these settings; refuses the development key outside development."""
    value = settings.tcec102.secret_key.get_secret_value()
    if settings.env is not Environment.DEVELOPMENT and value == DEV_TCEC102_SECRET_KEY:
        raise ConfigError(
            "tcec102.secret_key",
            "the development default is refused outside development; set "
            "QILU_TCEC102__SECRET_KEY (base64 of 32 random bytes)",
        )
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError("tcec102.secret_key", "not valid base64") from exc
    return SecretBox(raw)
