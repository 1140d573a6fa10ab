"""Per-envelope signatures (qilu/signing.py) and the foreign_site check: pure, no servers."""

from __future__ import annotations

import pytest

from qilu import signing
from qilu.contract import Envelope, Reading
from qilu.errors import ConfigError
from qilu.signing import AgentEntry, Signer, agent_key, verify
from stream.validate import Validator

NOW = 1_763_900_000_000_000


def envelope(agent: str = "agent-a", device: str = "pile-a") -> bytes:
    env = Envelope(agent, "boot", 0, NOW)
    env.add(Reading(device, "power_kw", NOW, 7.0))
    return env.encode()


@pytest.fixture
def keys() -> tuple[signing.KeyPair, signing.KeyPair]:
    return signing.generate_key(), signing.generate_key()


def entry(
    pair: signing.KeyPair, *, revoked: int | None = None, key_revoked: int | None = None
) -> AgentEntry:
    return AgentEntry(
        "agent-a", {1: agent_key(pair.public, key_revoked)}, frozenset({"site-a"}), revoked
    )


def test_signed_envelope_verifies_and_any_change_breaks_it(keys: tuple) -> None:  # type: ignore[type-arg]
    a, _ = keys
    value = envelope()
    headers = Signer(1, a.private_b64).headers(value)
    assert [h for h, _ in headers] == [signing.HEADER_KEY_NO, signing.HEADER_SIGNATURE]
    assert verify(entry(a), headers, value) is None
    # one byte changed (another device) or the signature of other bytes: refused
    assert verify(entry(a), headers, envelope(device="pile-b")) == "bad_signature"
    assert verify(entry(a), headers, value[:-1] + bytes([value[-1] ^ 1])) == "bad_signature"


def test_each_failure_has_its_reason(keys: tuple) -> None:  # type: ignore[type-arg]
    a, b = keys
    value = envelope()
    good = Signer(1, a.private_b64).headers(value)
    forged = Signer(1, b.private_b64).headers(value)  # right number, someone else's key
    assert verify(entry(a), None, value) == "unsigned"
    assert verify(entry(a), [], value) == "unsigned"
    assert verify(entry(a), [(signing.HEADER_KEY_NO, b"1")], value) == "unsigned"
    assert verify(entry(a), [("qilu.kid", b"x"), ("qilu.sig", b"s" * 64)], value) == "unsigned"
    assert verify(None, good, value) == "unknown_agent"
    assert verify(entry(a), forged, value) == "bad_signature"
    assert verify(entry(a), Signer(2, a.private_b64).headers(value), value) == "unknown_key"


def test_revocation_honours_the_brokers_append_time_only(keys: tuple) -> None:  # type: ignore[type-arg]
    a, _ = keys
    value = envelope()
    headers = Signer(1, a.private_b64).headers(value)
    revoked_at = NOW
    # appended (LogAppendTime) before the revocation: still accepted when consumed later
    assert verify(entry(a, revoked=revoked_at), headers, value, appended_us=NOW - 1) is None
    assert verify(entry(a, revoked=revoked_at), headers, value, appended_us=NOW) == "revoked_agent"
    # no trustworthy append time: revoked is revoked
    assert verify(entry(a, revoked=revoked_at), headers, value) == "revoked_agent"
    # a retired key (rotation) behaves the same way
    assert verify(entry(a, key_revoked=NOW), headers, value, appended_us=NOW - 1) is None
    assert verify(entry(a, key_revoked=NOW), headers, value) == "revoked_key"


def test_bad_signing_keys_are_configuration_errors() -> None:
    with pytest.raises(ConfigError, match=r"auth\.signing_key.*base64"):
        Signer(1, "not base64 !")
    with pytest.raises(ConfigError, match="32 bytes"):
        Signer(1, "AAAA")
    with pytest.raises(ConfigError, match=r"auth\.key_no"):
        Signer(0, signing.generate_key().private_b64)


def test_public_key_matches_the_private_half() -> None:
    pair = signing.generate_key()
    assert signing.public_key_of(pair.private_b64) == pair.public
    assert len(pair.public) == signing.PUBLIC_KEY_BYTES


def test_foreign_site_readings_are_refused_one_by_one() -> None:
    devices = {"pile-a": (1, "charging_pile"), "pile-b": (2, "charging_pile")}
    v = Validator(devices, {"power_kw": 7}, site_of={"pile-a": "site-a", "pile-b": "site-b"})
    env = Envelope("agent-a", "boot", 0, NOW)
    env.add(Reading("pile-a", "power_kw", NOW, 7.0))
    env.add(Reading("pile-b", "power_kw", NOW, 8.0))
    rows, rejected = v.validate(env, NOW, frozenset({"site-a"}))
    assert rows.device_pk == [1]
    assert [(r.index, r.reason) for r in rejected] == [(1, "foreign_site")]
    # without an agent's site list (authentication off) there is no site check
    rows, rejected = v.validate(env, NOW)
    assert rows.device_pk == [1, 2]
    assert rejected == []
