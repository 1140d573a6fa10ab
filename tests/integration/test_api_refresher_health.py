"""The API's refresher reads the status page's device counts (every device) every
``api.lag_refresh_s``, not with each snapshot; the status page says when they were read."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from psycopg_pool import ConnectionPool

from api.service import Refresher
from qilu.catalog import load_catalog
from qilu.registry import generate
from qilu.settings import Settings
from storage.db import connect
from storage.registry_store import load_registry

pytestmark = pytest.mark.integration

# as the ingest keeps it (storage/writer.py): forward only
_UPSERT = (
    "INSERT INTO device_liveness (device_pk, last_seen)"
    " SELECT d, t FROM unnest(%s::int4[], %s::timestamptz[]) AS u(d, t) ORDER BY d"
    " ON CONFLICT (device_pk) DO UPDATE SET last_seen = EXCLUDED.last_seen"
    " WHERE device_liveness.last_seen < EXCLUDED.last_seen"
)


@pytest.fixture
def pool(settings: Settings) -> Iterator[ConnectionPool]:
    with ConnectionPool(
        settings.db.conninfo(), min_size=1, max_size=2, kwargs={"autocommit": True}, open=True
    ) as p:
        yield p


def _report(settings: Settings, pks: list[int]) -> None:
    with connect(settings.db) as conn, conn.transaction():
        conn.execute(_UPSERT, (pks, [datetime.now(UTC) - timedelta(seconds=1)] * len(pks)))


def test_device_counts_are_read_every_lag_refresh(settings: Settings, pool: ConnectionPool) -> None:
    with connect(settings.db) as conn:
        load_registry(conn, generate(seed=3, scale=0.01))
        pks = [r[0] for r in conn.execute("SELECT device_pk FROM devices ORDER BY 1")]
    _report(settings, pks[:10])
    slow = settings.model_copy(
        update={"api": settings.api.model_copy(update={"lag_refresh_s": 3600.0})}
    )
    refresher = Refresher(pool, load_catalog(), slow)
    first = refresher.refresh_once()
    assert first.health.online == 10
    assert first.health.devices_checked_at == first.as_of

    # more devices report: the next snapshots keep the counts of the first until the
    # interval has passed (the coverage itself moves with every snapshot)
    _report(settings, pks[10:30])
    second = refresher.refresh_once()
    assert second.as_of > first.as_of
    assert second.health.online == 10
    assert second.health.devices_checked_at == first.as_of

    fast = settings.model_copy(
        update={"api": settings.api.model_copy(update={"lag_refresh_s": 0.01})}
    )
    refresher = Refresher(pool, load_catalog(), fast)
    refresher.refresh_once()
    time.sleep(0.05)  # past the interval
    third = refresher.refresh_once()
    assert third.health.online == 30
    assert third.health.devices_checked_at == third.as_of
