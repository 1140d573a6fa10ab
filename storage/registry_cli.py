"""``qilu registry import|export|add|move|maintain|resume|decommission|show|history`` and
``qilu audit``: the registry's administration from the command line (docs/registry.md).

Every change is recorded in the audit log as ``cli:<os user>`` and takes effect on
``--effective`` (default: today in the province, China Standard Time).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from qilu.catalog import load_catalog
from qilu.contract import Sector
from qilu.devices import KINDS
from qilu.errors import ConfigError
from qilu.inventory import (
    COLUMN_SETS,
    Diff,
    Inventory,
    InventoryError,
    city_lookup,
    detect_format,
    export_rows,
    header,
    parse,
    parse_bool,
    to_csv,
)
from qilu.registry import Device, Site
from qilu.settings import Settings
from storage import audit, registry_admin
from storage.coverage import province_day
from storage.db import connect

SECTORS = [s.value for s in Sector]
ENTITIES = ("site", "device")


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from exc


def _effective_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--effective",
        type=_date,
        default=None,
        metavar="YYYY-MM-DD",
        help="the day the change takes effect (default: today, China Standard Time); coverage "
        "of earlier days keeps counting the registry as it was",
    )


def _columns_help() -> str:
    lines = []
    for sector, cols in COLUMN_SETS.items():
        names = ", ".join(f"{c.en}/{c.zh}{'' if c.required else ' (optional)'}" for c in cols)
        lines.append(f"  {sector}: {names}")
    return "\n".join(lines)


def add_actions(rsub: Any) -> None:
    """The registry's administration actions, added to ``qilu registry`` (storage/cli.py)."""
    _add_import_export(rsub)
    _add_lifecycle(rsub)


def _add_import_export(rsub: Any) -> None:
    p = rsub.add_parser(
        "import",
        help="import sites and devices from a CSV or XLSX inventory",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Validate an inventory row by row and apply it in one transaction: new sites and "
            "devices are added, changed ones updated (a device's site, a site's attributes); "
            "nothing is removed. Any bad row (reported with its line number) or refused change "
            "applies nothing. The diff is printed before anything is written; --dry-run stops "
            "there. Importing the same file again changes nothing. In a database whose "
            "registry the simulation generated (`qilu run`), an import that changes something "
            "ends the simulation: thresholds are no longer scaled to its share of the province "
            "and its modelled coverage history is deleted (said, and audited).\n\n"
            "Columns (English or Chinese header; one row per device, the site's columns "
            "repeated; an empty device_id declares a site without devices):\n"
            + _columns_help()
            + "\n\nSee docs/registry.md."
        ),
    )
    p.add_argument("file", type=Path, help="the inventory (.csv or .xlsx)")
    p.add_argument("--sector", required=True, choices=SECTORS, help="the inventory's sector")
    p.add_argument(
        "--encoding",
        default=None,
        help="CSV encoding (default: UTF-8 with or without BOM, else GB18030)",
    )
    p.add_argument("--format", choices=("csv", "xlsx"), default=None, help="default: by name")
    p.add_argument("--dry-run", action="store_true", help="print the diff, change nothing")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument(
        "--changes", type=int, default=20, metavar="N", help="list up to N changes (default 20)"
    )
    _effective_arg(p)
    p.set_defaults(handler=_import)

    p = rsub.add_parser(
        "export",
        help="write a sector's sites and devices in the import column set",
        description="CSV on stdout (or --output FILE, .xlsx for a workbook); decommissioned "
        "sites and devices are left out. Importing the export again changes nothing.",
    )
    p.add_argument("--sector", required=True, choices=SECTORS)
    p.add_argument("--lang", choices=("en", "zh"), default="en", help="header language")
    p.add_argument("--output", "-o", type=Path, default=None, help="file (.csv or .xlsx)")
    p.set_defaults(handler=_export)


def _add_lifecycle(rsub: Any) -> None:
    add = rsub.add_parser("add", help="add one site or device")
    asub = add.add_subparsers(dest="what", required=True, metavar="site|device")
    s = asub.add_parser(
        "site",
        help="add a site",
        description="Attributes as in the import: --attr public=true --attr voltage_kv=220.",
    )
    s.add_argument("site_id")
    s.add_argument("--sector", required=True, choices=SECTORS)
    s.add_argument("--city", required=True, help="code (370200) or name (青岛, Qingdao)")
    s.add_argument("--name", required=True, help="the site's name")
    s.add_argument("--attr", action="append", default=[], metavar="KEY=VALUE")
    _effective_arg(s)
    s.set_defaults(handler=_add_site)
    d = asub.add_parser("device", help="add a device to a site")
    d.add_argument("device_id")
    d.add_argument("--site", required=True, help="the site it belongs to")
    d.add_argument("--kind", required=True, choices=sorted(KINDS))
    _effective_arg(d)
    d.set_defaults(handler=_add_device)

    mv = rsub.add_parser(
        "move",
        help="move a device to another site, or a site to another city",
        description="qilu registry move device ID --site SITE | move site ID --city CITY",
    )
    mv.add_argument("what", choices=ENTITIES)
    mv.add_argument("id")
    mv.add_argument("--site", default=None, help="device: the new site")
    mv.add_argument("--city", default=None, help="site: the new city (code or name)")
    _effective_arg(mv)
    mv.set_defaults(handler=_move)

    for action, status, text in (
        ("maintain", "maintenance", "put a site or device in maintenance (not counted)"),
        ("resume", "active", "put a site or device in maintenance back in service"),
        ("decommission", "decommissioned", "decommission a site (with its devices) or device"),
    ):
        a = rsub.add_parser(
            action,
            help=text,
            description=text + ". Coverage counts only what is in service on a day; "
            "decommissioning is final, and a decommissioned device's readings time-stamped "
            "from the effective day on are dead-lettered (device_decommissioned).",
        )
        a.add_argument("what", choices=ENTITIES)
        a.add_argument("id")
        _effective_arg(a)
        a.set_defaults(handler=_status, status=status)

    sh = rsub.add_parser("show", help="a site (with its devices) or a device, as it is now")
    sh.add_argument("what", choices=ENTITIES)
    sh.add_argument("id")
    sh.set_defaults(handler=_show)
    hi = rsub.add_parser("history", help="every state a site or device has had, with dates")
    hi.add_argument("what", choices=ENTITIES)
    hi.add_argument("id")
    hi.set_defaults(handler=_history)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "audit",
        help="query the audit log (who changed what, when, before and after)",
        description="Oldest first. Page with --after-id (the last audit_id printed).",
    )
    p.add_argument(
        "--entity",
        choices=("site", "device", "agent", "api_key", "import", "operator", "reported_figure"),
        help="only this kind of entity",
    )
    p.add_argument("--id", dest="entity_id", default=None, help="the entity's id")
    p.add_argument("--actor", default=None, help="e.g. cli:alice or api:<key id>")
    p.add_argument("--since", type=_date, default=None, metavar="YYYY-MM-DD")
    p.add_argument("--after-id", type=int, default=None, help="cursor: rows after this id")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(handler=_audit)


# -- handlers ---------------------------------------------------------------------------------
def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _progress(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _effective(args: argparse.Namespace) -> date:
    eff: date | None = args.effective
    return eff if eff is not None else province_day(datetime.now(UTC))


def read_inventory(
    path: Path, sector: Sector, *, fmt: str | None, encoding: str | None
) -> tuple[Inventory, bytes]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError("file", f"cannot read {path}: {exc.strerror}") from exc
    kind = "xlsx" if fmt == "xlsx" else "csv" if fmt == "csv" else detect_format(path.name, data)
    started = time.monotonic()

    def progress(rows: int) -> None:
        _progress(f"  validated {rows:,} rows ({time.monotonic() - started:.1f} s)")

    inv = parse(data, sector, load_catalog(), fmt=kind, encoding=encoding, progress=progress)
    return inv, data


def print_diff(d: Diff, limit: int) -> None:
    s = d.summary()
    _out(
        f"sites:   {s['sites_added']:,} added, {s['sites_changed']:,} changed, "
        f"{s['sites_unchanged']:,} unchanged"
    )
    _out(
        f"devices: {s['devices_added']:,} added, {s['devices_changed']:,} changed, "
        f"{s['devices_unchanged']:,} unchanged"
    )
    shown = 0
    for _, new, change in d.changed_sites:
        if shown >= limit:
            break
        fields = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in change.items())
        _out(f"  ~ site {new.site_id}: {fields}")
        shown += 1
    for _, new_d, change in d.changed_devices:
        if shown >= limit:
            break
        fields = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in change.items())
        _out(f"  ~ device {new_d.device_id}: {fields}")
        shown += 1
    more = len(d.changed_sites) + len(d.changed_devices) - shown
    if more > 0:
        _out(f"  ... and {more:,} more change(s)")
    for e in d.errors:
        _out(f"  refused: {e.reason}")


def _import(args: argparse.Namespace, settings: Settings) -> int:
    sector = Sector(args.sector)
    started = time.monotonic()
    _progress(f"reading {args.file} ({sector} inventory)")
    try:
        inv, data = read_inventory(args.file, sector, fmt=args.format, encoding=args.encoding)
    except InventoryError as exc:
        _out(f"{args.file}: {exc}")
        return 1
    for w in inv.warnings:
        _progress(f"warning: {w}")
    if not inv.ok:
        for e in inv.errors:
            _out(f"{args.file}:{e.line}: {e.reason}")
        if inv.error_count > len(inv.errors):
            _out(f"... {inv.error_count - len(inv.errors):,} more error(s)")
        _out(f"{inv.error_count:,} bad row(s) of {inv.rows:,}: nothing imported")
        return 1
    _progress(
        f"{inv.rows:,} rows valid: {len(inv.sites):,} sites, {len(inv.devices):,} devices "
        f"({time.monotonic() - started:.1f} s); comparing with the registry"
    )
    source = registry_admin.ImportSource(str(args.file), hashlib.sha256(data).hexdigest())
    effective = _effective(args)

    def show(d: Diff) -> None:
        if not args.json:
            print_diff(d, args.changes)
        if not args.dry_run and not d.errors and not d.empty:
            _progress(f"applying in one transaction (effective {effective})")

    with connect(settings.db) as conn:
        d = registry_admin.import_inventory(
            conn,
            inv,
            actor=audit.cli_actor(),
            effective=effective,
            source=source,
            dry_run=args.dry_run,
            on_diff=show,
            progress=_progress,
        )
    elapsed = time.monotonic() - started
    if args.json:
        _out(
            json.dumps(
                {
                    **d.summary(),
                    "dry_run": args.dry_run,
                    "applied": not (args.dry_run or d.errors or d.empty),
                    "refused": [e.reason for e in d.errors],
                    "simulation_ended": (
                        None
                        if d.ends_simulation is None
                        else registry_admin.simulation_ended_text(
                            d.ends_simulation, dry_run=args.dry_run
                        )
                    ),
                    "seconds": round(elapsed, 2),
                },
                ensure_ascii=False,
            )
        )
    if d.errors:
        _out(f"{len(d.errors)} change(s) refused: nothing imported")
        return 1
    if args.dry_run:
        _progress(f"dry run: nothing changed ({elapsed:.1f} s)")
    elif d.empty:
        _progress(f"the registry already matches the file: nothing changed ({elapsed:.1f} s)")
    else:
        _progress(f"imported in {elapsed:.1f} s")
    if d.ends_simulation is not None and not d.errors:
        _progress(registry_admin.simulation_ended_text(d.ends_simulation, dry_run=args.dry_run))
    return 0


def _export(args: argparse.Namespace, settings: Settings) -> int:
    sector = Sector(args.sector)
    with connect(settings.db) as conn:
        sites, devices = registry_admin.export(conn, sector)
    rows = [header(sector, args.lang), *export_rows(sector, sites, devices)]
    out: Path | None = args.output
    if out is not None and out.suffix.lower() == ".xlsx":
        from openpyxl import Workbook

        wb = Workbook(write_only=True)
        ws = wb.create_sheet(sector.value)
        for r in rows:
            ws.append(r)
        buf = io.BytesIO()
        wb.save(buf)
        out.write_bytes(buf.getvalue())
    elif out is not None:
        out.write_text(to_csv(rows), encoding="utf-8")
    else:
        sys.stdout.write(to_csv(rows))
    _progress(f"{len(sites):,} sites, {len(devices):,} devices exported")
    return 0


def _city(text: str) -> str:
    code = city_lookup(load_catalog()).get(text.lower())
    if code is None:
        raise ConfigError("--city", f"unknown city {text!r}")
    return code


def _site_attrs(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    allowed = {"public", "networked", "voltage_kv", "gis", "one_key_control", "smart", "agri_base"}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in allowed:
            raise ConfigError("--attr", f"unknown attribute {key!r} (one of {sorted(allowed)})")
        if key == "voltage_kv":
            if not value.isdigit():
                raise ConfigError("--attr", f"voltage_kv={value!r} is not a number")
            out[key] = int(value)
        else:
            b = parse_bool(value)
            if b is None:
                raise ConfigError("--attr", f"{key}={value!r} is not a boolean")
            out[key] = b
    return out


def _add_site(args: argparse.Namespace, settings: Settings) -> int:
    site = Site(
        args.site_id,
        Sector(args.sector),
        _city(args.city),
        args.name,
        **_site_attrs(args.attr),
    )
    with connect(settings.db) as conn:
        after = registry_admin.add_site(
            conn, site, actor=audit.cli_actor(), effective=_effective(args)
        )
    _out(json.dumps(after, ensure_ascii=False))
    return 0


def _add_device(args: argparse.Namespace, settings: Settings) -> int:
    dev = Device(args.device_id, args.site, args.kind)
    with connect(settings.db) as conn:
        after = registry_admin.add_device(
            conn, dev, actor=audit.cli_actor(), effective=_effective(args)
        )
    _out(json.dumps(after, ensure_ascii=False))
    return 0


def _move(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings.db) as conn:
        if args.what == "device":
            if args.site is None:
                raise ConfigError("--site", "moving a device needs --site")
            after = registry_admin.move_device(
                conn, args.id, args.site, actor=audit.cli_actor(), effective=_effective(args)
            )
        else:
            if args.city is None:
                raise ConfigError("--city", "moving a site needs --city")
            after = registry_admin.move_site(
                conn, args.id, _city(args.city), actor=audit.cli_actor(), effective=_effective(args)
            )
    _out(json.dumps(after, ensure_ascii=False))
    return 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings.db) as conn:
        changed = registry_admin.set_status(
            conn,
            args.what,
            args.id,
            args.status,
            actor=audit.cli_actor(),
            effective=_effective(args),
        )
    for after in changed:
        _out(json.dumps(after, ensure_ascii=False))
    return 0


def _show(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings.db) as conn:
        if args.what == "site":
            site, status = registry_admin.get_site(conn, args.id)
            out: dict[str, Any] = registry_admin.site_state(site, status)
            out["devices"] = registry_admin.device_rows(registry_admin.site_devices(conn, args.id))
        else:
            dev, status = registry_admin.get_device(conn, args.id)
            out = registry_admin.device_state(dev, status)
    _out(json.dumps(out, ensure_ascii=False, indent=2))
    return 0


def _history(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings.db) as conn:
        versions = registry_admin.history(conn, args.what, args.id)
    for v in versions:
        since = "always" if v.valid_from == registry_admin.SINCE_EVER else str(v.valid_from)
        until = "now" if v.valid_to is None else str(v.valid_to)
        _out(f"{since} .. {until}: {json.dumps(v.state, ensure_ascii=False)}")
    return 0


def _audit(args: argparse.Namespace, settings: Settings) -> int:
    since = datetime.combine(args.since, datetime.min.time(), UTC) if args.since else None
    with connect(settings.db) as conn:
        rows = audit.query(
            conn,
            entity=args.entity,
            entity_id=args.entity_id,
            actor=args.actor,
            since=since,
            after_id=args.after_id,
            limit=args.limit,
        )
    for r in rows:
        if args.json:
            _out(
                json.dumps(
                    {
                        "audit_id": r.audit_id,
                        "at": r.at.isoformat(),
                        "actor": r.actor,
                        "action": r.action,
                        "entity": r.entity,
                        "entity_id": r.entity_id,
                        "before": r.before,
                        "after": r.after,
                    },
                    ensure_ascii=False,
                )
            )
        else:
            _out(
                f"{r.audit_id} {r.at:%Y-%m-%d %H:%M:%S%z} {r.actor} {r.action} "
                f"{r.entity}:{r.entity_id} before={json.dumps(r.before, ensure_ascii=False)} "
                f"after={json.dumps(r.after, ensure_ascii=False)}"
            )
    return 0
