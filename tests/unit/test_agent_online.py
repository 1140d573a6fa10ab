"""The agent's signed requests and the judging of the platform's device check, without I/O."""

from __future__ import annotations

from edge_agent import config, online
from edge_agent.runtime import build_collectors

from qilu import signing

PATH = "/v1/agent/devices/check"


def signed(key: signing.KeyPair, body: bytes, at: float) -> signing.SignedRequest:
    headers = signing.request_headers(
        signing.Signer(2, key.private_b64), "gw", "POST", PATH, body, now_s=at
    )
    req = signing.parse_request(headers)
    assert req is not None
    return req


def test_a_signed_request_verifies_only_unchanged_fresh_and_with_a_live_key() -> None:
    key = signing.generate_key()
    live = signing.agent_key(key.public)
    body = b'{"device_ids": ["D1"]}'
    req = signed(key, body, 1_000.0)
    assert (req.agent_id, req.key_no) == ("gw", 2)
    assert signing.verify_request(req, live, "POST", PATH, body, now_s=1_030.0) is None
    assert signing.verify_request(req, live, "POST", PATH, body, now_s=1_061.0) == "stale"
    assert signing.verify_request(req, live, "POST", PATH, b"{}", now_s=1_000.0) == "bad_signature"
    assert signing.verify_request(req, live, "GET", PATH, body, now_s=1_000.0) == "bad_signature"
    assert signing.verify_request(req, None, "POST", PATH, body, now_s=1_000.0) == "unknown_key"
    retired = signing.agent_key(key.public, revoked_at_us=999_000_000)
    assert signing.verify_request(req, retired, "POST", PATH, body, now_s=1_000.0) == (
        "revoked_key"
    )
    other = signing.agent_key(signing.generate_key().public)
    assert signing.verify_request(req, other, "POST", PATH, body, now_s=1_000.0) == (
        "bad_signature"
    )


def test_malformed_headers_are_unsigned_and_a_nonce_counts_once() -> None:
    key = signing.generate_key()
    headers = signing.request_headers(
        signing.Signer(1, key.private_b64), "gw", "POST", PATH, b"", now_s=5.0
    )
    assert signing.parse_request({}) is None
    assert signing.parse_request({**headers, signing.REQUEST_NONCE: "short"}) is None
    assert signing.parse_request({**headers, signing.REQUEST_SIGNATURE: "!!"}) is None
    assert signing.parse_request({**headers, signing.REQUEST_TIME: "-5"}) is None
    cache = signing.NonceCache(window_s=60)
    nonce = headers[signing.REQUEST_NONCE]
    assert cache.first_use("gw", nonce, now_s=5.0)
    assert not cache.first_use("gw", nonce, now_s=30.0)
    assert cache.first_use("other", nonce, now_s=30.0)  # per agent


def test_device_ids_come_from_every_collector_table_and_are_judged() -> None:
    cfg = config.parse(
        {
            "agent": {"id": "gw"},
            "auth": {"unsigned": True},
            "collectors": {
                "piles": {"type": "ocpp", "port": 0, "devices": {"CP1/1": "C1", "CP2/1": "C2"}},
                "lora": {
                    "type": "mqtt",
                    "devices": {"0004a30b001c0530": {"device_id": "R1", "kind": "collar"}},
                },
                "rtu": {
                    "type": "modbus",
                    "host": "192.0.2.1",
                    "points": [
                        {"device_id": "S1", "metric": "oil_temp_c", "address": 0,
                         "type": "int16", "unit": "degC"},
                    ],
                },
            },
        },
        environ={},
    )  # fmt: skip
    devices = online.configured_devices(cfg, build_collectors(cfg))
    assert devices == {"piles": ["C1", "C2"], "lora": ["R1"], "rtu": ["S1"]}
    row = {"known": True, "own_site": True, "own_sector": True}
    answer = {
        "sectors": ["charging"],
        "devices": [
            {"device_id": "C1", "site_id": "CHG-1", "sector": "charging", **row},
            {"device_id": "C2", "site_id": "CHG-9", "sector": "charging", **row,
             "own_site": False},
            {"device_id": "R1", "known": False, "site_id": None, "sector": None,
             "own_site": False, "own_sector": False},
            {"device_id": "S1", "site_id": "SUB-1", "sector": "substation", **row,
             "own_site": False, "own_sector": False},
        ],
    }  # fmt: skip
    problems = online.judge("gw", devices, answer)
    assert [(p.key, p.device_id, p.kind) for p in problems] == [
        ("collectors.piles", "C2", "foreign_site"),
        ("collectors.lora", "R1", "unknown"),
        ("collectors.rtu", "S1", "foreign_sector"),
    ]
    assert "not provisioned for (its sectors: charging)" in problems[2].message
