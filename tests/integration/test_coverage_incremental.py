"""The incremental coverage (storage/coverage_incremental.py) equals a full recomputation
(storage.coverage.compute) on the real PostgreSQL after random liveness changes, late
readings, transactions that commit after a snapshot was taken, and registry changes; with
its rebuilds bounded (storage.coverage_rebuild_min_s), it equals the full recomputation of
the registry as its last build read it until the bound lets it rebuild, then the full one."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import TupleRow

from qilu.catalog import Catalog, load_catalog
from qilu.registry import generate
from qilu.settings import DatabaseSettings, Settings, StorageMode
from storage import coverage, maintain
from storage.coverage_incremental import IncrementalCoverage, Refresh
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

    inc = IncrementalCoverage(catalog, rebuild_min_s=0)  # the bound off: at once, as before
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


class _Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _last(inc: IncrementalCoverage) -> Refresh:
    assert inc.last is not None
    return inc.last


def _full_as_built(
    conn: psycopg.Connection[TupleRow], catalog: Catalog, now: datetime
) -> list[coverage.TargetCoverage]:
    """coverage.compute's queries at ``now`` with the dated registry as the test saved it at
    the model's last build (``built_sites``, ``built_devices``) and the liveness as it is:
    the registry put back in a transaction that is rolled back."""
    with conn.transaction(force_rollback=True):
        conn.execute(
            "DELETE FROM site_versions; INSERT INTO site_versions SELECT * FROM built_sites;"
            " DELETE FROM device_versions; INSERT INTO device_versions SELECT * FROM built_devices"
        )
        live = coverage.live_condition(conn)
        return [
            coverage.TargetCoverage(
                t, now, *coverage.figures(conn, catalog, coverage.build_query(t.measure, now, live))
            )
            for t in catalog.targets
        ]


def test_registry_changes_wait_for_the_bound_while_liveness_moves_on(
    db: DatabaseSettings,
) -> None:
    """storage.coverage_rebuild_min_s on: a new site with devices, new devices at existing
    sites and devices going into maintenance inside the bound do not rebuild the model; the
    liveness of the devices it knows still moves it (its figures equal the full computation
    of the registry as it was at the build, at each ``now``), and it says how long it has been
    behind. Once the bound has passed the next computation rebuilds, and its figures equal
    coverage.compute, the readings of the devices added meanwhile included."""
    catalog = load_catalog()
    rng = random.Random(18)
    with connect(db) as conn:
        load_registry(conn, generate(seed=3, scale=0.01))
        pks = [r[0] for r in conn.execute("SELECT device_pk FROM devices ORDER BY 1")]
        ids = [r[0] for r in conn.execute("SELECT device_id FROM devices ORDER BY 1")]
        conn.commit()
    now = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    with connect(db) as conn, conn.transaction():
        _write(conn, rng, pks, now, len(pks) // 2)

    clock = _Clock(1000.0)
    inc = IncrementalCoverage(catalog, rebuild_min_s=30.0, clock=clock)
    with connect(db) as conn:
        got = inc.compute(conn, now)
        r = _last(inc)
        assert (r.full, r.reason, r.registry_behind_s) == (True, "first computation", None)
        assert _as_tuples(got) == _as_tuples(coverage.compute(conn, catalog, now))
        with conn.transaction():  # the dated registry the build read, for _full_as_built
            conn.execute("CREATE TABLE built_sites AS SELECT * FROM site_versions")
            conn.execute("CREATE TABLE built_devices AS SELECT * FROM device_versions")

        added: list[int] = []
        behind: list[float | None] = []
        for i in range(12):  # 2 s of the clock each: 24 s, inside the bound
            clock.t += 2.0
            now += timedelta(seconds=rng.choice([0, 1, 1, 2, 5]))
            now += timedelta(microseconds=rng.randrange(1_000_000))
            with conn.transaction():
                if i == 1:  # a new site with devices, and new devices at existing sites
                    site = conn.execute(
                        "SELECT site_id FROM devices ORDER BY device_pk LIMIT 1"
                    ).fetchone()
                    assert site is not None
                    conn.execute(
                        "INSERT INTO sites (site_id, sector, city_code, name, public, networked,"
                        " voltage_kv, gis, one_key_control, smart, agri_base)"
                        " SELECT site_id || '-new', sector, city_code, name, public, networked,"
                        " voltage_kv, gis, one_key_control, smart, agri_base FROM sites"
                        " WHERE site_id = %s",
                        (site[0],),
                    )
                    added += [
                        row[0]
                        for row in conn.execute(
                            "INSERT INTO devices (device_id, site_id, kind)"
                            " SELECT device_id || '-new', site_id || '-new', kind FROM devices"
                            " WHERE site_id = %s"
                            " UNION ALL SELECT device_id || '-more', site_id, kind FROM devices"
                            " WHERE device_pk %% 7 = 0 RETURNING device_pk",
                            (site[0],),
                        )
                    ]
                if i in (4, 8):  # a device goes into maintenance today
                    conn.execute(
                        "UPDATE devices SET status = 'maintenance' WHERE device_id = %s",
                        (rng.choice(ids),),
                    )
                _write(conn, rng, pks + added, now, rng.randrange(50, 200))
            got = inc.compute(conn, now)
            r = _last(inc)
            assert not r.full, (i, r.reason)
            behind.append(r.registry_behind_s)
            assert _as_tuples(got) == _as_tuples(_full_as_built(conn, catalog, now)), i
        # the registry is newer than the model from the first change on: seen then, and for
        # how long since
        assert behind == [None] + [2.0 * k for k in range(11)]
        assert len(added) > 10
        # the changes matter: the registry as it is now counts otherwise
        assert _as_tuples(got) != _as_tuples(coverage.compute(conn, catalog, now))

        # the bound has passed since the build: the next computation rebuilds
        clock.t = 1030.0
        now += timedelta(seconds=1)
        with conn.transaction():
            _write(conn, rng, added, now, len(added) // 2)  # the new devices report
        got = inc.compute(conn, now)
        r = _last(inc)
        assert (r.full, r.reason, r.registry_behind_s) == (True, "the registry changed", None)
        assert _as_tuples(got) == _as_tuples(coverage.compute(conn, catalog, now))

        # a registry change right after that waits again; time going backwards does not
        clock.t += 1.0
        with conn.transaction():
            conn.execute(
                "UPDATE devices SET status = 'maintenance' WHERE device_id = %s",
                (rng.choice(ids),),
            )
        inc.compute(conn, now)
        r = _last(inc)
        assert (r.full, r.registry_behind_s) == (False, 0.0)
        earlier = now - timedelta(seconds=1)
        got = inc.compute(conn, earlier)
        r = _last(inc)
        assert (r.full, r.reason) == (True, "time went backwards")
        assert _as_tuples(got) == _as_tuples(coverage.compute(conn, catalog, earlier))


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


class _SettingProbe(psycopg.Cursor[TupleRow]):
    """Records, before each statement, the parallel workers the statement may use."""

    seen: list[str] = []  # noqa: RUF012 - one test reads it
    _probing = False

    def execute(self, query: Any, params: Any = None, **kw: Any) -> _SettingProbe:
        setting = isinstance(query, str) and query.lstrip().upper().startswith("SET")
        if not (_SettingProbe._probing or setting):
            _SettingProbe._probing = True
            try:
                got = self.connection.execute(
                    "SELECT current_setting('max_parallel_workers_per_gather')"
                ).fetchone()
                assert got is not None
                _SettingProbe.seen.append(str(got[0]))
            finally:
                _SettingProbe._probing = False
        super().execute(query, params, **kw)
        return self


def test_a_full_build_uses_no_parallel_workers(settings: Settings) -> None:
    """The build is background work beside the ingest: its membership queries run without
    parallel workers, and the session's setting is as it was afterwards."""
    catalog = load_catalog()
    with connect(settings.db) as conn:
        load_registry(conn, generate(seed=3, scale=0.01))
    with psycopg.connect(settings.db.conninfo(), cursor_factory=_SettingProbe) as conn:
        conn.execute("SET max_parallel_workers_per_gather = 2")
        conn.commit()
        _SettingProbe.seen = []
        inc = IncrementalCoverage(catalog, rebuild_min_s=0)
        inc.compute(conn, datetime.now(UTC))
        assert _last(inc).full
        # every target's membership query ran with the setting at 0
        assert _SettingProbe.seen.count("0") >= len(catalog.targets)
        row = conn.execute("SHOW max_parallel_workers_per_gather").fetchone()
        assert row is not None
        assert row[0] == "2"
