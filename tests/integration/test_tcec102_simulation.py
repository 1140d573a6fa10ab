"""Simulated operators connected to a running API over HTTP: added without sites, pulled into
the registry, pushing status changes that are stored (what `qilu operators simulate` runs)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import uvicorn

from api.app import create_app
from interconnect.tcec102 import exchange as x
from interconnect.tcec102.pull import KafkaOut, Puller
from interconnect.tcec102.secrets import box
from interconnect.tcec102.simulated import Province
from qilu.ports import free_port
from qilu.settings import Settings
from storage import operators as store
from storage.db import connect
from tests.helpers import scalar, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def api_url(settings: Settings) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    wait_for(lambda: server.started, what="the API")
    yield f"http://127.0.0.1:{port}/evcs/v1"
    server.should_exit = True
    t.join(timeout=30)


def test_simulated_operators_are_pulled_and_push_through_the_endpoint(
    settings: Settings, api_url: str, start_ingest: Callable[[], object]
) -> None:
    province = Province(settings, ["370100", "370200"], 1, 5, api_url)
    out = KafkaOut(settings)
    try:
        province.connect()
        assert sorted(province.operators) == ["S37010001", "S37020001"]
        reports = Puller(settings, out.produce, out.dead_letter).cycle()
        assert [r.error for r in reports] == [None, None]
        db = settings.db
        assert scalar(db, "SELECT count(*) FROM sites WHERE site_id LIKE 'tcec102.S3701%'") == 5
        start_ingest()
        # the endpoint reloads its directory every tcec102.refresh_s: wait for the operators
        wait_for(lambda: province.push_some(1) == 1, what="a first accepted push")
        assert province.push_some(30) == 30
        wait_for(lambda: scalar(db, "SELECT count(*) FROM readings") > 60, what="readings")
        with connect(db) as conn:
            links = store.health(conn, datetime.now(UTC))
        assert [h.healthy for h in links] == [True, True]
        # tokens expire (token_lifetime_s): a push refused with 4002 drops the cached token,
        # gets a new one and is sent again, so simulated operators keep pushing
        key = box(settings).token_key
        for op in province.operators:
            province._tokens[op], _ = x.issue_token(
                key, op, 1, datetime.now(UTC) - timedelta(hours=3), timedelta(seconds=60)
            )
        assert province.push_some(10) == 10
        assert all(province._tokens.values())
        # a second run points the same operators at new servers with new keys
        province.stop()
        again = Province(settings, ["370100", "370200"], 1, 5, api_url, seed=2)
        again.connect()
        with connect(db) as conn:
            assert store.get(conn, "S37010001").key_no == 2  # type: ignore[union-attr]
        again.stop()
    finally:
        province.stop()
        out.close()
