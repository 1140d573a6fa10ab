"""Authenticated agents against a broker of our own with the SASL/SCRAM listener and ACLs.

A rogue agent tries everything it can with valid credentials of its own (another agent's
topic, another agent's devices, another agent's identity, a forged or missing signature, a
wrong password, carrying on after its revocation) and injects nothing; provisioning, rotation,
revocation and their audit rows; the bulk provisioning of a simulated province.

The broker is private (own state folder and free ports, the shared installation's jars), so
its SASL configuration never touches the shared broker.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import tomllib
import uuid
import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from qilu import signing
from qilu.contract import Envelope, Reading, Sector
from qilu.devices import KINDS
from qilu.registry import Registry
from qilu.settings import DatabaseSettings, Settings
from storage import agents as store
from storage import audit
from storage.db import connect
from stream import provisioning
from stream.cli import build_consumer
from stream.topics import readings_topic
from tests.helpers import dead_letters as read_dead_letters
from tests.helpers import scalar, wait_for
from tests.integration.faults import loaded_registry, on_private_broker

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaProducer
    from kafka.errors import TopicAuthorizationFailedError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
SCALE = 0.002


@pytest.fixture
def asettings(
    base_settings: Settings, db: DatabaseSettings, sasl_kafka: tuple[str, str]
) -> Settings:
    ingest = base_settings.ingest.model_copy(
        update={"group_id": f"g{uuid.uuid4().hex[:10]}", "agents_refresh_s": 0.5}
    )
    return on_private_broker(base_settings, db, sasl_kafka).model_copy(update={"ingest": ingest})


@pytest.fixture
def registry(asettings: Settings) -> Registry:
    return loaded_registry(asettings.db, SCALE)


def first_site(reg: Registry, sector: Sector) -> tuple[str, str]:
    """(site id, one of its device ids)."""
    site = next(s for s in reg.sites if s.sector is sector)
    dev = next(d for d in reg.devices if d.site_id == site.site_id)
    return site.site_id, dev.device_id


def envelope(reg: Registry, agent: str, device: str, seq: int, now_us: int) -> bytes:
    kind = next(d.kind for d in reg.devices if d.device_id == device)
    metric = KINDS[kind].metrics[0]
    env = Envelope(agent, "boot-1", seq, now_us)
    env.add(Reading(device, metric.key, now_us, float(metric.low)))
    return env.encode()


def sasl_producer(bootstrap: str, user: str, password: str) -> Any:
    return KafkaProducer(
        bootstrap_servers=bootstrap,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username=user,
        sasl_plain_password=password,
        acks="all",
        max_block_ms=5000,
        request_timeout_ms=5000,
        bootstrap_timeout_ms=5000,
    )


_CONNECT = """
import sys, warnings
warnings.simplefilter("ignore")
from kafka import KafkaProducer
from kafka.errors import KafkaError
try:
    KafkaProducer(bootstrap_servers=sys.argv[1], security_protocol="SASL_PLAINTEXT",
                  sasl_mechanism="SCRAM-SHA-512", sasl_plain_username=sys.argv[2],
                  sasl_plain_password=sys.argv[3], bootstrap_timeout_ms=5000).close()
except KafkaError as exc:
    print(type(exc).__name__)
    sys.exit(3)
"""


def refused(bootstrap: str, user: str, password: str) -> None:
    """The agents' listener refuses these credentials. Tried in a child process: kafka-python
    leaves the sockets of a failed bootstrap open (ResourceWarnings at exit)."""
    r = subprocess.run(
        [sys.executable, "-c", _CONNECT, bootstrap, user, password],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr[-500:])


def dead_letters(settings: Settings, n: int) -> list[dict[str, str]]:
    return [headers for _, headers in read_dead_letters(settings, n, timeout_ms=20_000)]


@pytest.fixture
def ingest(asettings: Settings) -> Iterator[None]:
    stop = threading.Event()
    consumer, pool = build_consumer(asettings, stop)
    t = threading.Thread(target=consumer.run, name="ingest", daemon=True)
    t.start()
    yield
    stop.set()
    t.join(timeout=30)
    pool.close()


def run_agent_from_config(toml_text: str, buffer: Path, sites: list[str], seconds: float) -> int:
    """The real edge agent, configured by provisioning's TOML plus a simulated collector."""
    from edge_agent import config, runtime

    table = tomllib.loads(toml_text)
    table["buffer"] = {"path": str(buffer), "fsync": "os"}
    table["agent"]["metrics_port"] = 0
    table["simulation"] = {"seed": 1, "scale": SCALE}
    table["collectors"] = {
        "sim": {"type": "simulated", "sites": sites, "silence": "none", "tick_s": 0.2}
    }
    agent = runtime.build_agent(config.parse(table, environ={}))

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        await agent.run(stop)

    try:
        asyncio.run(main())
    finally:
        agent.close_producer()
    return agent.sent_readings


def test_rogue_agent_injects_nothing(
    asettings: Settings, registry: Registry, ingest: None, tmp_path: Path
) -> None:
    reg, s = registry, asettings
    site_a, dev_a = first_site(reg, Sector.CHARGING)
    site_b, dev_b = first_site(reg, Sector.SUBSTATION)
    _, creds_a = provisioning.provision(s, "agent-a", sites=[site_a], actor="test")
    _, creds_b = provisioning.provision(s, "agent-b", sites=[site_b], actor="test")
    assert creds_a.kafka_password
    assert creds_b.kafka_password

    # the genuine agent A, as provisioning configured it (SASL/SCRAM, signed envelopes)
    sent = run_agent_from_config(
        provisioning.agent_toml(s, creds_a), tmp_path / "a.db", [site_a], seconds=4.0
    )
    assert sent > 0
    wait_for(
        lambda: scalar(s.db, "SELECT count(*) FROM readings") == sent,
        timeout=180,
        what="agent A's readings",
    )
    genuine = scalar(s.db, "SELECT count(*) FROM readings")

    charging = readings_topic(s.kafka, Sector.CHARGING)
    substation = readings_topic(s.kafka, Sector.SUBSTATION)
    signer_a = signing.Signer(1, creds_a.signing_key)
    now = 1_000_000 * int(time.time())
    rogue = sasl_producer(s.kafka.agent_bootstrap, "agent-a", creds_a.kafka_password)
    try:
        # 1. B's topic: refused by the broker's ACL
        value = envelope(reg, "agent-a", dev_a, 100, now)
        with pytest.raises(TopicAuthorizationFailedError):
            rogue.send(substation, key=b"agent-a", value=value).get(timeout=15)
        # 2. B's devices, signed by A: dead-lettered as foreign_site
        value = envelope(reg, "agent-a", dev_b, 101, now)
        rogue.send(charging, key=b"agent-a", value=value, headers=signer_a.headers(value))
        # 3. a forged signature (A's key number, someone else's key)
        value = envelope(reg, "agent-a", dev_a, 102, now)
        forged = signing.Signer(1, signing.generate_key().private_b64).headers(value)
        rogue.send(charging, key=b"agent-a", value=value, headers=forged)
        # 4. unsigned
        value = envelope(reg, "agent-a", dev_a, 103, now)
        rogue.send(charging, key=b"agent-a", value=value)
        # 5. B's identity, signed with A's key
        value = envelope(reg, "agent-b", dev_b, 104, now)
        rogue.send(charging, key=b"agent-b", value=value, headers=signer_a.headers(value))
        rogue.flush(timeout=15)
    finally:
        rogue.close()

    # 6. a wrong password does not even connect
    refused(s.kafka.agent_bootstrap, "agent-b", "not-the-password")

    letters = dead_letters(s, 4)
    reasons = sorted(h["qilu.reason"] for h in letters)
    assert reasons == ["bad_signature", "bad_signature", "rejected_readings", "unsigned"]
    foreign = next(h for h in letters if h["qilu.reason"] == "rejected_readings")
    assert [r["reason"] for r in json.loads(foreign["qilu.rejected"])] == ["foreign_site"]

    # 7. A revoked mid-run: its user is gone, and a signed batch that still reaches Kafka
    # (a connection opened before, a copied key) is refused from then on
    provisioning.revoke(s, "agent-a", actor="test")
    refused(s.kafka.agent_bootstrap, "agent-a", creds_a.kafka_password)
    time.sleep(s.ingest.agents_refresh_s * 3)
    internal = KafkaProducer(bootstrap_servers=s.kafka.bootstrap, acks="all")
    value = envelope(reg, "agent-a", dev_a, 105, now)
    internal.send(charging, key=b"agent-a", value=value, headers=signer_a.headers(value))
    internal.flush(timeout=15)
    internal.close()
    letters = dead_letters(s, 5)  # partitions are read in any order
    assert sorted(h["qilu.reason"] for h in letters) == sorted([*reasons, "revoked_agent"])

    # nothing of the rogue reached the readings; the genuine readings are all there once
    assert scalar(s.db, "SELECT count(*) FROM readings") == genuine
    with connect(s.db) as conn:
        sites = conn.execute(
            "SELECT DISTINCT d.site_id FROM readings r JOIN devices d USING (device_pk)"
        ).fetchall()
    assert sites == [(site_a,)]


def test_provision_rotate_revoke_with_audit_rows(
    asettings: Settings, registry: Registry, tmp_path: Path
) -> None:
    s, reg = asettings, registry
    city = next(x.city_code for x in reg.sites if x.sector is Sector.CHARGING)
    want = sorted(
        x.site_id for x in reg.sites if x.sector is Sector.CHARGING and x.city_code == city
    )
    env = {
        **os.environ,
        "QILU_DB__NAME": s.db.name,
        "QILU_KAFKA__BOOTSTRAP": s.kafka.bootstrap,
        "QILU_KAFKA__AGENT_BOOTSTRAP": s.kafka.agent_bootstrap,
        "QILU_KAFKA__TOPIC_PREFIX": s.kafka.topic_prefix,
    }
    cli = [sys.executable, "-m", "ops.cli", "--log-level", "WARNING", "agents"]
    out = subprocess.run(
        [*cli, "provision", "gw-1", "--city", city, "--sector", "charging"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    cfg = tomllib.loads(out.stdout)
    assert cfg["agent"]["id"] == "gw-1"
    assert cfg["kafka"]["security_protocol"] == "SASL_PLAINTEXT"
    assert cfg["kafka"]["bootstrap"] == s.kafka.agent_bootstrap
    assert cfg["auth"]["key_no"] == 1
    # the secrets are not stored: only the public half of the key, and no password at all
    with connect(s.db) as conn:
        row = store.get(conn, "gw-1")
        assert row is not None
        assert list(row.sites) == want
        stored = conn.execute(
            "SELECT public_key FROM agent_keys WHERE agent_id = 'gw-1'"
        ).fetchone()
        assert stored is not None
        assert bytes(stored[0]) == signing.public_key_of(cfg["auth"]["signing_key"])
        dump = json.dumps([str(r) for r in conn.execute("SELECT * FROM agents").fetchall()])
        assert cfg["kafka"]["sasl_password"] not in dump
    # the password works on the agents' listener
    sasl_producer(s.kafka.agent_bootstrap, "gw-1", cfg["kafka"]["sasl_password"]).close()

    again = subprocess.run(
        [*cli, "provision", "gw-1", "--sites", want[0]],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert again.returncode == 1
    assert "exists already" in again.stderr

    row, creds = provisioning.rotate(s, "gw-1", actor="test", grace=timedelta(0))
    assert creds.key_no == 2
    assert row.active_key == 2
    refused(s.kafka.agent_bootstrap, "gw-1", cfg["kafka"]["sasl_password"])  # the old one
    assert creds.kafka_password is not None
    sasl_producer(s.kafka.agent_bootstrap, "gw-1", creds.kafka_password).close()

    provisioning.revoke(s, "gw-1", actor="test")
    with pytest.raises(store.AgentError, match="revoked"):
        provisioning.rotate(s, "gw-1", actor="test", grace=timedelta(0))

    with connect(s.db) as conn:
        trail = audit.query(conn, entity="agent", entity_id="gw-1")
        snap = store.load_snapshot(conn)
    assert [e.action for e in trail] == ["agent.provision", "agent.rotate", "agent.revoke"]
    assert trail[0].actor.startswith("cli:")
    assert trail[0].before is None
    assert trail[1].before is not None
    assert trail[1].after is not None
    assert [k["key_no"] for k in trail[1].after["keys"]] == [1, 2]
    assert trail[2].before is not None
    assert trail[2].before["revoked_at"] is None
    assert trail[2].after is not None
    assert trail[2].after["revoked_at"] is not None
    for e in trail:  # never a secret in the audit log
        text = json.dumps([e.before, e.after])
        assert creds.signing_key not in text
        assert creds.kafka_password not in text
    revoked, keys, sites = snap.agents["gw-1"]
    assert revoked is not None
    assert sorted(keys) == [1, 2]
    assert sorted(sites) == want


def test_province_agents_are_provisioned_in_bulk(asettings: Settings, registry: Registry) -> None:
    from edge_agent.province import plan_agents

    plan = plan_agents(registry)
    signers = provisioning.provision_province(asettings, plan, actor="test")
    assert sorted(signers) == sorted(plan)
    assert {x.key_no for x in signers.values()} == {1}
    again = provisioning.provision_province(asettings, plan, actor="test")
    assert {x.key_no for x in again.values()} == {2}
    with connect(asettings.db) as conn:
        snap = store.load_snapshot(conn)
        n_audit = conn.execute(
            "SELECT count(*) FROM audit_log WHERE action = 'agent.provision_simulated'"
        ).fetchone()
    assert n_audit is not None
    assert n_audit[0] == 2 * len(plan)
    for agent_id, sites in plan.items():
        _, keys, have = snap.agents[agent_id]
        assert have == set(sites)
        assert keys[1][1] is not None
        assert keys[2][1] is None


def test_admin_api_provisions_rotates_and_revokes(asettings: Settings, registry: Registry) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.cli import create_key

    site, _ = first_site(registry, Sector.RANCH)
    _, admin = create_key(asettings, name="admin", scopes=["admin"])
    _, reader = create_key(asettings, name="reader", scopes=["coverage:read"])
    with TestClient(create_app(asettings)) as c:
        auth = {"Authorization": f"Bearer {admin}"}
        body = {"agent_id": "api-gw", "sites": [site]}
        denied = c.post(
            "/v1/admin/agents", json=body, headers={"Authorization": f"Bearer {reader}"}
        )
        assert denied.status_code == 403
        r = c.post("/v1/admin/agents", json=body, headers=auth)
        assert r.status_code == 201, r.text
        made = r.json()
        assert made["agent"]["sites"] == [site]
        assert made["key_no"] == 1
        assert tomllib.loads(made["config_toml"])["auth"]["signing_key"] == made["signing_key"]
        assert c.post("/v1/admin/agents", json=body, headers=auth).status_code == 409
        listed = c.get("/v1/admin/agents", headers=auth).json()
        assert [a["agent_id"] for a in listed] == ["api-gw"]
        assert "signing_key" not in json.dumps(listed)  # never a secret after provisioning
        r = c.post("/v1/admin/agents/api-gw/rotate", json={"grace_s": 0}, headers=auth)
        assert r.status_code == 200, r.text
        assert r.json()["key_no"] == 2
        assert c.post("/v1/admin/agents/api-gw/revoke", headers=auth).status_code == 200
        assert c.post("/v1/admin/agents/api-gw/revoke", headers=auth).status_code == 409
        assert c.get("/v1/admin/agents/nobody", headers=auth).status_code == 404
        assert c.get("/v1/admin/agents", headers=auth).json() == []
    with connect(asettings.db) as conn:
        trail = audit.query(conn, entity="agent", entity_id="api-gw")
    assert [e.action for e in trail] == ["agent.provision", "agent.rotate", "agent.revoke"]
    assert all(e.actor.startswith("api:key:") for e in trail)


def sites_with_devices(reg: Registry, sector: Sector, n: int) -> list[tuple[str, str]]:
    """(site id, one of its device ids) of ``n`` sites of the sector."""
    first_device: dict[str, str] = {}
    for d in reg.devices:
        first_device.setdefault(d.site_id, d.device_id)
    out = [(s.site_id, first_device[s.site_id]) for s in reg.sites if s.sector is sector]
    return [x for x in out if x[1]][:n]


def cli_env(s: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "QILU_DB__NAME": s.db.name,
        "QILU_KAFKA__BOOTSTRAP": s.kafka.bootstrap,
        "QILU_KAFKA__AGENT_BOOTSTRAP": s.kafka.agent_bootstrap,
        "QILU_KAFKA__TOPIC_PREFIX": s.kafka.topic_prefix,
    }


QILU_AGENTS = [sys.executable, "-m", "ops.cli", "--log-level", "WARNING", "agents"]


def test_changed_rights_reach_the_broker_acls_and_the_ingest(
    asettings: Settings, registry: Registry, ingest: None
) -> None:
    """Issue 12 item 3: an agent gains a site of another sector and loses sites; the broker's
    ACLs and the ingest's site check follow, and every change is in the audit log."""
    s, reg = asettings, registry
    (c1, c1_dev), (c2, c2_dev) = sites_with_devices(reg, Sector.CHARGING, 2)
    (s1, s1_dev), *_ = sites_with_devices(reg, Sector.SUBSTATION, 1)
    charging = readings_topic(s.kafka, Sector.CHARGING)
    substation = readings_topic(s.kafka, Sector.SUBSTATION)
    _, creds = provisioning.provision(s, "gw-r", sites=[c1, c2], actor="test")
    assert creds.kafka_password is not None
    signer = signing.Signer(1, creds.signing_key)
    now = 1_000_000 * int(time.time())

    def send(topic: str, device: str, seq: int) -> None:
        value = envelope(reg, "gw-r", device, seq, now)
        producer = sasl_producer(s.kafka.agent_bootstrap, "gw-r", str(creds.kafka_password))
        try:
            producer.send(topic, key=b"gw-r", value=value, headers=signer.headers(value)).get(
                timeout=15
            )
        finally:
            producer.close()

    with pytest.raises(TopicAuthorizationFailedError):  # no substation site yet
        send(substation, s1_dev, 1)

    # the command line: a substation site in, one charging site out
    out = subprocess.run(
        [*QILU_AGENTS, "update", "gw-r", "--add-site", s1, "--remove-site", c2],
        env=cli_env(s),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "2 sites (+1 -1)" in out.stdout
    time.sleep(s.ingest.agents_refresh_s * 3)  # the ingest's next registry check
    send(substation, s1_dev, 2)  # the broker lets it write the new sector's topic now
    send(charging, c1_dev, 3)  # still its site
    send(charging, c2_dev, 4)  # the topic still, but no longer its site
    wait_for(
        lambda: scalar(s.db, "SELECT count(*) FROM readings") == 2,
        timeout=120,
        what="the readings of its sites",
    )
    letters = dead_letters(s, 1)
    assert [h["qilu.reason"] for h in letters] == ["rejected_readings"]
    assert [r["reason"] for r in json.loads(letters[0]["qilu.rejected"])] == ["foreign_site"]

    # a whole sector out: the charging topic's ACL goes, and the ingest refuses its sites
    before, after = provisioning.update_sites(s, "gw-r", remove_sectors=["charging"], actor="test")
    assert (list(before.sites), list(after.sites)) == ([c1, s1], [s1])
    with pytest.raises(TopicAuthorizationFailedError):
        send(charging, c1_dev, 5)
    time.sleep(s.ingest.agents_refresh_s * 3)
    internal = KafkaProducer(bootstrap_servers=s.kafka.bootstrap, acks="all")
    value = envelope(reg, "gw-r", c1_dev, 6, now)  # a copied key on another path
    internal.send(charging, key=b"gw-r", value=value, headers=signer.headers(value))
    internal.flush(timeout=15)
    internal.close()
    assert len(dead_letters(s, 2)) == 2
    assert scalar(s.db, "SELECT count(*) FROM readings") == 2

    # refused changes name the problem and change nothing
    with pytest.raises(store.AgentError, match="does not report for"):
        provisioning.update_sites(s, "gw-r", remove_sites=[c2], actor="test")
    with pytest.raises(store.AgentError, match="no site left"):
        provisioning.update_sites(s, "gw-r", remove_sites=[s1], actor="test")
    with pytest.raises(store.AgentError, match="unknown site ids"):
        provisioning.update_sites(s, "gw-r", add_sites=["NO-SUCH-SITE"], actor="test")
    with connect(s.db) as conn:
        trail = audit.query(conn, entity="agent", entity_id="gw-r")
    assert [e.action for e in trail] == ["agent.provision", "agent.sites", "agent.sites"]
    assert trail[1].actor.startswith("cli:")
    assert [(e.before or {})["sites"] for e in trail[1:]] == [[c1, c2], [c1, s1]]
    assert [(e.after or {})["sites"] for e in trail[1:]] == [[c1, s1], [s1]]


def test_admin_api_changes_an_agents_sites(asettings: Settings, registry: Registry) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.cli import create_key

    (r1, _), *_ = sites_with_devices(registry, Sector.RANCH, 1)
    city = next(x.city_code for x in registry.sites if x.site_id == r1)
    in_city = sorted(
        x.site_id for x in registry.sites if x.sector is Sector.CHARGING and x.city_code == city
    )
    _, admin = create_key(asettings, name="admin", scopes=["admin"])
    with TestClient(create_app(asettings)) as c:
        auth = {"Authorization": f"Bearer {admin}"}
        assert c.post(
            "/v1/admin/agents", json={"agent_id": "api-r", "sites": [r1]}, headers=auth
        ).is_success
        r = c.patch(
            "/v1/admin/agents/api-r",
            json={"add_sectors": ["charging"], "cities": [city]},
            headers=auth,
        )
        assert r.status_code == 200, r.text
        assert r.json()["sites"] == sorted([r1, *in_city])
        r = c.patch("/v1/admin/agents/api-r", json={"remove_sectors": ["ranch"]}, headers=auth)
        assert r.status_code == 200, r.text
        assert r.json()["sites"] == in_city
        refused = c.patch("/v1/admin/agents/api-r", json={"remove_sites": [r1]}, headers=auth)
        assert refused.status_code == 409
        assert "does not report for" in refused.json()["detail"]
        refused = c.patch("/v1/admin/agents/api-r", json={"cities": [city]}, headers=auth)
        assert refused.status_code == 409
        assert "name a sector" in refused.json()["detail"]
        assert (
            c.patch("/v1/admin/agents/nobody", json={"add_sites": [r1]}, headers=auth).status_code
            == 404
        )
    with connect(asettings.db) as conn:
        trail = audit.query(conn, entity="agent", entity_id="api-r")
    assert [e.action for e in trail] == ["agent.provision", "agent.sites", "agent.sites"]
    assert all(e.actor.startswith("api:key:") for e in trail)


def test_agents_on_one_host_get_distinct_metrics_ports_and_prometheus_finds_them(
    asettings: Settings, registry: Registry, tmp_path: Path
) -> None:
    """Issue 12 item 4: provisioning writes a metrics port no other active agent on that host
    holds (never the province's default), and the file_sd targets list every agent."""
    from edge_agent import config
    from edge_agent.province import plan_agents

    kafka = asettings.kafka.model_copy(update={"manage_agent_credentials": False})
    s = asettings.model_copy(update={"kafka": kafka})
    site, _ = first_site(registry, Sector.CHARGING)
    default = s.agent.metrics_port
    a, ca = provisioning.provision(s, "gw-h1", sites=[site], actor="test", metrics_host="10.0.0.7")
    b, cb = provisioning.provision(s, "gw-h2", sites=[site], actor="test", metrics_host="10.0.0.7")
    c, _ = provisioning.provision(s, "gw-x1", sites=[site], actor="test", metrics_host="10.0.0.8")
    assert (a.metrics_port, b.metrics_port, c.metrics_port) == (
        default + 1,
        default + 2,
        default + 1,
    )
    for creds, port in ((ca, default + 1), (cb, default + 2)):  # written into its configuration
        table = tomllib.loads(provisioning.agent_toml(s, creds))
        table["collectors"] = {"sim": {"type": "simulated", "sites": [site]}}
        cfg = config.parse(table, environ={})
        # Prometheus scrapes 10.0.0.7 (file_sd below); the gateway binds every interface
        assert (cfg.agent.metrics_host, cfg.agent.metrics_port) == ("0.0.0.0", port)  # noqa: S104
    with pytest.raises(store.AgentError, match="held by another active agent"):
        provisioning.provision(
            s,
            "gw-h3",
            sites=[site],
            actor="test",
            metrics_host="10.0.0.7",
            metrics_port=default + 2,
        )
    # provisionings for one host at the same time wait for each other's port
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        rows = list(
            pool.map(
                lambda n: provisioning.provision(
                    s, f"gw-y{n}", sites=[site], actor="test", metrics_host="10.0.0.9"
                )[0],
                range(4),
            )
        )
    assert sorted(r.metrics_port for r in rows) == [default + n for n in range(1, 5)]
    provisioning.revoke(s, "gw-h1", actor="test")  # a revoked agent's port is free again
    d, _ = provisioning.provision(s, "gw-h4", sites=[site], actor="test", metrics_host="10.0.0.7")
    assert d.metrics_port == default + 1

    assert provisioning.targets(s) == [
        {"targets": [f"10.0.0.7:{default + 2}"], "labels": {"agent_id": "gw-h2"}},
        {"targets": [f"10.0.0.7:{default + 1}"], "labels": {"agent_id": "gw-h4"}},
        {"targets": [f"10.0.0.8:{default + 1}"], "labels": {"agent_id": "gw-x1"}},
        *(
            {"targets": [f"10.0.0.9:{r.metrics_port}"], "labels": {"agent_id": r.agent_id}}
            for r in rows
        ),
    ]
    # the simulated province's agents share the province process's endpoint
    provisioning.provision_province(s, plan_agents(registry), actor="test")
    province = {"targets": [f"127.0.0.1:{default}"], "labels": {"agent_id": "province"}}
    assert provisioning.targets(s)[-1] == province
    # what Prometheus reads: the same groups, from the command line
    out = tmp_path / "targets" / "agents.json"
    subprocess.run(
        [*QILU_AGENTS, "targets", "--out", str(out)],
        env=cli_env(s),
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert json.loads(out.read_text()) == provisioning.targets(s)
    assert len(json.loads(out.read_text())) == 8
    listed = subprocess.run(
        [*QILU_AGENTS, "list"],
        env=cli_env(s),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.splitlines()
    assert [ln.split()[3] for ln in listed if ln.startswith("gw-h2 ")] == [
        f"10.0.0.7:{default + 2}"
    ]
    # with agent.targets_file set, every change rewrites the file Prometheus watches
    auto_file = tmp_path / "auto" / "agents.json"
    auto = s.model_copy(update={"agent": s.agent.model_copy(update={"targets_file": auto_file})})
    provisioning.provision(auto, "gw-z1", sites=[site], actor="test", metrics_host="10.0.0.10")
    assert json.loads(auto_file.read_text()) == provisioning.targets(s)
    z1 = {"targets": [f"10.0.0.10:{default + 1}"], "labels": {"agent_id": "gw-z1"}}
    assert z1 in json.loads(auto_file.read_text())
    provisioning.revoke(auto, "gw-z1", actor="test")
    assert json.loads(auto_file.read_text()) == provisioning.targets(s)
    assert z1 not in json.loads(auto_file.read_text())


def test_a_site_just_added_is_not_refused_by_a_stale_registry_snapshot(
    asettings: Settings, registry: Registry
) -> None:
    """The ingest checks the registry only every ``agents_refresh_s`` (here a minute, longer
    than the test); readings of a site added since trigger an early check instead of being
    dead-lettered as foreign_site. A site never given stays refused."""
    (c1, c1_dev), (c2, c2_dev), (c3, c3_dev) = sites_with_devices(registry, Sector.CHARGING, 3)
    kafka = asettings.kafka.model_copy(update={"manage_agent_credentials": False})
    slow = asettings.ingest.model_copy(update={"agents_refresh_s": 60.0})
    s = asettings.model_copy(update={"kafka": kafka, "ingest": slow})
    _, creds = provisioning.provision(s, "gw-late", sites=[c1], actor="test")
    signer = signing.Signer(1, creds.signing_key)
    now = 1_000_000 * int(time.time())
    stop = threading.Event()
    consumer, pool = build_consumer(s, stop)  # loads the registry: gw-late with c1 only
    t = threading.Thread(target=consumer.run, name="ingest", daemon=True)
    t.start()
    producer = KafkaProducer(bootstrap_servers=s.kafka.bootstrap, acks="all")
    try:

        def send(device: str, seq: int) -> None:
            value = envelope(registry, "gw-late", device, seq, now)
            topic = readings_topic(s.kafka, Sector.CHARGING)
            producer.send(topic, key=b"gw-late", value=value, headers=signer.headers(value))
            producer.flush(timeout=15)

        send(c1_dev, 1)
        wait_for(
            lambda: scalar(s.db, "SELECT count(*) FROM readings") == 1,
            timeout=120,
            what="the first reading",
        )
        provisioning.update_sites(s, "gw-late", add_sites=[c2], actor="test")
        send(c2_dev, 2)  # at once: the ingest's snapshot is older than the change
        send(c3_dev, 3)  # never given
        letters = dead_letters(s, 1)
        wait_for(
            lambda: scalar(s.db, "SELECT count(*) FROM readings") == 2,
            timeout=60,
            what="the new site's reading",
        )
    finally:
        producer.close()
        stop.set()
        t.join(timeout=30)
        pool.close()
    assert [h["qilu.reason"] for h in letters] == ["rejected_readings"]
    refused = json.loads(letters[0]["qilu.rejected"])
    assert [(r["reason"], r["detail"]) for r in refused] == [("foreign_site", f"{c3_dev} at {c3}")]
