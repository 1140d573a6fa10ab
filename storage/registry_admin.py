"""Registry administration in SQL: inventory import, lifecycle changes, history, export.

Every change runs in one transaction that also writes its audit rows (storage/audit.py) and
sets the change's effective date (``qilu.effective_date``, read by the history triggers of
migration 041). The rules (docs/registry.md):

* an import adds and updates sites and devices, never removes; it refuses to change a site's
  sector or a device's kind, and to change anything decommissioned;
* lifecycle: active <-> maintenance -> decommissioned, which is final; decommissioning a site
  decommissions its devices on the same date;
* a change may not take effect before the entity's last change (the trigger refuses it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal

import psycopg
from psycopg.rows import TupleRow

from qilu.contract import Sector
from qilu.devices import KINDS
from qilu.errors import QiluError
from qilu.inventory import Current, Diff, EndedSimulation, Inventory, Status, diff
from qilu.registry import Device, Site
from storage import audit, trajectories
from storage.registry_store import SITE_COLS
from storage.restore_points import create_restore_point, restore_point_name

logger = logging.getLogger(__name__)

SINCE_EVER = date.min  # valid_from of what was registered without an effective date
Entity = Literal["site", "device"]


class RegistryChangeError(QiluError):
    """A registry change is refused; ``status`` is the HTTP status that fits (404 or 409)."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


@contextmanager
def _tx(conn: psycopg.Connection[TupleRow]) -> Iterator[psycopg.Cursor[TupleRow]]:
    """A transaction whose refusals by the database (the history trigger's effective-date
    check, a foreign key) become :class:`RegistryChangeError`."""
    try:
        with conn.transaction(), conn.cursor() as cur:
            yield cur
    except (psycopg.errors.CheckViolation, psycopg.errors.ForeignKeyViolation) as exc:
        raise RegistryChangeError(str(exc).splitlines()[0]) from exc


def _effective(cur: psycopg.Cursor[TupleRow], effective: date) -> None:
    cur.execute("SELECT set_config('qilu.effective_date', %s, true)", (effective.isoformat(),))


def site_state(site: Site, status: str) -> dict[str, Any]:
    d = asdict(site)
    d["sector"] = site.sector.value
    d["status"] = status
    return d


def device_state(dev: Device, status: str) -> dict[str, Any]:
    return {"device_id": dev.device_id, "site_id": dev.site_id, "kind": dev.kind, "status": status}


def _site(row: tuple[Any, ...]) -> Site:
    return Site(row[0], Sector(row[1]), *row[2:11])


# -- reading ----------------------------------------------------------------------------------
def current(
    conn: psycopg.Connection[TupleRow],
    *,
    site_ids: Collection[str] | None = None,
    device_ids: Collection[str] | None = None,
) -> Current:
    """The registry as it is: the whole of it (one query per table: ~1 s at province scale),
    or, given ``site_ids`` and ``device_ids``, only those sites and devices (ids the registry
    does not know are simply absent)."""
    cols = ", ".join(SITE_COLS)
    site_sql = f"SELECT {cols}, status FROM sites"  # noqa: S608 - fixed names
    device_sql = "SELECT device_id, site_id, kind, status FROM devices"
    scoped = site_ids is not None or device_ids is not None
    site_params: tuple[list[str], ...] = ()
    device_params: tuple[list[str], ...] = ()
    if scoped:
        site_sql += " WHERE site_id = ANY(%s)"
        device_sql += " WHERE device_id = ANY(%s)"
        site_params = (sorted(site_ids or ()),)
        device_params = (sorted(device_ids or ()),)
    sites: dict[str, Site] = {}
    site_status: dict[str, str] = {}
    for r in conn.execute(site_sql, site_params):
        sites[r[0]] = _site(r)
        site_status[r[0]] = r[11]
    devices: dict[str, Device] = {}
    device_status: dict[str, str] = {}
    for r in conn.execute(device_sql, device_params):
        devices[r[0]] = Device(r[0], r[1], r[2])
        device_status[r[0]] = r[3]
    return Current(sites, site_status, devices, device_status)


def current_for(conn: psycopg.Connection[TupleRow], inv: Inventory) -> Current:
    """What :func:`qilu.inventory.diff` and the import need of the registry for ``inv``: the
    sites and devices the file names, and the sites its devices are to be at. An import adds
    and updates and never removes, so nothing the file does not name matters to it."""
    site_ids = set(inv.sites)
    site_ids.update(dev.site_id for dev in inv.devices.values())
    return current(conn, site_ids=site_ids, device_ids=inv.devices.keys())


@dataclass(frozen=True, slots=True)
class Version:
    valid_from: date  # SINCE_EVER for "always"
    valid_to: date | None  # exclusive; None = current
    state: dict[str, Any]


def history(conn: psycopg.Connection[TupleRow], entity: Entity, entity_id: str) -> list[Version]:
    """Every state the site or device has had, oldest first; 404 if unknown."""
    if entity == "site":
        cols = ", ".join(f"v.{c}" for c in SITE_COLS)
        rows = conn.execute(
            f"SELECT v.valid_from, v.valid_to, {cols}, v.status FROM site_versions v"  # noqa: S608
            " WHERE v.site_id = %s ORDER BY v.valid_from",
            (entity_id,),
        ).fetchall()
        out = [Version(r[0], r[1], site_state(_site(r[2:13]), r[13])) for r in rows]
    else:
        rows = conn.execute(
            "SELECT v.valid_from, v.valid_to, d.device_id, v.site_id, v.kind, v.status"
            " FROM device_versions v JOIN devices d ON d.device_pk = v.device_pk"
            " WHERE d.device_id = %s ORDER BY v.valid_from",
            (entity_id,),
        ).fetchall()
        out = [Version(r[0], r[1], device_state(Device(r[2], r[3], r[4]), r[5])) for r in rows]
    if not out:
        raise RegistryChangeError(f"unknown {entity} {entity_id!r}", 404)
    return out


def get_site(
    conn: psycopg.Connection[TupleRow], site_id: str, *, lock: bool = False
) -> tuple[Site, str]:
    cols = ", ".join(SITE_COLS)
    row = conn.execute(
        f"SELECT {cols}, status FROM sites WHERE site_id = %s"  # noqa: S608 - fixed names
        + (" FOR UPDATE" if lock else ""),
        (site_id,),
    ).fetchone()
    if row is None:
        raise RegistryChangeError(f"unknown site {site_id!r}", 404)
    return _site(row), str(row[11])


def get_device(
    conn: psycopg.Connection[TupleRow], device_id: str, *, lock: bool = False
) -> tuple[Device, str]:
    row = conn.execute(
        "SELECT device_id, site_id, kind, status FROM devices WHERE device_id = %s"  # noqa: S608
        + (" FOR UPDATE" if lock else ""),
        (device_id,),
    ).fetchone()
    if row is None:
        raise RegistryChangeError(f"unknown device {device_id!r}", 404)
    return Device(row[0], row[1], row[2]), str(row[3])


def site_devices(conn: psycopg.Connection[TupleRow], site_id: str) -> list[tuple[Device, str]]:
    rows = conn.execute(
        "SELECT device_id, site_id, kind, status FROM devices WHERE site_id = %s ORDER BY 1",
        (site_id,),
    ).fetchall()
    return [(Device(r[0], r[1], r[2]), str(r[3])) for r in rows]


def export(conn: psycopg.Connection[TupleRow], sector: Sector) -> tuple[list[Site], list[Device]]:
    """The sector's sites and devices that are not decommissioned, in id order."""
    cols = ", ".join(SITE_COLS)
    sites = [
        _site(r)
        for r in conn.execute(
            f"SELECT {cols} FROM sites WHERE sector = %s"  # noqa: S608 - fixed names
            " AND status <> 'decommissioned' ORDER BY site_id",
            (sector.value,),
        )
    ]
    devices = [
        Device(*r)
        for r in conn.execute(
            "SELECT d.device_id, d.site_id, d.kind FROM devices d"
            " JOIN sites s ON s.site_id = d.site_id WHERE s.sector = %s"
            " AND d.status <> 'decommissioned' ORDER BY d.device_id",
            (sector.value,),
        )
    ]
    return sites, devices


# -- import -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ImportSource:
    name: str  # file name as given
    sha256: str


def import_inventory(
    conn: psycopg.Connection[TupleRow],
    inv: Inventory,
    *,
    actor: str,
    effective: date,
    source: ImportSource,
    dry_run: bool,
    on_diff: Callable[[Diff], None] | None = None,
    progress: Callable[[str], None] | None = None,
    ends_simulation: bool = True,
) -> Diff:
    """Diff a valid inventory against the registry and, unless ``dry_run`` or the diff has
    errors, apply it in one transaction (writers are locked out meanwhile, readers are not).
    ``on_diff`` sees the diff before anything is written; ``progress`` gets a line per step
    of the transaction. Applying an empty diff writes nothing, not even an audit row.

    An operator's inventory (``qilu registry import``, the admin API) applied to a registry
    the simulation generated ends the simulation (``Diff.ends_simulation``, ADR 0013).
    ``ends_simulation=False`` is for imports that are part of whatever registry is there:
    the charging operators' pulls (interconnect/tcec102/pull.py), which ``qilu run`` itself
    starts against simulated operators."""
    if not inv.ok:
        raise RegistryChangeError(f"the inventory has {inv.error_count} bad row(s)", 422)
    with _tx(conn) as cur:
        if not dry_run:
            cur.execute("LOCK TABLE sites, devices IN SHARE ROW EXCLUSIVE MODE")
        now = current_for(conn, inv)
        d = diff(inv, now)
        if ends_simulation and not (d.errors or d.empty):
            d.ends_simulation = trajectories.simulation_to_end(conn)
        if on_diff is not None:
            on_diff(d)
        if dry_run or d.errors or d.empty:
            return d
        _effective(cur, effective)
        # a point to go back to if the import was wrong (docs/operations.md)
        name = restore_point_name("import", datetime.now(UTC))
        # None: the server cannot (the test engine, no privilege, wal_level minimal)
        point = name if create_restore_point(conn, name) is not None else None
        _apply(cur, d, actor, effective, now, progress or (lambda _: None))
        import_id = f"{inv.sector.value}:{source.sha256[:16]}"
        audit.record(
            cur,
            actor=actor,
            action="registry.import",
            entity="import",
            entity_id=import_id,
            before=None,
            after={
                "file": source.name,
                "sha256": source.sha256,
                "sector": inv.sector.value,
                "effective": effective.isoformat(),
                # `qilu restore --point` with it goes back to just before this import
                "restore_point": point,
                **d.summary(),
            },
        )
        ended = trajectories.end_simulation(conn) if ends_simulation else None
        if ended is not None:
            d.ends_simulation = ended[0]
            audit.record(
                cur,
                actor=actor,
                action="registry.simulation_ended",
                entity="import",
                entity_id=import_id,
                before=ended[1],
                after=None,
            )
    logger.info(
        "inventory %s applied: %s; restore point before it: %s",
        source.name,
        d.summary(),
        point or "none (the server cannot create one)",
    )
    if d.ends_simulation is not None:
        logger.info(
            "the registry was a simulated one: %s",
            simulation_ended_text(d.ends_simulation),
        )
    return d


def simulation_ended_text(ended: EndedSimulation, *, dry_run: bool = False) -> str:
    """One sentence for the operator: what ending the simulation removes (ADR 0013)."""
    shares = ", ".join(f"{k} {v:.1%}" for k, v in sorted(ended.shares.items()))
    if dry_run:
        head = "this import would end the simulated registry: thresholds would stop being"
        tail = f"and the {ended.synthetic_rows:,} modelled coverage rows would be deleted"
    else:
        head = "this import ended the simulated registry: thresholds are no longer"
        tail = f"and the {ended.synthetic_rows:,} modelled coverage rows were deleted"
    return (
        f"{head} scaled to its share of the province ({shares}), {tail}; the simulated "
        "sites stay registered (decommission them, or import into a new database)"
    )


def _apply(
    cur: psycopg.Cursor[TupleRow],
    d: Diff,
    actor: str,
    effective: date,
    now: Current,
    progress: Callable[[str], None],
) -> None:
    cols = ", ".join(SITE_COLS)
    eff = effective.isoformat()
    audit_rows: list[tuple[str, str, audit.Entity, str, str | None, str | None]] = []

    def site_row(s: Site) -> tuple[Any, ...]:
        return (s.site_id, s.sector.value, s.city_code, s.name, s.public, s.networked,
                s.voltage_kv, s.gis, s.one_key_control, s.smart, s.agri_base)  # fmt: skip

    if d.added_sites or d.changed_sites:
        cur.execute(f"CREATE TEMP TABLE _imp_sites AS SELECT {cols} FROM sites LIMIT 0")  # noqa: S608
        with cur.copy(f"COPY _imp_sites ({cols}) FROM STDIN") as copy:
            for s in d.added_sites:
                copy.write_row(site_row(s))
        cur.execute(f"INSERT INTO sites ({cols}) SELECT {cols} FROM _imp_sites")  # noqa: S608
        cur.execute("TRUNCATE _imp_sites")
        with cur.copy(f"COPY _imp_sites ({cols}) FROM STDIN") as copy:
            for _, s, _ in d.changed_sites:
                copy.write_row(site_row(s))
        # statistics of the few rows: the join then looks them up by key, not the whole table
        cur.execute("ANALYZE _imp_sites")
        sets = ", ".join(f"{c} = u.{c}" for c in SITE_COLS[2:])
        cur.execute(
            f"UPDATE sites s SET {sets} FROM _imp_sites u WHERE s.site_id = u.site_id"  # noqa: S608
        )
        cur.execute("DROP TABLE _imp_sites")
        progress(f"  sites written: {len(d.added_sites):,} added, {len(d.changed_sites):,} changed")
        for s in d.added_sites:
            after = {**site_state(s, "active"), "effective": eff}
            audit_rows.append((actor, "site.add", "site", s.site_id, None, json.dumps(after)))
        for old, new, _ in d.changed_sites:
            status = now.site_status[old.site_id]
            before = json.dumps(site_state(old, status))
            after_s = json.dumps({**site_state(new, status), "effective": eff})
            audit_rows.append((actor, "site.update", "site", new.site_id, before, after_s))
    if d.added_devices or d.changed_devices:
        cur.execute("CREATE TEMP TABLE _imp_devices (device_id text, site_id text, kind text)")
        with cur.copy("COPY _imp_devices (device_id, site_id, kind) FROM STDIN") as copy:
            for dev in d.added_devices:
                copy.write_row((dev.device_id, dev.site_id, dev.kind))
        cur.execute(
            "INSERT INTO devices (device_id, site_id, kind)"
            " SELECT device_id, site_id, kind FROM _imp_devices"
        )
        cur.execute("TRUNCATE _imp_devices")
        with cur.copy("COPY _imp_devices (device_id, site_id, kind) FROM STDIN") as copy:
            for _, dev, _ in d.changed_devices:
                copy.write_row((dev.device_id, dev.site_id, dev.kind))
        cur.execute("ANALYZE _imp_devices")
        cur.execute(
            "UPDATE devices d SET site_id = u.site_id FROM _imp_devices u"
            " WHERE d.device_id = u.device_id"
        )
        cur.execute("DROP TABLE _imp_devices")
        progress(
            f"  devices written: {len(d.added_devices):,} added, "
            f"{len(d.changed_devices):,} moved (history kept)"
        )
        for dev in d.added_devices:
            after = {**device_state(dev, "active"), "effective": eff}
            audit_rows.append(
                (actor, "device.add", "device", dev.device_id, None, json.dumps(after))
            )
        for old_d, new_d, _ in d.changed_devices:
            status = now.device_status[old_d.device_id]
            after = {**device_state(new_d, status), "effective": eff}
            audit_rows.append(
                (
                    actor,
                    "device.move",
                    "device",
                    new_d.device_id,
                    json.dumps(device_state(old_d, status)),
                    json.dumps(after),
                )
            )
    audit.record_many(cur, audit_rows)
    progress(f"  audit log: {len(audit_rows):,} rows; committing")


# -- lifecycle --------------------------------------------------------------------------------
def _check_effective(effective: date, since: date | None) -> None:
    if since is not None and effective < since:
        raise RegistryChangeError(f"effective date {effective} is before the last change ({since})")


def _last_change(cur: psycopg.Cursor[TupleRow], entity: Entity, entity_id: str) -> date | None:
    if entity == "site":
        q = "SELECT valid_from FROM site_versions WHERE site_id = %s AND valid_to IS NULL"
    else:
        q = (
            "SELECT v.valid_from FROM device_versions v JOIN devices d USING (device_pk)"
            " WHERE d.device_id = %s AND v.valid_to IS NULL"
        )
    row = cur.execute(q, (entity_id,)).fetchone()
    return row[0] if row else None


def add_site(
    conn: psycopg.Connection[TupleRow], site: Site, *, actor: str, effective: date
) -> dict[str, Any]:
    cols = ", ".join(SITE_COLS)
    with _tx(conn) as cur:
        if cur.execute("SELECT 1 FROM sites WHERE site_id = %s", (site.site_id,)).fetchone():
            raise RegistryChangeError(f"site {site.site_id!r} exists already")
        if not cur.execute("SELECT 1 FROM cities WHERE code = %s", (site.city_code,)).fetchone():
            raise RegistryChangeError(f"unknown city code {site.city_code!r}", 422)
        _effective(cur, effective)
        state = site_state(site, "active")
        cur.execute(
            f"INSERT INTO sites ({cols}) VALUES ({', '.join(['%s'] * len(SITE_COLS))})",  # noqa: S608
            [state[c] for c in SITE_COLS],
        )
        after = {**state, "effective": effective.isoformat()}
        audit.record(
            cur, actor=actor, action="site.add", entity="site", entity_id=site.site_id,
            before=None, after=after,
        )  # fmt: skip
    return after


def add_device(
    conn: psycopg.Connection[TupleRow], dev: Device, *, actor: str, effective: date
) -> dict[str, Any]:
    if dev.kind not in KINDS:
        raise RegistryChangeError(f"unknown device kind {dev.kind!r}", 422)
    with _tx(conn) as cur:
        site, status = get_site(conn, dev.site_id, lock=True)
        _usable_site(site, status, dev.kind)
        if cur.execute("SELECT 1 FROM devices WHERE device_id = %s", (dev.device_id,)).fetchone():
            raise RegistryChangeError(f"device {dev.device_id!r} exists already")
        _effective(cur, effective)
        cur.execute(
            "INSERT INTO devices (device_id, site_id, kind) VALUES (%s, %s, %s)",
            (dev.device_id, dev.site_id, dev.kind),
        )
        after = {**device_state(dev, "active"), "effective": effective.isoformat()}
        audit.record(
            cur, actor=actor, action="device.add", entity="device", entity_id=dev.device_id,
            before=None, after=after,
        )  # fmt: skip
    return after


def _usable_site(site: Site, status: str, kind: str) -> None:
    if status == "decommissioned":
        raise RegistryChangeError(f"site {site.site_id} is decommissioned")
    if KINDS[kind].sector is not site.sector:
        raise RegistryChangeError(
            f"a {kind} device cannot belong to the {site.sector} site {site.site_id}"
        )


def move_device(
    conn: psycopg.Connection[TupleRow],
    device_id: str,
    site_id: str,
    *,
    actor: str,
    effective: date,
) -> dict[str, Any]:
    with _tx(conn) as cur:
        dev, status = get_device(conn, device_id, lock=True)
        if status == "decommissioned":
            raise RegistryChangeError(f"device {device_id} is decommissioned: it cannot move")
        if dev.site_id == site_id:
            raise RegistryChangeError(f"device {device_id} is at site {site_id} already")
        site, site_status = get_site(conn, site_id, lock=True)
        _usable_site(site, site_status, dev.kind)
        _check_effective(effective, _last_change(cur, "device", device_id))
        _effective(cur, effective)
        cur.execute("UPDATE devices SET site_id = %s WHERE device_id = %s", (site_id, device_id))
        moved = Device(dev.device_id, site_id, dev.kind)
        after = {**device_state(moved, status), "effective": effective.isoformat()}
        audit.record(
            cur, actor=actor, action="device.move", entity="device", entity_id=device_id,
            before=device_state(dev, status), after=after,
        )  # fmt: skip
    return after


def move_site(
    conn: psycopg.Connection[TupleRow],
    site_id: str,
    city_code: str,
    *,
    actor: str,
    effective: date,
) -> dict[str, Any]:
    with _tx(conn) as cur:
        site, status = get_site(conn, site_id, lock=True)
        if status == "decommissioned":
            raise RegistryChangeError(f"site {site_id} is decommissioned: it cannot move")
        if site.city_code == city_code:
            raise RegistryChangeError(f"site {site_id} is in {city_code} already")
        if not cur.execute("SELECT 1 FROM cities WHERE code = %s", (city_code,)).fetchone():
            raise RegistryChangeError(f"unknown city code {city_code!r}", 422)
        _check_effective(effective, _last_change(cur, "site", site_id))
        _effective(cur, effective)
        cur.execute("UPDATE sites SET city_code = %s WHERE site_id = %s", (city_code, site_id))
        before = site_state(site, status)
        after = {**before, "city_code": city_code, "effective": effective.isoformat()}
        audit.record(
            cur, actor=actor, action="site.move", entity="site", entity_id=site_id,
            before=before, after=after,
        )  # fmt: skip
    return after


_ALLOWED: Mapping[Status, frozenset[str]] = {
    "maintenance": frozenset({"active"}),
    "active": frozenset({"maintenance"}),
    "decommissioned": frozenset({"active", "maintenance"}),
}
_ACTION = {"maintenance": "maintain", "active": "resume", "decommissioned": "decommission"}


def set_status(
    conn: psycopg.Connection[TupleRow],
    entity: Entity,
    entity_id: str,
    status: Status,
    *,
    actor: str,
    effective: date,
) -> list[dict[str, Any]]:
    """Put a site or device in maintenance, back in service, or decommission it (a site with
    its devices). Returns the audit ``after`` of every entity changed."""
    action = _ACTION[status]
    changed: list[dict[str, Any]] = []
    with _tx(conn) as cur:
        if entity == "site":
            site, old = get_site(conn, entity_id, lock=True)
            before: dict[str, Any] = site_state(site, old)
        else:
            dev, old = get_device(conn, entity_id, lock=True)
            before = device_state(dev, old)
        if old not in _ALLOWED[status]:
            raise RegistryChangeError(f"{entity} {entity_id} is {old}: it cannot {action}")
        _check_effective(effective, _last_change(cur, entity, entity_id))
        _effective(cur, effective)
        eff = effective.isoformat()
        if entity == "site" and status == "decommissioned":
            for d, d_status in site_devices(conn, entity_id):
                if d_status == "decommissioned":
                    continue
                _check_effective(effective, _last_change(cur, "device", d.device_id))
                d_after = {**device_state(d, status), "effective": eff}
                audit.record(
                    cur, actor=actor, action=f"device.{action}", entity="device",
                    entity_id=d.device_id, before=device_state(d, d_status), after=d_after,
                )  # fmt: skip
                changed.append(d_after)
            cur.execute(
                "UPDATE devices SET status = 'decommissioned'"
                " WHERE site_id = %s AND status <> 'decommissioned'",
                (entity_id,),
            )
        table, key = ("sites", "site_id") if entity == "site" else ("devices", "device_id")
        cur.execute(
            f"UPDATE {table} SET status = %s WHERE {key} = %s",  # noqa: S608 - fixed names
            (status, entity_id),
        )
        after = {**before, "status": status, "effective": eff}
        audit.record(
            cur, actor=actor, action=f"{entity}.{action}", entity=entity, entity_id=entity_id,
            before=before, after=after,
        )  # fmt: skip
        changed.insert(0, after)
    return changed


def device_rows(devs: Iterable[tuple[Device, str]]) -> list[dict[str, Any]]:
    return [device_state(d, s) for d, s in devs]
