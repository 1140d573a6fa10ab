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

The same key signs the agent's requests to the platform's API (``check-config --online``):
:func:`request_headers` and :func:`verify_request`. The signed message binds the method, the
path, the agent, the key number, a timestamp, a random nonce and the body's SHA-256; the
server accepts it within ``REQUEST_WINDOW_S`` of its clock and each nonce once
(:class:`NonceCache`), so a captured request cannot be replayed.

"Before the record was appended" uses the broker's ``LogAppendTime`` when the topic records
it (``message.timestamp.type=LogAppendTime``, set by ``stream.topics.ensure_topics``): a batch
appended before a revocation stays acceptable when it is consumed later. A producer-set
timestamp is never trusted that way: on such topics a revocation applies to every record
consumed after it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import threading
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

    def sign(self, message: bytes) -> bytes:
        """The 64-byte signature of ``message``."""
        return bytes(self._sign(message).signature)


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


# ------------------------------------------------------------------------------ agent requests

REQUEST_AGENT = "X-Qilu-Agent"
REQUEST_KEY_NO = "X-Qilu-Key"
REQUEST_TIME = "X-Qilu-Time"  # unix seconds, integer
REQUEST_NONCE = "X-Qilu-Nonce"  # 16-64 hex digits, fresh per request
REQUEST_SIGNATURE = "X-Qilu-Signature"  # base64 Ed25519 signature of request_message(...)
REQUEST_WINDOW_S = 60  # a request older or newer than this (server clock) is refused
REQUEST_REASONS = ("unsigned", "stale", "replayed", "unknown_key", "revoked_key", "bad_signature")


def request_message(
    method: str, path: str, agent_id: str, key_no: int, ts: int, nonce: str, body: bytes
) -> bytes:
    """The bytes an agent signs for one API request (body by its SHA-256)."""
    return "\n".join(
        (
            "qilu-agent-request-v1",
            method.upper(),
            path,
            agent_id,
            str(key_no),
            str(ts),
            nonce,
            hashlib.sha256(body).hexdigest(),
        )
    ).encode()


def request_headers(
    signer: Signer, agent_id: str, method: str, path: str, body: bytes, *, now_s: float
) -> dict[str, str]:
    """The headers that authenticate one request of ``agent_id`` (a fresh nonce each call)."""
    ts, nonce = int(now_s), secrets.token_hex(16)
    sig = signer.sign(request_message(method, path, agent_id, signer.key_no, ts, nonce, body))
    return {
        REQUEST_AGENT: agent_id,
        REQUEST_KEY_NO: str(signer.key_no),
        REQUEST_TIME: str(ts),
        REQUEST_NONCE: nonce,
        REQUEST_SIGNATURE: base64.b64encode(sig).decode("ascii"),
    }


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """The authentication headers of a request, parsed (see :func:`parse_request`)."""

    agent_id: str
    key_no: int
    ts: int
    nonce: str
    signature: bytes


def parse_request(headers: Mapping[str, str]) -> SignedRequest | None:
    """The request's authentication headers, or None when any is missing or malformed."""
    agent_id = headers.get(REQUEST_AGENT, "")
    kid, ts, nonce = (headers.get(h, "") for h in (REQUEST_KEY_NO, REQUEST_TIME, REQUEST_NONCE))
    if not agent_id or len(agent_id) > 128 or not kid.isdigit() or len(kid) > 9:
        return None
    if not ts.isdigit() or len(ts) > 12:
        return None
    if not 16 <= len(nonce) <= 64 or any(c not in "0123456789abcdef" for c in nonce):
        return None
    try:
        sig = base64.b64decode(headers.get(REQUEST_SIGNATURE, ""), validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(sig) != SIGNATURE_BYTES:
        return None
    return SignedRequest(agent_id, int(kid), int(ts), nonce, sig)


def verify_request(
    req: SignedRequest,
    key: AgentKey | None,
    method: str,
    path: str,
    body: bytes,
    *,
    now_s: float,
    window_s: float = REQUEST_WINDOW_S,
) -> str | None:
    """None when ``req`` is authentic and fresh for ``key`` (the agent's key of that number,
    None if it has none), else the reason (:data:`REQUEST_REASONS`; the nonce is the caller's
    :class:`NonceCache`). The agent's own revocation is the caller's to check."""
    if abs(now_s - req.ts) > window_s:
        return "stale"
    if key is None:
        return "unknown_key"
    if key.revoked_at_us is not None and key.revoked_at_us <= now_s * 1e6:
        return "revoked_key"
    message = request_message(method, path, req.agent_id, req.key_no, req.ts, req.nonce, body)
    try:
        key.public.verify(message, req.signature)
    except BadSignatureError:
        return "bad_signature"
    return None


class NonceCache:
    """Nonces seen within the validity window: a second use of one is a replay. Bounded by
    the window (older entries are forgotten; their timestamps are refused as stale anyway)
    and by ``max_entries`` (past it, new requests are refused until old ones expire)."""

    def __init__(self, window_s: float = REQUEST_WINDOW_S, max_entries: int = 100_000) -> None:
        self._window = window_s
        self._max = max_entries
        self._seen: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._pruned_at = 0.0

    def first_use(self, agent_id: str, nonce: str, *, now_s: float) -> bool:
        """Record the nonce; False if it was seen within the window (or the cache is full)."""
        with self._lock:
            if len(self._seen) >= self._max or now_s - self._pruned_at > self._window:
                self._pruned_at = now_s
                cutoff = now_s - 2 * self._window
                self._seen = {k: t for k, t in self._seen.items() if t >= cutoff}
                if len(self._seen) >= self._max:
                    return False
            key = (agent_id, nonce)
            if key in self._seen:
                return False
            self._seen[key] = now_s
            return True
