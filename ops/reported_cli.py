"""``qilu reported import|list|simulate``: reported figures from the command line
(docs/reported.md), the same rules as ``POST /v1/admin/reported/import``.

``import`` validates every row first: a bad row prints ``FILE:LINE: reason`` and imports
nothing (exit 1). ``--dry-run`` only compares with the stored figures. Applying is one
transaction, audited as ``cli:<os user>``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from api import reported_view
from qilu.catalog import TargetKind, load_catalog
from qilu.errors import ConfigError
from qilu.inventory import city_lookup, detect_format
from qilu.reported import parse, simulated_figures
from qilu.settings import Settings
from storage import audit
from storage import reported as store
from storage.coverage import province_day
from storage.db import connect
from storage.queries_api import Area


def register(sub: Any) -> None:
    p = sub.add_parser(
        "reported",
        help="reported figures: targets other bodies count (5G base stations, racks...)",
        description="Figures reported by other bodies for the catalog's [[reported]] targets: "
        "import them (audited), list the newest, or add the simulation's (docs/reported.md).",
    )
    rsub = p.add_subparsers(dest="reported_command", metavar="ACTION", required=True)
    i = rsub.add_parser(
        "import",
        help="import a CSV or XLSX file of figures (a bad row imports nothing)",
        description="Columns: target, city, as_of, value, reporter, reported_on, source "
        "[, note] (or 指标, 城市, 统计日期, 数值, 报送单位, 报送日期, 依据文件, 备注).",
    )
    i.add_argument("file", type=Path, help="the figures (.csv or .xlsx)")
    i.add_argument("--format", choices=("csv", "xlsx"), default=None, help="default: by name")
    i.add_argument("--encoding", default=None, help="CSV encoding (default UTF-8, else GB18030)")
    i.add_argument("--dry-run", action="store_true", help="compare only, change nothing")
    i.set_defaults(handler=_import)
    ls = rsub.add_parser(
        "list",
        help="each reported target's newest province figure, its age and status",
        description="One line per reported target: the province's figure (its own, or the sum "
        "of a day every city reported), the day it is for, its age, stale or current, "
        "simulated or not, the status (met, on_track, at_risk, behind) and the reporter; the "
        "same answer as GET /v1/reported.",
    )
    ls.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="ID",
        help="only this target (repeatable; default: all)",
    )
    ls.add_argument(
        "--city",
        default=None,
        metavar="CITY",
        help="a city's figures instead of the province's (code, English or Chinese name)",
    )
    ls.set_defaults(handler=_list)
    sim = rsub.add_parser(
        "simulate",
        help="add the simulation's figures (marked simulated) where none is stored",
        description="What `qilu run` does on start: plausible figures for every reported "
        "target, never replacing a stored figure.",
    )
    sim.add_argument("--seed", type=int, default=19, help="the figures' seed (default 19)")
    sim.set_defaults(handler=_simulate)


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _import(args: argparse.Namespace, settings: Settings) -> int:
    path: Path = args.file
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError("file", f"cannot read {path}: {exc.strerror}") from exc
    fmt = args.format or detect_format(path.name, data)
    rep = parse(
        data, load_catalog(), province_day(datetime.now(UTC)), fmt=fmt, encoding=args.encoding
    )
    for w in rep.warnings:
        sys.stderr.write(f"{path}: {w}\n")
    if not rep.ok:
        for e in rep.errors:
            sys.stderr.write(f"{path}:{e.line}: {e.reason}\n")
        sys.stderr.write(f"{rep.error_count} bad row(s) of {rep.rows}: nothing imported\n")
        return 1
    source = store.ImportSource(path.name, hashlib.sha256(data).hexdigest())
    with connect(settings.db) as conn:
        result = store.import_figures(
            conn, rep, actor=audit.cli_actor(), source=source, dry_run=args.dry_run
        )
    s = result.summary()
    _out(f"figures: {s['added']:,} added, {s['changed']:,} corrected, {s['unchanged']:,} unchanged")
    for tid, n in sorted(result.simulated_removed.items()):
        _out(f"  - {tid}: {n:,} simulated figures removed (real figures end its simulation)")
    for old, new in result.changed[:50]:
        _out(f"  ~ {new.target_id} {new.area} {new.day}: {old.value:g} -> {new.value:g}")
    _out("dry run: nothing changed" if args.dry_run else "applied" if not result.empty else "")
    return 0


def _list(args: argparse.Namespace, settings: Settings) -> int:
    catalog = load_catalog()
    now = datetime.now(UTC)
    city = None if args.city is None else city_lookup(catalog).get(args.city.lower())
    if args.city is not None and city is None:
        raise ConfigError("--city", f"unknown city {args.city!r} (a code, Chinese or English name)")
    unknown = set(args.target) - {t.id for t in catalog.reported}
    if unknown:
        raise ConfigError("--target", f"not a reported target: {', '.join(sorted(unknown))}")
    with connect(settings.db) as conn:
        figures, first = store.all_figures(conn), store.earliest(conn)
    for t in catalog.reported:
        if args.target and t.id not in args.target:
            continue
        out = reported_view.target_out(catalog, t, figures, first, now, Area())
        rows = [out.province] if city is None else [c for c in out.cities if c.area == city]
        for a in rows:
            where = "" if args.city is None else f" {a.name_en}"
            fig, j = a.figure, a.judgement
            if fig is None:
                why = f": {j.explanation}" if j is not None else ""
                _out(f"{t.id:40}{where} no figure{why}")
                continue
            ratio = t.kind is TargetKind.RATIO
            value = f"{fig.value:.1%}" if ratio else f"{fig.value:,.0f}"
            basis = " (sum of cities)" if a.basis == "sum_of_cities" else ""
            stale = "STALE" if fig.stale else "current"
            sim = " simulated" if fig.simulated else ""
            status = f", {j.status}" if j is not None else ""
            _out(
                f"{t.id:40}{where} {value:>14}{basis} as of {fig.as_of} ({fig.age_days} days, "
                f"{stale}{sim}{status}) by {fig.reporter}"
            )
    return 0


def _simulate(args: argparse.Namespace, settings: Settings) -> int:
    figures = simulated_figures(load_catalog(), province_day(datetime.now(UTC)), args.seed)
    with connect(settings.db) as conn:
        added = store.save_simulated(conn, figures)
    _out(f"{added:,} simulated figures added ({len(figures) - added:,} already stored)")
    return 0
