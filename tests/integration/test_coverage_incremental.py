"""The incremental coverage (storage/coverage_incremental.py) equals a full recomputation
(storage.coverage.compute) on the real PostgreSQL after random liveness changes, late
readings, transactions that commit after a snapshot was taken, and registry changes."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from qilu.catalog import load_catalog
from qilu.registry import generate
from qilu.settings import Settings, StorageMode
from storage import coverage, maintain
from storage.coverage_incremental import IncrementalCoverage
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


def _as_tuples(figures: list[coverage.TargetCoverage]) -> list[tuple[object, ...]]:
    return [(f.target.id, f.as_of, f.province, f.cities) for f in figures]


def _write(conn: object, rng: random.Random, pks: list[int], now: datetime, n: int) -> None:
    chosen = rng.sample(pks, n)
    # recent readings, late ones (older than what is stored: a no-op), ones ahead of now
    times = [now - timedelta(seconds=rng.uniform(-20, 1200)) for _ in chosen]
    conn.execute(_UPSERT, (chosen, times))  # type: ignore[attr-defined]


def test_incremental_equals_full_after_random_changes(settings: Settings) -> None:
    catalog = load_catalog()
    rng = random.Random(17)
    with connect(settings.db) as conn:
        load_registry(conn, generate(seed=3, scale=0.01))
        pks = [r[0] for r in conn.execute("SELECT device_pk FROM devices ORDER BY 1")]
        ids = [r[0] for r in conn.execute("SELECT device_id FROM devices ORDER BY 1")]
    now = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    with connect(settings.db) as conn, conn.transaction():
        _write(conn, rng, pks, now, len(pks) // 2)

    inc = IncrementalCoverage(catalog)
    rounds, incremental, flips = 40, 0, 0
    with connect(settings.db) as conn, connect(settings.db) as other:
        for i in range(rounds):
            now += timedelta(seconds=rng.choice([0, 1, 1, 1, 5, 30, 61, 119, 181]))
            now += timedelta(microseconds=rng.randrange(1_000_000))
            with conn.transaction():
                _write(conn, rng, pks, now, rng.randrange(0, 200))
            if i % 7 == 3:
                # a transaction that began before the snapshot and commits after it: its
                # rows must be picked up by the next computation
                _write(other, rng, pks, now, 50)
            got = inc.compute(conn, now)
            assert inc.last is not None
            incremental += not inc.last.full
            flips += inc.last.flips
            assert _as_tuples(got) == _as_tuples(coverage.compute(conn, catalog, now)), i
            if i % 7 == 3:
                other.commit()
                got = inc.compute(conn, now)
                assert _as_tuples(got) == _as_tuples(coverage.compute(conn, catalog, now)), i
            if i == 20:  # a registry change: a device goes into maintenance today
                with conn.transaction():
                    conn.execute(
                        "UPDATE devices SET status = 'maintenance' WHERE device_id = %s",
                        (rng.choice(ids),),
                    )
                got = inc.compute(conn, now)
                assert inc.last is not None
                assert inc.last.full
                assert inc.last.reason == "the registry changed"
                assert _as_tuples(got) == _as_tuples(coverage.compute(conn, catalog, now))
    assert incremental >= rounds - 2  # the first computation and nothing else in full
    assert flips > 100  # devices really went online and offline along the way


def test_maintenance_prunes_the_change_log_after_ten_minutes(settings: Settings) -> None:
    now = datetime.now(UTC)
    with connect(settings.db) as conn:
        conn.execute(
            "INSERT INTO liveness_changes (at, devices, seen_us) VALUES"
            " (%s, '{1}', '{1}'), (%s, '{2}', '{2}')",
            (now - timedelta(minutes=11), now - timedelta(minutes=9)),
        )
        conn.commit()
    report = maintain.maintain_once(
        settings.db, settings.storage, StorageMode.POSTGRES, load_catalog(), now=now
    )
    assert report.liveness_changes_pruned == 1
    with connect(settings.db) as conn:
        left = conn.execute("SELECT devices FROM liveness_changes").fetchall()
    assert left == [([2],)]


def test_gateways_follow_their_latest_reports_incrementally(settings: Settings) -> None:
    """A telecontrol gateway counts only while its latest report says link up and general
    interrogation complete (coverage.GATEWAYS_INTERROGATED): reports that flip those values
    move the incremental figures exactly as the full recomputation."""
    catalog = load_catalog()
    rng = random.Random(104)
    now = datetime.now(UTC).replace(microsecond=0)
    with connect(settings.db) as conn:
        load_registry(conn, generate(seed=3, scale=0.01))
        maintain.ensure_partitions(conn, settings.storage, now)
        gateways = [
            r[0]
            for r in conn.execute(
                "SELECT device_pk FROM devices WHERE kind = 'telecontrol_gateway' ORDER BY 1"
            )
        ]
        metrics = [
            r[0]
            for r in conn.execute(
                "SELECT metric_id FROM metrics WHERE key IN ('link_up', 'gi_complete')"
            )
        ]
        conn.commit()
    assert len(gateways) >= 10
    assert len(metrics) == 2

    def report(conn: object, at: datetime, n: int) -> None:
        chosen = rng.sample(gateways, n)
        for pk in chosen:
            healthy = rng.random() < 0.6
            for m in metrics:  # mostly both 1 or both 0; sometimes only one of them
                value = 1.0 if healthy or rng.random() < 0.2 else 0.0
                conn.execute(  # type: ignore[attr-defined]
                    "INSERT INTO readings (device_pk, metric_id, ts, value)"
                    " VALUES (%s, %s, %s, %s)",
                    (pk, m, at, value),
                )
        conn.execute(_UPSERT, (chosen, [at] * len(chosen)))  # type: ignore[attr-defined]

    inc = IncrementalCoverage(catalog)
    with connect(settings.db) as conn:
        with conn.transaction():
            report(conn, now, len(gateways) // 2)
        inc.compute(conn, now)
        for i in range(25):
            now += timedelta(seconds=rng.choice([1, 1, 20, 61]))
            with conn.transaction():
                report(conn, now, rng.randrange(1, 8))
            got = inc.compute(conn, now)
            assert inc.last is not None
            assert not inc.last.full
            assert _as_tuples(got) == _as_tuples(coverage.compute(conn, catalog, now)), i
