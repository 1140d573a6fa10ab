"""The maintenance loop (storage.maintain.Maintainer) records coverage_daily from coverage it
keeps incrementally: after the first pass only the liveness changes are read, and the rows it
records equal a full recomputation (storage.coverage.compute) at the same time."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from qilu.catalog import load_catalog
from qilu.registry import generate
from qilu.settings import DatabaseSettings, Settings, StorageMode
from storage import coverage, maintain
from storage.db import connect
from storage.registry_store import load_registry
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

# as the ingest keeps it (storage/writer.py): forward only
_UPSERT = (
    "INSERT INTO device_liveness (device_pk, last_seen)"
    " SELECT d, t FROM unnest(%s::int4[], %s::timestamptz[]) AS u(d, t) ORDER BY d"
    " ON CONFLICT (device_pk) DO UPDATE SET last_seen = EXCLUDED.last_seen"
    " WHERE device_liveness.last_seen < EXCLUDED.last_seen"
)


def _report(db: DatabaseSettings, pks: list[int]) -> None:
    with connect(db) as conn, conn.transaction():
        conn.execute(_UPSERT, (pks, [datetime.now(UTC) - timedelta(seconds=1)] * len(pks)))


def test_the_loop_records_coverage_from_the_liveness_changes(db: DatabaseSettings) -> None:
    catalog = load_catalog()
    with connect(db) as conn:
        load_registry(conn, generate(seed=3, scale=0.01))
        pks = [r[0] for r in conn.execute("SELECT device_pk FROM devices ORDER BY 1")]
    _report(db, pks[::3])
    storage = Settings().storage.model_copy(
        update={"refresh_interval_s": 0.2, "coverage_snapshot_interval_s": 0.2}
    )
    stop = threading.Event()
    worker = maintain.Maintainer(db, storage, StorageMode.POSTGRES, catalog, stop)
    worker.start()
    try:
        wait_for(lambda: worker.passes >= 2, timeout=60, what="two maintenance passes")
        # more devices report: the next passes take them from the change log
        _report(db, pks[1::3])
        seen = worker.passes
        wait_for(lambda: worker.passes >= seen + 2, timeout=60, what="two more passes")
    finally:
        stop.set()
        worker.join(timeout=30)
    last = worker.coverage.last
    assert last is not None
    assert not last.full, last.reason  # the registry was read once, at the first pass
    with connect(db) as conn:
        rows = conn.execute(
            "SELECT target_id, city_code, numerator, denominator, computed_at FROM coverage_daily"
        ).fetchall()
        as_of = max(r[4] for r in rows)
        conn.commit()
        full = coverage.compute(conn, catalog, as_of)
    assert {r[4] for r in rows} == {as_of}  # one snapshot, the last pass's
    recorded = {(r[0], r[1]): (r[2], r[3]) for r in rows}
    expected = {
        (tc.target.id, f.city_code): (f.numerator, f.denominator)
        for tc in full
        for f in (tc.province, *tc.cities)
    }
    assert recorded == expected
    # the devices that reported after the first passes are in the figures
    assert sum(n for n, _ in recorded.values()) > 0
