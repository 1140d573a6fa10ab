"""A pile's state comes from every one of its connectors, by one rule for pushes and pulls
(interconnect/tcec102/mapping.py pile_readings, operator_connectors.status, ADR 0015).

The pull runs against a simulated operator over HTTP into the real PostgreSQL; the push
through the endpoint's decisions with its directory loaded from the same database. Both
produce their envelopes into lists (what the readings say is the question here; that they
are stored is tests/integration/test_tcec102_endpoint.py's and test_tcec102_pull.py's).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from psycopg_pool import ConnectionPool

from interconnect.tcec102 import exchange as x
from interconnect.tcec102 import operators as ops
from interconnect.tcec102 import server
from interconnect.tcec102.pull import Puller
from interconnect.tcec102.secrets import box, random_keyset
from interconnect.tcec102.simulated import SimulatedOperator
from qilu import signing
from qilu.contract import Envelope, Sector
from qilu.devices import CONNECTOR_STATES
from qilu.registry import Registry, Site
from qilu.settings import Settings
from storage.db import connect
from storage.registry_store import load_registry
from stream.deadletter import DeadLetter

pytestmark = pytest.mark.integration
OP = "MC0000003"
PILE = f"tcec102.{OP}.S1E1"
A, B = "S1E1CA", "S1E1CB"
CODE = {name: float(i) for i, name in enumerate(CONNECTOR_STATES)}


class ListSink(server.Sink):
    def __init__(self) -> None:
        self.batches: list[Envelope] = []

    def produce(self, batch: Envelope, signer: signing.Signer) -> asyncio.Future[None]:
        del signer
        self.batches.append(batch)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    def dead_letter(self, letter: DeadLetter) -> None:
        del letter


def _pile(env: Envelope) -> tuple[float, float]:
    """(connector_status, fault) of PILE in one envelope."""
    got = {r.metric: r.value for r in env.readings() if r.device_id == PILE}
    return got["connector_status"], got["fault"]


@pytest.fixture
def pool(settings: Settings) -> Iterator[ConnectionPool]:
    with ConnectionPool(
        settings.db.conninfo(), min_size=1, max_size=2, kwargs={"autocommit": True}, open=True
    ) as p:
        yield p


def test_push_and_pull_give_a_two_connector_pile_the_same_state(
    settings: Settings, pool: ConnectionPool
) -> None:
    reg = Registry()
    reg.sites.append(Site("CHG-SEED", Sector.CHARGING, "370100", "seed"))
    with connect(settings.db) as conn:
        load_registry(conn, reg)
    station: dict[str, Any] = {
        "StationID": "S1",
        "StationName": "two connectors",
        "AreaCode": "370102",
        "StationType": 1,
        "EquipmentInfos": [
            {"EquipmentID": "S1E1", "ConnectorInfos": [{"ConnectorID": A}, {"ConnectorID": B}]}
        ],
    }
    keys = random_keyset()
    sim = SimulatedOperator(OP, keys, [station])
    url = sim.start()
    shown = ops.add(
        settings, OP, name=OP, endpoint_url=url, site_ids=["CHG-SEED"], cities=[],
        outbound=keys, actor="test",
    )  # fmt: skip
    pulled: list[Envelope] = []
    puller = Puller(settings, lambda env, _s: pulled.append(env), lambda _l: None, timeout_s=30)

    def pull() -> tuple[float, float]:
        (report,) = puller.cycle(force=True)
        assert report.error is None, report
        return _pile(pulled[-1])

    sink = ListSink()
    ep = server.Endpoint(
        settings,
        server.database_loader(settings, pool),
        server.database_link_writer(pool),
        sink_factory=lambda: sink,
    )
    ep.sink = sink
    token_key = box(settings).token_key

    def push(connector: str, status: int) -> tuple[float, float]:
        now = datetime.now(UTC)
        token, _ = x.issue_token(token_key, OP, 1, now, timedelta(hours=1))
        payload = {"ConnectorStatusInfo": {"ConnectorID": connector, "Status": status}}
        body = x.seal_request(OP, payload, shown.inbound, now).as_json()
        out = asyncio.run(
            ep.answer("notification_stationStatus", json.dumps(body).encode(), f"Bearer {token}")
        )
        assert out.refused is None, out.refused
        return _pile(sink.batches[-1])

    try:
        assert pull() == (CODE["Available"], 0.0)  # both idle
        ep.refresh_now()  # the directory: the pile's connectors and their pulled statuses

        # A charging; then B goes offline: the pile is still charging (not Unavailable)
        assert push(A, 3) == (CODE["Charging"], 0.0)
        assert push(B, 0) == (CODE["Charging"], 0.0)
        # the same connectors' statuses pulled give the same state
        sim.set_status(A, 3)
        sim.set_status(B, 0)
        ep.refresh_now()  # the pushes' statuses kept in operator_connectors
        assert pull() == (CODE["Charging"], 0.0)

        # A faulted; a healthy B pushing does not clear the pile's fault
        ep.refresh_now()
        assert push(A, 255) == (CODE["Faulted"], 1.0)  # B offline, A faulted
        assert push(B, 1) == (CODE["Available"], 1.0)
        assert push(B, 1) == (CODE["Available"], 1.0)
        sim.set_status(A, 255)
        sim.set_status(B, 1)
        ep.refresh_now()
        assert pull() == (CODE["Available"], 1.0)

        # a pull's statuses reach the endpoint: B's pulled charging, then A pushes idle
        sim.set_status(B, 3)
        assert pull() == (CODE["Charging"], 1.0)
        ep.refresh_now()
        assert push(A, 1) == (CODE["Charging"], 0.0)
    finally:
        ep.stop()
        sim.stop()


def test_a_status_answer_for_a_station_not_asked_about_is_refused(settings: Settings) -> None:
    reg = Registry()
    reg.sites.append(Site("CHG-SEED", Sector.CHARGING, "370100", "seed"))
    with connect(settings.db) as conn:
        load_registry(conn, reg)
    station: dict[str, Any] = {
        "StationID": "S1",
        "StationName": "one",
        "AreaCode": "370102",
        "StationType": 1,
        "EquipmentInfos": [{"EquipmentID": "S1E1", "ConnectorInfos": [{"ConnectorID": A}]}],
    }
    keys = random_keyset()
    sim = SimulatedOperator(OP, keys, [station])
    asked = sim._status_of

    def with_a_stranger(station_ids: list[str]) -> dict[str, Any]:
        out = asked(station_ids)
        stranger = {"StationID": "S9", "ConnectorStatusInfos": [{"ConnectorID": A, "Status": 3}]}
        out["StationStatusInfos"].append(stranger)
        return out

    setattr(sim, "_status_of", with_a_stranger)  # noqa: B010 - the operator's answer, altered
    url = sim.start()
    ops.add(
        settings, OP, name=OP, endpoint_url=url, site_ids=["CHG-SEED"], cities=[],
        outbound=keys, actor="test",
    )  # fmt: skip
    pulled: list[Envelope] = []
    letters: list[DeadLetter] = []
    try:
        puller = Puller(settings, lambda env, _s: pulled.append(env), letters.append)
        (report,) = puller.cycle(force=True)
    finally:
        sim.stop()
    assert report.error is None, report
    assert report.refused == ["unknown_station"]
    assert [letter.reason for letter in letters] == ["tcec102_unknown_station"]
    assert [_pile(env) for env in pulled] == [(CODE["Available"], 0.0)]  # S9's charging left out
