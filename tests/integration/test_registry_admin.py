"""The registry's administration against the real PostgreSQL: inventory import (idempotent,
all or nothing, audited), the lifecycle with effective dates, coverage of past days unchanged
by later changes, ingest refusing a decommissioned device's later readings, and the grants."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import psycopg
import pytest

from qilu.catalog import load_catalog
from qilu.contract import Envelope, Sector
from qilu.inventory import Diff, Inventory, parse
from qilu.registry import Device, Site
from qilu.settings import DatabaseSettings
from storage import audit, coverage, registry_admin
from storage.coverage import PROVINCE_TZ
from storage.db import connect
from storage.registry_admin import ImportSource, RegistryChangeError
from storage.registry_store import load_device_index
from stream.validate import Validator
from tests.helpers import scalar

FIX = Path(__file__).parents[1] / "fixtures" / "inventory"
CATALOG = load_catalog()
DAY1 = date(2026, 11, 30)
DAY2 = date(2026, 12, 1)


def _import(
    conn: psycopg.Connection[psycopg.rows.TupleRow],
    name: str,
    sector: Sector,
    *,
    effective: date = DAY1,
    dry_run: bool = False,
) -> Diff:
    data = (FIX / name).read_bytes()
    fmt: Literal["csv", "xlsx"] = "xlsx" if name.endswith(".xlsx") else "csv"
    inv = parse(data, sector, CATALOG, fmt=fmt)
    assert inv.ok, inv.errors
    src = ImportSource(name, hashlib.sha256(data).hexdigest())
    return registry_admin.import_inventory(
        conn, inv, actor="cli:test", effective=effective, source=src, dry_run=dry_run
    )


def test_import_is_idempotent_audited_and_dry_run_changes_nothing(db: DatabaseSettings) -> None:
    with connect(db) as conn:
        dry = _import(conn, "charging_ok.csv", Sector.CHARGING, dry_run=True)
        assert dry.summary()["devices_added"] == 325
        assert scalar(db, "SELECT count(*) FROM devices") == 0
        assert scalar(db, "SELECT count(*) FROM audit_log") == 0

        first = _import(conn, "charging_ok.csv", Sector.CHARGING)
        assert first.summary() == {
            "sites_added": 45,
            "sites_changed": 0,
            "sites_unchanged": 0,
            "devices_added": 325,
            "devices_changed": 0,
            "devices_unchanged": 0,
        }
        _import(conn, "substation_ok.xlsx", Sector.SUBSTATION)
        _import(conn, "ranch_ok.csv", Sector.RANCH)
    assert scalar(db, "SELECT count(*) FROM sites") == 45 + 50 + 15
    assert scalar(db, "SELECT count(*) FROM devices") == 325 + 237 + 322
    audited = scalar(db, "SELECT count(*) FROM audit_log")
    assert audited == (45 + 325) + (50 + 237) + (15 + 322) + 3  # + one row per import
    # the imported registry is valid from the effective date, not before
    assert scalar(db, "SELECT count(*) FROM device_versions WHERE valid_from = '2026-11-30'") == 884

    with connect(db) as conn:
        again = _import(conn, "charging_ok.csv", Sector.CHARGING, effective=DAY2)
    assert again.empty
    assert again.unchanged_devices == 325
    assert scalar(db, "SELECT count(*) FROM audit_log") == audited  # nothing recorded
    assert scalar(db, "SELECT count(*) FROM device_versions") == 884  # no new history

    with connect(db) as conn:
        entries = audit.query(conn, entity="import")
    assert [e.action for e in entries] == ["registry.import"] * 3
    assert entries[0].after is not None
    assert entries[0].after["devices_added"] == 325
    assert entries[0].after["file"] == "charging_ok.csv"


def test_a_refused_change_applies_nothing_of_the_file(db: DatabaseSettings) -> None:
    with connect(db) as conn:
        _import(conn, "charging_ok.csv", Sector.CHARGING)
        # one pile changes kind in the registry: the whole re-import must be refused
        conn.execute("UPDATE devices SET kind = 'transformer' WHERE device_id = 'CS370800-0001-01'")
        conn.execute("DELETE FROM devices WHERE device_id = 'CS370800-0001-02'")
        conn.commit()
        before = scalar(db, "SELECT count(*) FROM audit_log")
        d = _import(conn, "charging_ok.csv", Sector.CHARGING, effective=DAY2)
    assert [e.reason for e in d.errors] == [
        "device CS370800-0001-01 is a transformer, the file says charging_pile: a kind cannot "
        "change (decommission it and register a new id)"
    ]
    assert d.summary()["devices_added"] == 1  # what would have been added ...
    assert scalar(db, "SELECT count(*) FROM devices") == 324  # ... was not
    assert scalar(db, "SELECT count(*) FROM audit_log") == before


def test_lifecycle_with_effective_dates_history_and_audit(db: DatabaseSettings) -> None:
    site = Site("SS-T-1", Sector.SUBSTATION, "370200", "Test 220 kV", voltage_kv=220)
    other = Site("SS-T-2", Sector.SUBSTATION, "370200", "Test 110 kV", voltage_kv=110)
    with connect(db) as conn:
        registry_admin.add_site(conn, site, actor="cli:t", effective=DAY1)
        registry_admin.add_site(conn, other, actor="cli:t", effective=DAY1)
        registry_admin.add_device(
            conn, Device("SS-T-1-T1", "SS-T-1", "transformer"), actor="cli:t", effective=DAY1
        )
        registry_admin.add_device(
            conn, Device("SS-T-1-B1", "SS-T-1", "bus_meter"), actor="cli:t", effective=DAY1
        )
        with pytest.raises(RegistryChangeError, match="cannot belong to the substation site"):
            registry_admin.add_device(
                conn, Device("X", "SS-T-1", "collar"), actor="cli:t", effective=DAY1
            )
        registry_admin.move_device(conn, "SS-T-1-B1", "SS-T-2", actor="cli:t", effective=DAY2)
        registry_admin.move_site(conn, "SS-T-2", "370100", actor="cli:t", effective=DAY2)
        registry_admin.set_status(
            conn, "device", "SS-T-1-T1", "maintenance", actor="cli:t", effective=DAY2
        )
        with pytest.raises(RegistryChangeError, match="before the last change"):
            registry_admin.set_status(
                conn, "device", "SS-T-1-T1", "active", actor="cli:t", effective=DAY1
            )
        later = DAY2 + timedelta(days=3)
        registry_admin.set_status(
            conn, "device", "SS-T-1-T1", "active", actor="cli:t", effective=later
        )
        changed = registry_admin.set_status(
            conn, "site", "SS-T-1", "decommissioned", actor="cli:t", effective=later
        )
        assert [c.get("device_id", c.get("site_id")) for c in changed] == ["SS-T-1", "SS-T-1-T1"]
        with pytest.raises(RegistryChangeError, match="is decommissioned"):
            registry_admin.set_status(
                conn, "site", "SS-T-1", "maintenance", actor="cli:t", effective=later
            )
        with pytest.raises(RegistryChangeError, match="unknown device"):
            registry_admin.move_device(conn, "nope", "SS-T-2", actor="cli:t", effective=later)

        hist = registry_admin.history(conn, "device", "SS-T-1-T1")
        b1 = registry_admin.history(conn, "device", "SS-T-1-B1")
        entries = audit.query(conn, entity_id="SS-T-1-T1")
    assert [(v.valid_from, v.valid_to, v.state["status"]) for v in hist] == [
        (DAY1, DAY2, "active"),
        (DAY2, later, "maintenance"),
        (later, None, "decommissioned"),  # maintenance ended and decommissioned on one day
    ]
    assert [(v.valid_from, v.state["site_id"]) for v in b1] == [(DAY1, "SS-T-1"), (DAY2, "SS-T-2")]
    assert [e.action for e in entries] == [
        "device.add",
        "device.maintain",
        "device.resume",
        "device.decommission",
    ]
    last = entries[-1]
    assert last.actor == "cli:t"
    assert last.before is not None
    assert last.after is not None
    assert (last.before["status"], last.after["status"]) == ("active", "decommissioned")
    assert last.after["effective"] == later.isoformat()


def _at(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=PROVINCE_TZ)


def test_coverage_of_a_past_day_is_unchanged_by_a_later_decommissioning(
    db: DatabaseSettings,
) -> None:
    target = "charging-public-piles-2024"
    with connect(db) as conn:
        _import(conn, "charging_ok.csv", Sector.CHARGING, effective=DAY1)
        # every pile reported just before 23:00 of day 1
        conn.execute(
            "INSERT INTO device_liveness (device_pk, last_seen) SELECT device_pk, %s FROM devices",
            (_at(DAY1, 23) - timedelta(seconds=30),),
        )
        conn.commit()
        coverage.snapshot(conn, CATALOG, _at(DAY1, 23))
        pile = conn.execute(
            "SELECT d.device_id FROM devices d JOIN sites s USING (site_id)"
            " WHERE s.public AND s.networked ORDER BY 1 LIMIT 1"
        ).fetchone()
        assert pile is not None
        conn.commit()
        registry_admin.set_status(
            conn, "device", pile[0], "decommissioned", actor="cli:t", effective=DAY2
        )
        recomputed = {
            tc.target.id: tc.province for tc in coverage.compute(conn, CATALOG, _at(DAY1, 23))
        }
        conn.execute("UPDATE device_liveness SET last_seen = %s", (_at(DAY2, 23),))
        conn.commit()
        today = {tc.target.id: tc.province for tc in coverage.compute(conn, CATALOG, _at(DAY2, 23))}
    stored = scalar(
        db,
        "SELECT numerator FROM coverage_daily WHERE day = '2026-11-30'"
        " AND target_id = 'charging-public-piles-2024' AND city_code = '370000'",
    )
    assert stored > 0
    assert recomputed[target].numerator == stored  # yesterday's figure stands
    assert today[target].numerator == stored - 1  # today's counts the registry of today
    assert today[target].denominator == recomputed[target].denominator - 1


def test_ingest_refuses_a_decommissioned_devices_later_readings(db: DatabaseSettings) -> None:
    with connect(db) as conn:
        _import(conn, "ranch_ok.csv", Sector.RANCH, effective=DAY1)
        row = conn.execute("SELECT min(device_id) FROM devices").fetchone()
        conn.commit()
        assert row is not None
        dev = row[0]
        registry_admin.set_status(conn, "device", dev, "decommissioned", actor="t", effective=DAY2)
        idx = load_device_index(conn)
    cutoff = int(_at(DAY2, 0).timestamp() * 1_000_000)
    assert idx.retired_us == {dev: cutoff}
    v = Validator(idx.devices, idx.metrics, retired_us=idx.retired_us)
    kind = idx.devices[dev][1]
    metric = {"collar": "battery_pct"}.get(kind, "level_pct")
    env = Envelope(
        agent_id="a",
        boot_id="b",
        seq=1,
        sent_at_us=cutoff,
        devices=[dev, dev],
        metrics=[metric, metric],
        ts_us=[cutoff - 1_000_000, cutoff],
        values=[50.0, 50.0],
        qualities=[0, 0],
    )
    rows, rejected = v.validate(env, now_us=cutoff + 10**9)
    assert rows.ts_us == [cutoff - 1_000_000]  # measured before: a late delivery, accepted
    assert [(r.index, r.reason) for r in rejected] == [(1, "device_decommissioned")]


def test_api_role_may_administer_but_not_delete_or_rewrite_history(db: DatabaseSettings) -> None:
    with connect(db) as conn:
        # the migrations create the role (005)
        assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'qilu_api'").fetchone()
        conn.execute("SET ROLE qilu_api")
        conn.commit()
        assert _import(conn, "ranch_ok.csv", Sector.RANCH).summary()["devices_added"] == 322
        registry_admin.add_site(
            conn,
            Site("CS-API-1", Sector.CHARGING, "370300", "API station", public=True),
            actor="api:test",
            effective=DAY1,
        )
        registry_admin.add_device(
            conn, Device("CS-API-1-1", "CS-API-1", "charging_pile"), actor="api:t", effective=DAY1
        )
        registry_admin.set_status(
            conn, "site", "CS-API-1", "decommissioned", actor="api:t", effective=DAY2
        )
        for statement in (
            "DELETE FROM sites WHERE site_id = 'CS-API-1'",
            "UPDATE site_versions SET valid_to = NULL",
            "DELETE FROM audit_log",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute(statement)
        conn.execute("RESET ROLE")
        conn.execute("SET ROLE qilu_ingest")  # ingest reads the decommissioning dates
        conn.commit()
        assert set(load_device_index(conn).retired_us) == {"CS-API-1-1"}
    assert scalar(db, "SELECT count(*) FROM site_versions WHERE site_id = 'CS-API-1'") == 2
    assert scalar(db, "SELECT count(*) FROM audit_log WHERE actor LIKE 'api:%'") == 4


def test_an_import_that_changes_sites_and_moves_devices(db: DatabaseSettings) -> None:
    with connect(db) as conn:
        _import(conn, "charging_ok.csv", Sector.CHARGING, effective=DAY1)
    text = (FIX / "charging_ok.csv").read_bytes().decode("utf-8-sig")
    lines = text.splitlines()
    first = lines[1].split(",")  # CS370800-0001, its name, city, pile 01, ...
    other = next(line.split(",") for line in lines[1:] if line.split(",")[0] != first[0])
    edited = [lines[0]]
    for line in lines[1:]:
        cells = line.split(",")
        if cells[0] == first[0]:
            cells[1] = "改名后的充电站"  # the site's name changes on every one of its rows
            cells[2] = "烟台"  # and it moves to Yantai
        if cells[3] == other[3]:
            cells[:3] = first[0], "改名后的充电站", "烟台"  # one pile moves to that site
        edited.append(",".join(cells))
    data = ("\n".join(edited) + "\n").encode("gb18030")
    inv = parse(data, Sector.CHARGING, CATALOG)
    assert inv.ok, inv.errors
    src = ImportSource("edited.csv", hashlib.sha256(data).hexdigest())
    with connect(db) as conn:
        d = registry_admin.import_inventory(
            conn, inv, actor="cli:t", effective=DAY2, source=src, dry_run=False
        )
        site_hist = registry_admin.history(conn, "site", first[0])
        dev_hist = registry_admin.history(conn, "device", other[3])
        entries = audit.query(conn, entity_id=first[0])
    assert d.summary()["sites_changed"] == 1
    assert d.summary()["devices_changed"] == 1
    assert d.summary()["devices_unchanged"] == 324
    (_, _, change), *_ = d.changed_sites
    assert change["city_code"] == ("370800", "370600")
    assert [(v.valid_from, v.valid_to, v.state["city_code"]) for v in site_hist] == [
        (DAY1, DAY2, "370800"),
        (DAY2, None, "370600"),
    ]
    assert [v.state["site_id"] for v in dev_hist] == [other[0], first[0]]
    assert [e.action for e in entries] == ["site.add", "site.update"]
    assert entries[-1].before is not None
    assert entries[-1].after is not None
    assert entries[-1].before["name"] != entries[-1].after["name"] == "改名后的充电站"


def _others(conn: psycopg.Connection[psycopg.rows.TupleRow], sites: list[str]) -> list[Any]:
    """Every row of the registry's tables and history about sites other than ``sites``."""
    return [
        conn.execute(
            "SELECT s.*::text FROM sites s WHERE s.site_id <> ALL(%s) ORDER BY 1", (sites,)
        ).fetchall(),
        conn.execute(
            "SELECT d.*::text FROM devices d WHERE d.site_id <> ALL(%s) ORDER BY 1", (sites,)
        ).fetchall(),
        conn.execute(
            "SELECT v.*::text FROM site_versions v WHERE v.site_id <> ALL(%s) ORDER BY 1",
            (sites,),
        ).fetchall(),
        conn.execute(
            "SELECT v.*::text FROM device_versions v WHERE v.site_id <> ALL(%s) ORDER BY 1",
            (sites,),
        ).fetchall(),
    ]


def _tuples_read(conn: psycopg.Connection[psycopg.rows.TupleRow]) -> dict[str, int]:
    """Rows of sites and devices read so far in this transaction (its statements, triggers,
    key checks); the view may hold the session's earlier, unflushed counts: take a difference."""
    rows = conn.execute(
        "SELECT relname, coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)"
        " FROM pg_stat_xact_user_tables WHERE relname IN ('sites', 'devices')"
    ).fetchall()
    return {str(r[0]): int(r[1]) for r in rows}


def test_an_import_reads_only_the_sites_and_devices_it_names(db: DatabaseSettings) -> None:
    """A T/CEC 102 pull imports one operator's stations into a registry of the whole province:
    it must leave every other entity as it was and read only the rows it names, not the whole
    registry (at province scale ~270k devices, ~1 s, eight times a minute)."""
    with connect(db) as conn:
        _import(conn, "charging_ok.csv", Sector.CHARGING, effective=DAY1)
        _import(conn, "substation_ok.xlsx", Sector.SUBSTATION, effective=DAY1)
        _import(conn, "ranch_ok.csv", Sector.RANCH, effective=DAY1)
    full = parse((FIX / "charging_ok.csv").read_bytes(), Sector.CHARGING, CATALOG)
    site_a, site_b = sorted(full.sites)[:2]
    moved = min(d for d, dev in full.devices.items() if dev.site_id == site_b)
    # "one operator's" inventory: site A renamed, its piles, one pile of site B moved to A
    inv = Inventory(Sector.CHARGING, None)
    inv.sites[site_a] = replace(full.sites[site_a], name="改名后的充电站")
    for dev_id, dev in full.devices.items():
        if dev.site_id == site_a:
            inv.devices[dev_id] = dev
    inv.devices[moved] = Device(moved, site_a, full.devices[moved].kind)
    named = {site_a, site_b}
    with connect(db) as conn:
        before = _others(conn, sorted(named))
        n_sites = scalar(db, "SELECT count(*) FROM sites")
        n_devices = scalar(db, "SELECT count(*) FROM devices")
        audited = scalar(db, "SELECT count(*) FROM audit_log")
        conn.commit()  # the import's own transaction, counted alone below
        # the plan the import's statements would get on a registry of the province's size:
        # by key where they can, not a scan of 110 sites that fit in one page
        conn.execute("SET LOCAL enable_seqscan = off")  # opens the transaction around it
        base = _tuples_read(conn)
        d = registry_admin.import_inventory(
            conn,
            inv,
            actor="tcec102:test",
            effective=DAY2,
            source=ImportSource("tcec102/test/query_stations_info", "0" * 64),
            dry_run=False,
            ends_simulation=False,
        )
        # tuples this transaction read of each table (its statements, triggers, key checks)
        read = {t: n - base[t] for t, n in _tuples_read(conn).items()}
        conn.commit()
        after = _others(conn, sorted(named))
    assert d.summary() == {
        "sites_added": 0,
        "sites_changed": 1,
        "sites_unchanged": 0,
        "devices_added": 0,
        "devices_changed": 1,
        "devices_unchanged": len(inv.devices) - 1,
    }
    assert scalar(db, "SELECT count(*) FROM audit_log") == audited + 1 + 1 + 1
    assert after == before  # nothing about the other operators' sites changed
    # the registry holds 110 sites and 884 devices; the import read the one site it names
    # (its row, its update, the moved pile's key check) and its piles (their rows, the move)
    assert (n_sites, n_devices) == (110, 884)
    assert read["sites"] <= 3, read
    assert read["devices"] <= len(inv.devices) + 1, read
