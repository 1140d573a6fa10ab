"""Both keepers of an incremental coverage model take the rebuild bound from the settings
(``storage.coverage_rebuild_min_s``) and export what the model did: the API's refresher
(api/service.py) and the maintenance loop (storage/maintain.py). The bound's own behaviour is
tested with a clock the test moves in test_coverage_incremental.py; here it is an hour, which
no test outlasts, against 0, which rebuilds at once as before."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from psycopg_pool import ConnectionPool

from api.service import Refresher
from qilu.catalog import load_catalog
from qilu.registry import generate
from qilu.settings import DatabaseSettings, Settings, StorageMode
from storage import maintain
from storage.db import connect
from storage.registry_store import load_registry
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

HOUR = 3600.0


@pytest.fixture
def pool(settings: Settings) -> Iterator[ConnectionPool]:
    with ConnectionPool(
        settings.db.conninfo(), min_size=1, max_size=2, kwargs={"autocommit": True}, open=True
    ) as p:
        yield p


def _registry(db: DatabaseSettings) -> list[str]:
    with connect(db) as conn:
        load_registry(conn, generate(seed=3, scale=0.01))
        ids = [r[0] for r in conn.execute("SELECT device_id FROM devices ORDER BY 1")]
        conn.execute(
            "INSERT INTO device_liveness (device_pk, last_seen) SELECT device_pk, %s"
            " FROM devices WHERE device_pk %% 3 = 0",
            (datetime.now(UTC) - timedelta(seconds=1),),
        )
        conn.commit()
    return ids


def _change_registry(db: DatabaseSettings, device_id: str) -> None:
    with connect(db) as conn, conn.transaction():
        conn.execute("UPDATE devices SET status = 'maintenance' WHERE device_id = %s", (device_id,))


def _builds(prefix: str, reason: str) -> float:
    got = REGISTRY.get_sample_value(f"{prefix}_coverage_full_builds_total", {"reason": reason})
    return got or 0.0


def _behind(prefix: str) -> float:
    got = REGISTRY.get_sample_value(f"{prefix}_coverage_registry_behind_seconds")
    assert got is not None
    return got


def _with_bound(settings: Settings, bound: float) -> Settings:
    storage = settings.storage.model_copy(update={"coverage_rebuild_min_s": bound})
    return settings.model_copy(update={"storage": storage})


def test_the_api_refresher_waits_for_the_bound_and_exports_it(
    settings: Settings, pool: ConnectionPool
) -> None:
    ids = _registry(settings.db)
    catalog = load_catalog()
    first, changed = "first computation", "the registry changed"

    bounded = Refresher(pool, catalog, _with_bound(settings, HOUR))
    n_first, n_changed = _builds("qilu_api", first), _builds("qilu_api", changed)
    bounded.refresh_once()
    assert _builds("qilu_api", first) == n_first + 1
    assert _behind("qilu_api") == 0.0
    built_in = REGISTRY.get_sample_value("qilu_api_coverage_full_build_seconds")
    assert built_in is not None
    assert built_in > 0.0
    _change_registry(settings.db, ids[0])
    bounded.refresh_once()
    bounded.refresh_once()
    assert _builds("qilu_api", changed) == n_changed  # no rebuild within the hour
    assert _behind("qilu_api") > 0.0  # the registry has been newer since the previous snapshot

    at_once = Refresher(pool, catalog, _with_bound(settings, 0.0))
    at_once.refresh_once()
    _change_registry(settings.db, ids[1])
    at_once.refresh_once()
    assert _builds("qilu_api", changed) == n_changed + 1
    assert _behind("qilu_api") == 0.0


@pytest.mark.parametrize("bound", [HOUR, 0.0])
def test_the_maintenance_loop_waits_for_the_bound_and_exports_it(
    db: DatabaseSettings, bound: float
) -> None:
    ids = _registry(db)
    storage = Settings().storage.model_copy(
        update={
            "refresh_interval_s": 0.2,
            "coverage_snapshot_interval_s": 0.2,
            "coverage_rebuild_min_s": bound,
        }
    )
    changed = "the registry changed"
    n_changed = _builds("qilu_storage", changed)
    stop = threading.Event()
    worker = maintain.Maintainer(db, storage, StorageMode.POSTGRES, load_catalog(), stop)
    worker.start()
    try:
        wait_for(lambda: worker.passes >= 2, timeout=60, what="two maintenance passes")
        _change_registry(db, ids[0])
        seen = worker.passes
        wait_for(lambda: worker.passes >= seen + 3, timeout=60, what="three more passes")
    finally:
        stop.set()
        worker.join(timeout=30)
    last = worker.coverage.last
    assert last is not None
    built_in = REGISTRY.get_sample_value("qilu_storage_coverage_full_build_seconds")
    assert built_in is not None
    assert built_in > 0.0
    if bound:
        assert not last.full, last.reason
        assert last.registry_behind_s is not None
        assert last.registry_behind_s > 0.0
        assert _builds("qilu_storage", changed) == n_changed
        assert _behind("qilu_storage") == last.registry_behind_s
    else:
        assert last.registry_behind_s is None
        assert _builds("qilu_storage", changed) == n_changed + 1
        assert _behind("qilu_storage") == 0.0
