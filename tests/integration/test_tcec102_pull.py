"""Pulls from simulated operator platforms over HTTP, into the real registry, Kafka and ingest.

The operator platforms are interconnect/tcec102/simulated.py: a real HTTP server speaking the
exchange layer, which can time out or answer garbage.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from interconnect.tcec102 import operators as ops
from interconnect.tcec102.pull import KafkaOut, Puller
from interconnect.tcec102.secrets import random_keyset
from interconnect.tcec102.simulated import SimulatedOperator, generate_stations
from qilu.contract import Sector
from qilu.registry import Registry, Site
from qilu.settings import Settings
from storage import audit, trajectories
from storage.db import connect
from storage.registry_store import load_registry
from tests.helpers import scalar, wait_for

pytestmark = pytest.mark.integration


def _operator(
    settings: Settings, op: str, stations: list[dict[str, Any]], **kw: Any
) -> SimulatedOperator:
    keys = random_keyset()
    sim = SimulatedOperator(op, keys, stations, **kw)
    url = sim.start()
    ops.add(
        settings,
        op,
        name=op,
        endpoint_url=url,
        site_ids=["CHG-SEED"],
        cities=[],
        outbound=keys,
        actor="test",
    )
    return sim


@pytest.fixture
def out(settings: Settings) -> Iterator[KafkaOut]:
    reg = Registry()
    reg.sites.append(Site("CHG-SEED", Sector.CHARGING, "370100", "seed"))
    with connect(settings.db) as conn:
        load_registry(conn, reg)
    k = KafkaOut(settings)
    yield k
    k.close()


def test_full_pull_of_10000_stations_in_pages_then_incremental(
    settings: Settings, out: KafkaOut
) -> None:
    stations = generate_stations("MA0000001", 10_000, ["370100", "370200", "371200"])
    # one station outside the province and one without an id: refused, the rest kept
    stations.append({**stations[0], "StationID": "BAD1", "AreaCode": "110101"})
    stations.append({**stations[1], "StationID": ""})
    sim = _operator(settings, "MA0000001", stations)
    try:
        puller = Puller(settings, out.produce, out.dead_letter, page_size=500, timeout_s=30)
        (report,) = puller.cycle(force=True)
        assert report.error is None, report
        assert report.full
        assert report.stations == 10_000
        assert sim.calls["query_stations_info"] == 21  # 10,002 stations, 500 a page
        assert sorted(report.refused) == ["bad_area_code", "bad_field"]
        piles = sum(len(s["EquipmentInfos"]) for s in stations[:10_000])
        conns = sum(
            len(e["ConnectorInfos"]) for s in stations[:10_000] for e in s["EquipmentInfos"]
        )
        assert (report.sites_added, report.devices_added, report.connectors) == (
            10_000,
            piles,
            conns,
        )
        db = settings.db
        assert scalar(db, "SELECT count(*) FROM sites WHERE site_id LIKE 'tcec102.%'") == 10_000
        assert scalar(db, "SELECT count(*) FROM devices WHERE device_id LIKE 'tcec102.%'") == piles
        assert scalar(db, "SELECT count(*) FROM operator_connectors") == conns
        # Laiwu's districts (3712xx) are Jinan's; the others' city is the code's first 4 + 00
        assert scalar(db, "SELECT count(*) FROM sites WHERE city_code = '371200'") == 0
        assert scalar(db, "SELECT count(*) FROM sites WHERE city_code = '370100'") == 6668
        assert (
            scalar(db, "SELECT count(*) FROM agent_sites WHERE agent_id = 'tcec102-MA0000001'")
            == 10_001
        )
        assert report.statuses == conns  # every pile's state refreshed by the status pull
        assert sim.calls["query_station_status"] == 200

        # incremental: only the station changed since; one the operator dropped stays
        sim.touch("S000007", StationName="改名的充电站")
        sim._by_id.pop("S000008")  # the operator stops reporting it
        before = sim.calls["query_stations_info"]
        (report,) = puller.cycle(force=True)
        assert report.error is None, report
        assert not report.full
        assert report.stations == 1
        assert sim.calls["query_stations_info"] == before + 1
        with connect(settings.db) as conn:
            name = conn.execute(
                "SELECT name FROM sites WHERE site_id = 'tcec102.MA0000001.S000007'"
            ).fetchone()
            kept = conn.execute(
                "SELECT count(*) FROM sites WHERE site_id = 'tcec102.MA0000001.S000008'"
            ).fetchone()
            trail = audit.query(conn, entity="site", entity_id="tcec102.MA0000001.S000007")
        assert name == ("改名的充电站",)
        assert kept == (1,)
        assert [e.action for e in trail] == ["site.add", "site.update"]
        assert {e.actor for e in trail} == {"tcec102:MA0000001"}
    finally:
        sim.stop()


def test_pulled_statuses_become_stored_readings(
    settings: Settings, out: KafkaOut, start_ingest: Callable[[], object]
) -> None:
    stations = generate_stations("MB0000002", 3, ["370200"], seed=7)
    sim = _operator(settings, "MB0000002", stations)
    try:
        puller = Puller(settings, out.produce, out.dead_letter, timeout_s=30)
        assert puller.cycle(force=True)[0].error is None
        start_ingest()
        eq = stations[0]["EquipmentInfos"][0]
        sim.set_status(eq["ConnectorInfos"][0]["ConnectorID"], 3)  # charging
        assert puller.cycle(force=True)[0].error is None
        piles = sum(len(s["EquipmentInfos"]) for s in stations)
        db = settings.db
        wait_for(
            lambda: scalar(db, "SELECT count(*) FROM readings") == 2 * 2 * piles,
            what="two pulls' readings",
        )
        dev = f"tcec102.MB0000002.{eq['EquipmentID']}"
        with connect(db) as conn:
            charging = conn.execute(
                "SELECT count(*) FROM readings r JOIN devices d USING (device_pk)"
                " JOIN metrics m USING (metric_id)"
                " WHERE d.device_id = %s AND m.key = 'connector_status' AND r.value = 2",
                (dev,),
            ).fetchone()
        assert charging == (1,)
        assert scalar(db, "SELECT count(*) FROM operator_links WHERE last_pull IS NOT NULL") == 1
    finally:
        sim.stop()


@pytest.mark.parametrize(
    ("fault", "reason"), [("timeout", "timeout"), ("garbage", "garbage"), ("http500", "http_500")]
)
def test_an_operator_that_times_out_or_answers_garbage_opens_its_breaker(
    settings: Settings, out: KafkaOut, fault: str, reason: str
) -> None:
    bad = _operator(settings, "MC0000003", generate_stations("MC0000003", 5, ["370300"]),
                    fault=fault, delay_s=2.0)  # fmt: skip
    good = _operator(settings, "MD0000004", generate_stations("MD0000004", 5, ["370300"]))
    try:
        puller = Puller(settings, out.produce, out.dead_letter, timeout_s=0.5)
        for _ in range(3):  # the breaker's threshold
            reports = {r.operator_id: r for r in puller.cycle(force=True)}
            assert reports["MC0000003"].error == reason
            assert reports["MD0000004"].error is None  # the other operator is unaffected
        calls = dict(bad.calls)
        # open now: a normal cycle skips it, the healthy one is only not due yet
        assert puller.cycle() == []
        assert bad.calls == calls
        assert puller.breakers["MC0000003"].state(0.0).value in ("open", "half_open")
        assert puller.breakers["MC0000003"].failures == 3
        db = settings.db
        assert (
            scalar(db, "SELECT failures FROM operator_links WHERE operator_id = 'MC0000003'") == 3
        )
        with connect(settings.db) as conn:
            why = conn.execute(
                "SELECT last_failure_reason FROM operator_links WHERE operator_id = 'MC0000003'"
            ).fetchone()
        assert why == (f"pull: {reason}",)
        assert (
            scalar(db, "SELECT count(*) FROM sites WHERE site_id LIKE 'tcec102.MC0000003.%'") == 0
        )
        assert (
            scalar(db, "SELECT count(*) FROM sites WHERE site_id LIKE 'tcec102.MD0000004.%'") == 5
        )
        # it recovers: the next allowed call succeeds and closes the breaker
        bad.fault = None
        (report,) = [r for r in puller.cycle(force=True) if r.operator_id == "MC0000003"]
        assert report.error is None
        assert puller.breakers["MC0000003"].failures == 0
    finally:
        bad.stop()
        good.stop()


def test_a_pile_linked_by_hand_to_an_inventory_device_is_not_registered_twice(
    settings: Settings, out: KafkaOut, start_ingest: Callable[[], object]
) -> None:
    from qilu.registry import Device
    from storage import operators as store

    with connect(settings.db) as conn:  # the same physical pile, from an inventory
        load_registry(conn, Registry(devices=[Device("INV-PILE-1", "CHG-SEED", "charging_pile")]))
    stations = generate_stations("ME0000005", 2, ["370500"], seed=3)
    eq = stations[0]["EquipmentInfos"][0]
    sim = _operator(settings, "ME0000005", stations)
    try:
        with connect(settings.db) as conn, conn.transaction():
            store.link_connectors(
                conn,
                "ME0000005",
                [
                    store.ConnectorLink(
                        c["ConnectorID"], eq["EquipmentID"], "S000000", "INV-PILE-1"
                    )
                    for c in eq["ConnectorInfos"]
                ],
            )
        start_ingest()
        sim.set_status(eq["ConnectorInfos"][0]["ConnectorID"], 3)
        puller = Puller(settings, out.produce, out.dead_letter, timeout_s=30)
        (report,) = puller.cycle(force=True)
        assert report.error is None, report
        piles = sum(len(s["EquipmentInfos"]) for s in stations)
        assert report.devices_added == piles - 1  # not the one linked by hand
        db = settings.db
        dup = f"tcec102.ME0000005.{eq['EquipmentID']}"
        with connect(db) as conn:
            assert (
                conn.execute("SELECT 1 FROM devices WHERE device_id = %s", (dup,)).fetchone()
                is None
            )
            linked = conn.execute(
                "SELECT DISTINCT device_id FROM operator_connectors WHERE equipment_id = %s",
                (eq["EquipmentID"],),
            ).fetchall()
        assert linked == [("INV-PILE-1",)]
        # its status goes to the inventory's device
        wait_for(
            lambda: (
                scalar(
                    db,
                    "SELECT count(*) FROM readings r JOIN devices d USING (device_pk)"
                    " WHERE d.device_id = 'INV-PILE-1'",
                )
                == 2
            ),
            what="the linked pile's readings",
        )
    finally:
        sim.stop()


def test_a_pull_into_a_simulated_registry_keeps_the_simulation(
    settings: Settings, out: KafkaOut
) -> None:
    """`qilu run` pulls from simulated operators into its simulated registry: the pulled
    stations join it, and the thresholds stay scaled with the modelled history kept (only an
    operator's inventory import ends a simulation, ADR 0013)."""
    with connect(settings.db) as conn:
        trajectories.record_simulation(conn, {"charging": 0.02, "all": 0.02}, 1, 0.02)
        conn.execute(
            "INSERT INTO coverage_daily (day, target_id, city_code, numerator, denominator,"
            " value, synthetic) VALUES ('2026-09-01', 'charging-networked-2025', '370000',"
            " 1, 1, 1, true)"
        )
        conn.commit()
    sim = _operator(settings, "MA0000002", generate_stations("MA0000002", 20, ["370100"]))
    try:
        puller = Puller(settings, out.produce, out.dead_letter, page_size=500, timeout_s=30)
        (report,) = puller.cycle(force=True)
        assert report.error is None, report
        assert report.sites_added == 20
    finally:
        sim.stop()
    db = settings.db
    assert scalar(db, "SELECT count(*) FROM simulated_registry") == 2
    assert scalar(db, "SELECT count(*) FROM coverage_daily WHERE synthetic") == 1
    assert not scalar(
        db, "SELECT count(*) FROM audit_log WHERE action = 'registry.simulation_ended'"
    )
