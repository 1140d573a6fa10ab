"""End to end on the real servers: simulated agents -> Kafka -> ingest -> PostgreSQL -> API.

The registry is built by hand so the ground truth is known: which piles, substations and
ranches exist in which city, and which devices never report.
"""

from __future__ import annotations

import asyncio
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from edge_agent.agent import Agent, Delivery, close_producer, new_producer
from edge_agent.buffer import Buffer
from fastapi.testclient import TestClient
from kafka import KafkaConsumer, KafkaProducer

from api.app import create_app
from collectors.simulated.collector import SimulatedCollector, SimulatedConfig
from collectors.simulated.models import SilencePlan
from qilu import signing
from qilu.contract import Envelope, Reading, Sector
from qilu.registry import Device, Registry, Site
from qilu.settings import Settings
from storage.db import connect
from storage.registry_store import load_registry
from stream.provisioning import provision_province
from stream.topics import deadletter_topic, group_lag, readings_topic, readings_topics
from tests.helpers import dead_letters, scalar, wait_for

pytestmark = pytest.mark.integration
QINGDAO, JINAN = "370200", "370100"


def ground_truth() -> tuple[Registry, frozenset[str]]:
    """A small province with known answers; returns the registry and the dead devices."""
    reg, dead = Registry(), set()

    def site(site: Site, kinds: list[tuple[str, int]], dead_idx: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        reg.sites.append(site)
        n = 0
        for kind, count in kinds:
            for _ in range(count):
                n += 1
                dev = Device(f"{site.site_id}-{n:02d}", site.site_id, kind)
                reg.devices.append(dev)
                if n in dead_idx:
                    dead.add(dev.device_id)

    # Qingdao: 20 public networked piles in 3 stations, 7 never report -> 13 connected
    site(
        Site("CHG-Q-1", Sector.CHARGING, QINGDAO, "Q1", public=True, networked=True),
        [("charging_pile", 8)],
        {1, 2, 3},
    )
    site(
        Site("CHG-Q-2", Sector.CHARGING, QINGDAO, "Q2", public=True, networked=True),
        [("charging_pile", 6)],
        {6},
    )
    site(
        Site("CHG-Q-3", Sector.CHARGING, QINGDAO, "Q3", public=True, networked=True),
        [("charging_pile", 6)],
        {1, 2, 3},
    )
    # a private, not networked station: its 4 piles report but count for no charging target
    site(Site("CHG-Q-4", Sector.CHARGING, QINGDAO, "Q4"), [("charging_pile", 4)])
    # Jinan: 5 public networked piles, all report
    site(
        Site("CHG-J-1", Sector.CHARGING, JINAN, "J1", public=True, networked=True),
        [("charging_pile", 5)],
    )
    # Qingdao substations: 220 kV fully reporting, 220 kV with one silent device, 110 kV
    site(
        Site("SUB-Q-1", Sector.SUBSTATION, QINGDAO, "QS1", voltage_kv=220),
        [("transformer", 2), ("bus_meter", 1)],
    )
    site(
        Site("SUB-Q-2", Sector.SUBSTATION, QINGDAO, "QS2", voltage_kv=220),
        [("transformer", 2), ("bus_meter", 1)],
        {3},
    )
    site(Site("SUB-Q-3", Sector.SUBSTATION, QINGDAO, "QS3", voltage_kv=110), [("transformer", 1)])
    # Jinan: a 500 kV GIS substation with one-key sequential control, all reporting
    site(
        Site(
            "SUB-J-1",
            Sector.SUBSTATION,
            JINAN,
            "JS1",
            voltage_kv=500,
            gis=True,
            one_key_control=True,
        ),
        [("transformer", 1), ("bus_meter", 1), ("gis_monitor", 1)],
    )
    # ranches: a reporting smart ranch in Qingdao, a silent one in Jinan
    site(
        Site("RAN-Q-1", Sector.RANCH, QINGDAO, "QR1", smart=True, agri_base=True),
        [("collar", 3), ("barn_climate", 1)],
    )
    site(Site("RAN-J-1", Sector.RANCH, JINAN, "JR1", smart=True), [("collar", 2)], {1, 2})
    return reg, frozenset(dead)


def run_agents(settings: Settings, reg: Registry, dead: frozenset[str], seconds: float) -> int:
    """Run one simulated agent per sector for a while; returns envelopes acknowledged."""
    producer = new_producer(settings.kafka.bootstrap, "test-agents")
    buffers = tempfile.TemporaryDirectory(prefix="qilu-agent-buffers-")
    signers = provision_province(  # the agents' identities and signing keys (docs/adr/0010)
        settings,
        {f"agent-{x.value}": [s.site_id for s in reg.sites if s.sector is x] for x in Sector},
        actor="test",
    )
    delivery = Delivery(
        batch_max_readings=settings.agent.batch_max_readings,
        batch_max_delay_s=settings.agent.batch_max_delay_s,
    )
    agents = []
    for sector in Sector:
        sites = [s.site_id for s in reg.sites if s.sector is sector]
        collector = SimulatedCollector(
            f"sim-{sector.value}",
            SimulatedConfig(sites=sites, seed=3, tick_s=0.2, silence="none"),
            reg,
            silence=SilencePlan(dead=dead),
        )
        agents.append(
            Agent(
                f"agent-{sector.value}",
                [collector],
                Buffer(
                    Path(buffers.name) / f"{sector.value}.db",
                    f"agent-{sector.value}",
                    max_bytes=64 << 20,
                    max_age_s=3600,
                ),
                lambda: producer,
                settings.kafka.topic_prefix,
                delivery,
                replace_producer=False,  # one producer shared by the three agents
                signer=signers[f"agent-{sector.value}"],
            )
        )

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        await asyncio.gather(*(a.run(stop) for a in agents))

    try:
        asyncio.run(main())
    finally:
        close_producer(producer, 10.0)
        buffers.cleanup()
    return sum(a.sent_envelopes for a in agents)


def coverage_by_id(settings: Settings) -> dict[str, dict]:  # type: ignore[type-arg]
    with TestClient(create_app(settings)) as client:
        # the API answers 503 until its first coverage snapshot is computed
        deadline = time.monotonic() + 30
        resp = client.get("/v1/coverage")
        while resp.status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.2)
            resp = client.get("/v1/coverage")
        assert resp.status_code == 200, resp.text
        return {t["target_id"]: t for t in resp.json()}


def city(cov: dict, target: str, code: str) -> tuple[int, int]:  # type: ignore[type-arg]
    c = next(c for c in cov[target]["cities"] if c["city_code"] == code)
    return c["numerator"], c["denominator"]


def test_coverage_matches_ground_truth_and_survives_redelivery(
    settings: Settings, start_ingest: Callable[[], object]
) -> None:
    reg, dead = ground_truth()
    with connect(settings.db) as conn:
        load_registry(conn, reg)
    start_ingest()
    sent = run_agents(settings, reg, dead, seconds=3.0)
    assert sent > 0
    live = {d.device_id for d in reg.devices} - dead
    wait_for(
        lambda: scalar(settings.db, "SELECT count(*) FROM device_liveness") == len(live),
        what="every live device to be seen",
    )
    cov = coverage_by_id(settings)

    assert city(cov, "charging-public-piles-2024", QINGDAO) == (13, 20)
    assert city(cov, "charging-public-piles-2024", JINAN) == (5, 5)
    assert cov["charging-public-piles-2024"]["value"] == 18
    assert cov["charging-public-piles-2024"]["met"] is False
    assert city(cov, "charging-networked-2025", QINGDAO) == (13, 20)
    assert city(cov, "substation-220kv-monitoring-2024", QINGDAO) == (1, 2)
    assert city(cov, "substation-220kv-monitoring-2024", JINAN) == (1, 1)
    assert math.isclose(cov["substation-220kv-monitoring-2024"]["value"], 2 / 3)
    assert city(cov, "substation-gis-onekey-2024", JINAN) == (1, 1)
    assert city(cov, "substation-gis-onekey-2024", QINGDAO) == (0, 0)
    assert cov["substation-gis-onekey-2024"]["met"] is True
    assert city(cov, "ranch-smart-built-2024", QINGDAO) == (1, 1)
    assert city(cov, "ranch-smart-built-2024", JINAN) == (0, 1)
    assert city(cov, "agri-bases-2025", QINGDAO) == (1, 1)
    assert cov["iot-terminals-2025"]["value"] == len(live)
    other = next(
        c for c in cov["charging-public-piles-2024"]["cities"] if c["city_code"] == "370300"
    )
    assert (other["numerator"], other["denominator"], other["value"]) == (0, 0, 0)

    # --- replay every record of the readings topics: nothing may change ---------------------
    # liveness is coalesced (ingest.liveness_flush_s): wait until it names every device's
    # newest stored reading before taking it as the reference
    wait_for(
        lambda: (
            scalar(
                settings.db,
                "SELECT count(*) FROM (SELECT device_pk, max(ts) AS ts FROM readings GROUP BY 1) r"
                " LEFT JOIN device_liveness l USING (device_pk)"
                " WHERE l.last_seen IS DISTINCT FROM r.ts",
            )
            == 0
        ),
        what="liveness to reach the newest stored readings",
    )
    rows_before = scalar(settings.db, "SELECT count(*) FROM readings")
    liveness_before = scalar(
        settings.db, "SELECT sum(extract(epoch FROM last_seen))::bigint FROM device_liveness"
    )
    consumer = KafkaConsumer(
        *readings_topics(settings.kafka),
        bootstrap_servers=settings.kafka.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
    )
    records = [(r.topic, r.key, r.value, r.headers) for r in consumer]
    consumer.close()
    assert len(records) == sent
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all")
    for topic, key, value, headers in records:  # with their signatures
        producer.send(topic, key=key, value=value, headers=headers)
    producer.flush()
    producer.close()
    wait_for(lambda: _group_caught_up(settings), what="ingest to consume the replay")
    assert scalar(settings.db, "SELECT count(*) FROM readings") == rows_before
    assert (
        scalar(
            settings.db, "SELECT sum(extract(epoch FROM last_seen))::bigint FROM device_liveness"
        )
        == liveness_before
    )
    after = coverage_by_id(settings)
    for tid, t in cov.items():
        assert [(c["numerator"], c["denominator"]) for c in after[tid]["cities"]] == [
            (c["numerator"], c["denominator"]) for c in t["cities"]
        ], tid


def provisioned_agent(settings: Settings, agent: str) -> signing.Signer:
    """The ground-truth registry loaded and ``agent`` provisioned for all its sites; returns
    the agent's signer."""
    reg, _ = ground_truth()
    with connect(settings.db) as conn:
        load_registry(conn, reg)
    signer = provision_province(settings, {agent: [s.site_id for s in reg.sites]}, actor="t")
    return signer[agent]


def _group_caught_up(settings: Settings) -> bool:
    return group_lag(settings.kafka, settings.ingest.group_id, readings_topics(settings.kafka)) == 0


def test_bad_records_go_to_dead_letter_while_good_readings_are_stored(
    settings: Settings, start_ingest: Callable[[], object]
) -> None:
    signer = provisioned_agent(settings, "agent-x")
    start_ingest()
    now = time.time_ns() // 1000
    env = Envelope("agent-x", "boot-x", 0, now)
    env.add(Reading("CHG-Q-1-01", "power_kw", now, 7.0))
    env.add(Reading("CHG-Q-1-01", "power_kw", now - 1, float("nan")))
    env.add(Reading("CHG-Q-1-02", "power_kw", now, 11.0))
    env.add(Reading("NO-SUCH-DEVICE", "power_kw", now, 1.0))
    good = env.encode()
    garbage = b"\x92\x01"  # a msgpack array, not an envelope
    topic = readings_topic(settings.kafka, Sector.CHARGING)
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all")
    producer.send(topic, key=b"agent-x", value=garbage)
    producer.send(topic, key=b"agent-x", value=good, headers=signer.headers(good))
    producer.flush()
    producer.close()

    wait_for(lambda: scalar(settings.db, "SELECT count(*) FROM readings") == 2, what="2 rows")
    letters = dead_letters(settings, 2, timeout_ms=15_000)
    by_reason = {h["qilu.reason"]: (v, h) for v, h in letters}
    assert set(by_reason) == {"malformed", "rejected_readings"}
    assert by_reason["malformed"][0] == garbage
    value, headers = by_reason["rejected_readings"]
    assert value == good
    assert headers["qilu.source"].startswith(f"{topic}/")
    import json

    assert [(r["i"], r["reason"]) for r in json.loads(headers["qilu.rejected"])] == [
        (1, "non_finite_value"),
        (3, "unknown_device"),
    ]
    assert scalar(settings.db, "SELECT count(*) FROM readings WHERE value IN (7, 11)") == 2


def test_an_ingest_started_before_its_topics_exist_stores_once_they_do(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """`qilu run` on a fresh broker: the ingest must not join its group before the broker
    serves the topics' partitions (a group formed then was seen to hold none for minutes)."""
    import threading
    import uuid

    from kafka.admin import KafkaAdminClient

    from stream.cli import build_consumer
    from stream.topics import ensure_topics

    kafka = settings.kafka.model_copy(update={"topic_prefix": f"t{uuid.uuid4().hex[:10]}"})
    late = settings.model_copy(update={"kafka": kafka})
    signer = provisioned_agent(late, "agent-late")
    stop = threading.Event()
    consumer, pool = build_consumer(late, stop)

    def run() -> None:
        try:
            consumer.run()
        finally:
            pool.close()

    caplog.set_level("INFO", logger="stream.ingest")
    thread = threading.Thread(target=run, name="ingest-late", daemon=True)
    thread.start()
    try:
        wait_for(
            lambda: "waiting for the broker to serve" in caplog.text,
            what="the ingest to wait for its topics",
        )
        ensure_topics(kafka)
        now = time.time_ns() // 1000
        env = Envelope("agent-late", "boot-late", 0, now)
        env.add(Reading("CHG-Q-1-01", "power_kw", now, 7.0))
        value = env.encode()
        producer = KafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
        producer.send(
            readings_topic(kafka, Sector.CHARGING),
            key=b"agent-late",
            value=value,
            headers=signer.headers(value),
        )
        producer.flush()
        producer.close()
        wait_for(lambda: scalar(late.db, "SELECT count(*) FROM readings") == 1, what="the row")
        assert "all topics served" in caplog.text
    finally:
        stop.set()
        thread.join(timeout=30)
        admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
        try:
            admin.delete_topics([*readings_topics(kafka), deadletter_topic(kafka)])
        finally:
            admin.close()
