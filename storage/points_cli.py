"""``qilu points import|export``: IEC 104 point tables of an agent's stations.

See :data:`DESCRIPTION` (the command's help).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from qilu.errors import ConfigError
from qilu.fileio import write_atomic
from qilu.pointtable import to_csv
from qilu.settings import Settings
from storage import audit
from storage import point_tables as pt
from storage.db import connect

DESCRIPTION = """\
IEC 104 point tables (点表) of an agent's stations.

import checks a utility's CSV or XLSX table (English or Chinese headers) row by row and
against the registry, prints FILE:LINE: reason for every bad row and then applies nothing;
otherwise it replaces the station's table in one audited transaction. --dry-run checks and
reports only: nothing stored, no file written. --output writes the checked table as the agent
reads it (the point_table key of the IEC 104 collector); export writes the stored one.
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "points",
        help="IEC 104 point tables of an agent's stations: import (checked, audited), export",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    psub = p.add_subparsers(dest="points_command", metavar="ACTION", required=True)
    i = psub.add_parser(
        "import",
        help="check a point table against the registry and store it (nothing on any error)",
    )
    i.add_argument("file", type=Path, help="the point table (.csv or .xlsx)")
    i.add_argument("--agent", required=True, help="the agent whose collector reads the station")
    i.add_argument("--station", required=True, help="the station's name in the agent's TOML")
    i.add_argument("--encoding", default=None, help="CSV encoding (default UTF-8, else GB18030)")
    i.add_argument(
        "--dry-run", action="store_true", help="check and report; store nothing, write no file"
    )
    i.add_argument(
        "--output", "-o", type=Path, default=None, help="write the checked table (CSV) here"
    )
    i.add_argument("--json", action="store_true", help="print the result as JSON")
    i.set_defaults(handler=_import)
    e = psub.add_parser("export", help="the stored table as the agent reads it (CSV)")
    e.add_argument("--agent", required=True, help="the agent id")
    e.add_argument("--station", required=True, help="the station's name")
    e.add_argument("--output", "-o", type=Path, default=None, help="file; default stdout")
    e.set_defaults(handler=_export)


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _import(args: argparse.Namespace, settings: Settings) -> int:
    try:
        data = args.file.read_bytes()
    except OSError as exc:
        raise ConfigError("file", f"cannot read {args.file}: {exc.strerror}") from exc
    try:
        rows, row_errors = pt.read_rows(data, args.file.name, encoding=args.encoding)
        with connect(settings.db) as conn:
            res = pt.import_table(
                conn,
                agent_id=args.agent,
                station=args.station,
                rows=rows,
                row_errors=row_errors,
                actor=audit.cli_actor(),
                source=str(args.file),
                sha256=hashlib.sha256(data).hexdigest(),
                dry_run=args.dry_run,
            )
    except pt.PointTableError as exc:
        _out(f"{args.file}: {exc}")
        return 1
    for err in res.errors:
        _out(f"{args.file}:{err.line}: {err.reason}")
    if args.json:
        body = {
            **res.summary(),
            "dry_run": res.dry_run,
            "applied": res.applied,
            "errors": [{"line": e.line, "reason": e.reason} for e in res.errors],
        }
        _out(json.dumps(body, ensure_ascii=False))
    if res.errors:
        _out(f"{len(res.errors)} bad row(s) of {res.rows}: nothing imported")
        return 1
    s = res.summary()
    verb = "would change" if args.dry_run else "imported" if res.applied else "unchanged"
    sys.stderr.write(
        f"{args.agent}/{args.station}: {s['points']} points, {verb} "
        f"({s['added']} added, {s['changed']} changed, {s['removed']} removed)\n"
    )
    if args.output is not None:
        if args.dry_run:
            sys.stderr.write(f"would write {args.output}\n")
        else:
            write_atomic(args.output, to_csv(rows))
    return 0


def _export(args: argparse.Namespace, settings: Settings) -> int:
    try:
        with connect(settings.db) as conn:
            text = pt.export_csv(conn, args.agent, args.station)
    except pt.PointTableError as exc:
        _out(str(exc))
        return 1
    if args.output is None:
        sys.stdout.write(text)
    else:
        write_atomic(args.output, text)
    return 0
