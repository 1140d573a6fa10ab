"""A T/CEC 102 operator's quiet piles count as connected while its link is healthy and their
last status is not offline (storage/coverage.py, docs/adr/0015-tcec102.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from interconnect.tcec102 import operators as ops
from qilu.catalog import load_catalog
from qilu.contract import Sector
from qilu.registry import Device, Registry, Site
from qilu.settings import Settings, StorageMode
from storage import coverage, mode
from storage import operators as store
from storage.coverage_incremental import IncrementalCoverage
from storage.db import connect
from storage.maintain import ensure_partitions
from storage.registry_store import load_registry

pytestmark = pytest.mark.integration
OP = "MA0000001"
TARGET = "charging-public-piles-2024"


def _count(settings: Settings, now: datetime) -> int:
    with connect(settings.db) as conn:
        figures = coverage.compute(conn, load_catalog(), now)
    (tc,) = [t for t in figures if t.target.id == TARGET]
    return tc.province.numerator


def test_operator_piles_follow_link_health_and_last_status(settings: Settings) -> None:
    reg = Registry()
    reg.sites.append(Site("CHG-T", Sector.CHARGING, "370100", "T", public=True, networked=True))
    piles = [f"tcec102.{OP}.E{n}" for n in (1, 2, 3, 4)]
    reg.devices.extend(Device(d, "CHG-T", "charging_pile") for d in [*piles, "OCPP-X"])
    with connect(settings.db) as conn:
        load_registry(conn, reg)
    ops.add(
        settings, OP, name="", endpoint_url="", site_ids=["CHG-T"], cities=[], outbound=None,
        actor="test",
    )  # fmt: skip
    now = datetime.now(UTC)
    hour_ago = now - timedelta(minutes=50)
    with connect(settings.db) as conn:
        if mode.current(conn) is StorageMode.POSTGRES:  # the hour partitions of the readings
            ensure_partitions(conn, settings.storage, now)
    with connect(settings.db) as conn, conn.transaction():
        store.link_connectors(
            conn,
            OP,
            [store.ConnectorLink(f"C{i}", f"E{i}", "S", d) for i, d in enumerate(piles, 1)],
        )
        pk: dict[str, int] = dict(
            conn.execute("SELECT device_id, device_pk FROM devices").fetchall()
        )
        status = conn.execute("SELECT metric_id FROM metrics WHERE key = 'connector_status'")
        metric = status.fetchone()
        assert metric is not None
        # E1 idle (0 Available), E2 offline (7 Unavailable), E3 never reported, E4 charging (2)
        # 50 minutes ago: long past the piles' 120 s liveness window
        for dev, value in ((piles[0], 0), (piles[1], 7), (piles[3], 2)):
            conn.execute(
                "INSERT INTO readings (device_pk, metric_id, ts, value) VALUES (%s, %s, %s, %s)",
                (pk[dev], metric[0], hour_ago, value),
            )
            conn.execute(  # as the ingest keeps it: the pile's latest valid reading
                "INSERT INTO device_liveness (device_pk, last_seen) VALUES (%s, %s)",
                (pk[dev], hour_ago),
            )
        # an ordinary pile reporting now: connected by the usual rule
        conn.execute(
            "INSERT INTO device_liveness (device_pk, last_seen) VALUES (%s, %s)",
            (pk["OCPP-X"], now),
        )
    links = {OP: store.LinkDelta(last_push=now - timedelta(seconds=30))}
    with connect(settings.db) as conn, conn.transaction():
        store.record_links(conn, links)
    assert _count(settings, now) == 3  # E1, E4 and OCPP-X

    # the link silent for longer than twice its pull interval (300 s): its piles drop out
    later = now + timedelta(seconds=601)
    assert _count(settings, later) == 0  # (OCPP-X too: its own window passed)
    # a successful pull refreshes the link
    with connect(settings.db) as conn, conn.transaction():
        store.record_links(conn, {OP: store.LinkDelta(last_pull=later - timedelta(seconds=5))})
    assert _count(settings, later) == 2
    # a revoked operator's piles do not count, however fresh its link
    ops.revoke(settings, OP, actor="test")
    assert _count(settings, later) == 0


def test_status_answer_shows_each_operators_link(settings: Settings) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from tests.helpers import wait_for

    reg = Registry()
    reg.sites.append(Site("CHG-T", Sector.CHARGING, "370100", "T", public=True, networked=True))
    reg.devices.append(Device(f"tcec102.{OP}.E1", "CHG-T", "charging_pile"))
    with connect(settings.db) as conn:
        load_registry(conn, reg)
    for op in (OP, "MB0000002"):
        ops.add(
            settings, op, name=op, endpoint_url="", site_ids=["CHG-T"], cities=[], outbound=None,
            actor="test",
        )  # fmt: skip
    now = datetime.now(UTC)
    with connect(settings.db) as conn, conn.transaction():
        store.link_connectors(conn, OP, [store.ConnectorLink("C1", "E1", "S", f"tcec102.{OP}.E1")])
        store.record_links(
            conn,
            {
                OP: store.LinkDelta(last_push=now),
                "MB0000002": store.LinkDelta(
                    failures=2, last_failure=now, last_failure_reason="pull: timeout"
                ),
            },
        )
    with TestClient(create_app(settings)) as client:
        wait_for(lambda: client.get("/v1/status").status_code == 200, what="a snapshot")
        body = client.get("/v1/status").json()
    by_id = {o["operator_id"]: o for o in body["operators"]}
    assert by_id[OP]["healthy"] is True
    assert by_id[OP]["connectors"] == 1
    assert by_id["MB0000002"]["healthy"] is False
    assert (by_id["MB0000002"]["failures"], by_id["MB0000002"]["last_failure_reason"]) == (
        2,
        "pull: timeout",
    )


def test_a_pile_a_pulled_operator_stops_reporting_stops_counting(settings: Settings) -> None:
    """A pulled operator refreshes every pile it reports on each pull: a station it dropped
    gets no answer, so its pile's last reading ages and it stops counting after twice the
    pull interval, however healthy the link and whatever its last status said."""
    from interconnect.tcec102.secrets import random_keyset

    reg = Registry()
    reg.sites.append(Site("CHG-T", Sector.CHARGING, "370100", "T", public=True, networked=True))
    kept, dropped = f"tcec102.{OP}.E1", f"tcec102.{OP}.E2"
    reg.devices.extend(Device(d, "CHG-T", "charging_pile") for d in (kept, dropped))
    with connect(settings.db) as conn:
        load_registry(conn, reg)
    ops.add(
        settings, OP, name="", endpoint_url="http://127.0.0.1:9/evcs", site_ids=["CHG-T"],
        cities=[], outbound=random_keyset(), actor="test",
    )  # fmt: skip
    now = datetime.now(UTC)
    with connect(settings.db) as conn:
        if mode.current(conn) is StorageMode.POSTGRES:
            ensure_partitions(conn, settings.storage, now)
    with connect(settings.db) as conn, conn.transaction():
        store.link_connectors(
            conn,
            OP,
            [
                store.ConnectorLink(f"C{i}", f"E{i}", f"S{i}", d)
                for i, d in ((1, kept), (2, dropped))
            ],
        )
        pk: dict[str, int] = dict(
            conn.execute("SELECT device_id, device_pk FROM devices").fetchall()
        )
        metric = conn.execute(
            "SELECT metric_id FROM metrics WHERE key = 'connector_status'"
        ).fetchone()
        assert metric is not None
        # both Available (0); E1 refreshed by the last pull a minute ago, E2's station dropped
        # by the operator: its last reading is from 9 minutes ago, 11 two minutes later
        # (over 2 x 300 s)
        for dev, at in ((kept, now - timedelta(minutes=1)), (dropped, now - timedelta(minutes=9))):
            conn.execute(
                "INSERT INTO readings (device_pk, metric_id, ts, value) VALUES (%s, %s, %s, 0)",
                (pk[dev], metric[0], at),
            )
            conn.execute(
                "INSERT INTO device_liveness (device_pk, last_seen) VALUES (%s, %s)",
                (pk[dev], at),
            )
        store.record_links(conn, {OP: store.LinkDelta(last_pull=now - timedelta(minutes=1))})
    inc = IncrementalCoverage(load_catalog())

    def both(at: datetime) -> tuple[int, int]:
        """The full computation's count and the incremental one's (the API's path)."""
        with connect(settings.db) as conn:
            figures = inc.compute(conn, at)
        (tc,) = [t for t in figures if t.target.id == TARGET]
        return _count(settings, at), tc.province.numerator

    assert both(now) == (2, 2)
    later = now + timedelta(minutes=2)
    assert both(later) == (1, 1)  # E1 only: E2 got no answer for over two pull intervals
    with connect(settings.db) as conn:
        (healthy,) = store.health(conn, later)
    assert healthy.healthy
    # the same piles of a push-only operator: statuses come only on change, no age limit
    with connect(settings.db) as conn, conn.transaction():
        conn.execute("UPDATE operators SET endpoint_url = '' WHERE operator_id = %s", (OP,))
    assert both(later + timedelta(seconds=1)) == (2, 2)
