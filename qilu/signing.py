"""Per-envelope agent authentication: Ed25519 signatures in Kafka headers. Pure, no I/O.

Shared by the edge agent (which signs) and the ingest consumer (which verifies); the design is
recorded in docs/adr/0010-agent-authentication.md.

Every record an agent produces carries two headers::

    qilu.kid   the agent's key number, ASCII digits ("1", "2", ... after rotations)
    qilu.sig   the 64-byte Ed25519 signature of the record value (the exact envelope bytes)

The agent id is inside the signed bytes (envelope key ``"a"``), so a signature binds the
batch to one agent. The server keeps only public keys: the registry can be read without
letting anyone sign. The consumer verifies against a snapshot of the agent registry
(:class:`AgentDirectory`) and returns a dead-letter reason when a record fails:

    unsigned         no (or a malformed) qilu.kid / qilu.sig header
    unknown_agent    no agent with the envelope's id was ever provisioned
    revoked_agent    the agent was revoked before the record was appended
    unknown_key      the agent has no key with that number
    revoked_key      that key was retired (rotation) before the record was appended
    bad_signature    the signature does not match the bytes (forged or altered)

Readings of devices whose site is not in the agent's site list are refused one by one with
the reading reason ``foreign_site`` (stream/validate.py).

"Before the record was appended" uses the broker's ``LogAppendTime`` when the topic records
it (``message.timestamp.type=LogAppendTime``, set by ``stream.topics.ensure_topics``): a batch
appended before a revocation stays acceptable when it is consumed later. A producer-set
timestamp is never trusted that way: on such topics a revocation applies to every record
consumed after it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from qilu.errors import ConfigError

HEADER_KEY_NO = "qilu.kid"
HEADER_SIGNATURE = "qilu.sig"
SIGNATURE_BYTES = 64
PUBLIC_KEY_BYTES = 32
LOG_APPEND_TIME = 1  # kafka's timestamp_type of a broker-assigned timestamp

REASONS = (
    "unsigned",
    "unknown_agent",
    "revoked_agent",
    "unknown_key",
    "revoked_key",
    "bad_signature",
)


# ------------------------------------------------------------------------------ keys


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A fresh signing key: the private half goes to the agent (shown once), the public half
    to the registry."""

    private_b64: str  # the 32-byte raw Ed25519 seed, standard base64
    public: bytes  # 32 raw bytes


def generate_key() -> KeyPair:
    key = SigningKey.generate()
    return KeyPair(base64.b64encode(bytes(key)).decode("ascii"), bytes(key.verify_key))


def load_private_key(private_b64: str, *, key: str = "auth.signing_key") -> SigningKey:
    """Base64 seed -> private key, or ConfigError naming the configuration key."""
    try:
        seed = base64.b64decode(private_b64.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(key, "not valid base64") from exc
    if len(seed) != 32:  # an Ed25519 seed is 32 bytes
        raise ConfigError(key, f"an Ed25519 key is 32 bytes, this one is {len(seed)}")
    return SigningKey(seed)


def public_key_of(private_b64: str) -> bytes:
    return bytes(load_private_key(private_b64).verify_key)


# ------------------------------------------------------------------------------ signing


class Signer:
    """Signs envelopes of one agent with one key; ``headers(value)`` for ``producer.send``."""

    __slots__ = ("_kid", "_sign", "key_no")

    def __init__(self, key_no: int, private_b64: str) -> None:
        if key_no < 1:
            raise ConfigError("auth.key_no", "must be 1 or more (the number provisioning printed)")
        self.key_no = key_no
        self._kid = str(key_no).encode("ascii")
        self._sign = load_private_key(private_b64).sign

    def headers(self, value: bytes) -> list[tuple[str, bytes]]:
        return [(HEADER_KEY_NO, self._kid), (HEADER_SIGNATURE, self._sign(value).signature)]


# ------------------------------------------------------------------------------ verifying


@dataclass(frozen=True, slots=True)
class AgentKey:
    public: VerifyKey
    revoked_at_us: int | None = None


@dataclass(frozen=True, slots=True)
class AgentEntry:
    """One agent as the consumer sees it: keys by number, sites, revocation time."""

    agent_id: str
    keys: Mapping[int, AgentKey]
    sites: frozenset[str]
    revoked_at_us: int | None = None


def agent_key(public: bytes, revoked_at_us: int | None = None) -> AgentKey:
    return AgentKey(VerifyKey(public), revoked_at_us)


@dataclass(frozen=True, slots=True)
class AgentDirectory:
    """A snapshot of the agent registry: agent id -> entry."""

    agents: Mapping[str, AgentEntry] = field(default_factory=dict)
    version: int = 0

    def get(self, agent_id: str) -> AgentEntry | None:
        return self.agents.get(agent_id)


def header_values(headers: Sequence[tuple[str, bytes | None]] | None) -> tuple[bytes, bytes]:
    """(key number, signature) header values; empty bytes where missing."""
    kid = sig = b""
    for name, value in headers or ():
        if name == HEADER_KEY_NO:
            kid = value or b""
        elif name == HEADER_SIGNATURE:
            sig = value or b""
    return kid, sig


def _revoked(revoked_at_us: int | None, appended_us: int | None) -> bool:
    """Revoked as far as this record goes: revoked at all, unless the broker appended the
    record (LogAppendTime) before the revocation."""
    if revoked_at_us is None:
        return False
    return appended_us is None or appended_us >= revoked_at_us


def verify(
    entry: AgentEntry | None,
    headers: Sequence[tuple[str, bytes | None]] | None,
    value: bytes,
    *,
    appended_us: int | None = None,
) -> str | None:
    """None if the record is authentic, else the dead-letter reason (see :data:`REASONS`).

    ``appended_us`` is the broker's LogAppendTime of the record in microseconds, or None
    when the topic keeps producer timestamps (not trustworthy for revocation).
    """
    kid, sig = header_values(headers)
    if not kid or len(sig) != SIGNATURE_BYTES or not kid.isdigit() or len(kid) > 9:
        return "unsigned"
    if entry is None:
        return "unknown_agent"
    if _revoked(entry.revoked_at_us, appended_us):
        return "revoked_agent"
    key = entry.keys.get(int(kid))
    if key is None:
        return "unknown_key"
    return _check_key(key, sig, value, appended_us)


def _check_key(key: AgentKey, sig: bytes, value: bytes, appended_us: int | None) -> str | None:
    if _revoked(key.revoked_at_us, appended_us):
        return "revoked_key"
    try:
        key.public.verify(value, sig)
    except BadSignatureError:
        return "bad_signature"
    return None
