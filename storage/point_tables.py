"""IEC 104 point tables in SQL: validated against the registry, stored, audited, exported.

A utility's point table (CSV or XLSX, English or Chinese headers; :mod:`qilu.pointtable`) is
imported for one station of one agent, with the inventory importer's conventions
(docs/registry.md): every row is checked first, a bad row applies nothing, ``dry_run`` only
reports, and errors carry their line. Beyond the row checks of :mod:`qilu.pointtable`, the
registry must agree: the agent exists and is not revoked, every device exists, is not
decommissioned and sits on one of the agent's sites, and the metric belongs to the device's
kind. An applied import replaces the station's points in one transaction with its audit row
(entity ``import``, action ``point_table.import``, the added/changed/removed counts).

:func:`export_csv` gives the checked table as the agent reads it (``point_table`` in the
IEC 104 collector's TOML).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg.rows import TupleRow

from qilu.devices import KINDS
from qilu.errors import QiluError
from qilu.pointtable import PointRow, RowError, parse_rows, to_csv
from storage import audit

logger = logging.getLogger(__name__)
Conn = psycopg.Connection[TupleRow]


class PointTableError(QiluError):
    """The file cannot be read at all, or the agent / station is unknown."""


def read_rows(
    data: bytes, name: str, *, encoding: str | None = None
) -> tuple[list[PointRow], list[RowError]]:
    """A CSV or XLSX file's bytes -> rows and row errors (PointTableError if unreadable)."""
    from qilu.inventory import InventoryError, csv_rows, decode, detect_format, xlsx_rows

    try:
        if detect_format(name, data) == "xlsx":
            return parse_rows(xlsx_rows(data))
        text, _ = decode(data, encoding)
        return parse_rows(csv_rows(text))
    except InventoryError as exc:
        raise PointTableError(str(exc)) from exc


@dataclass(slots=True)
class ImportResult:
    agent_id: str
    station: str
    rows: int
    errors: list[RowError] = field(default_factory=list)
    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    dry_run: bool = False
    applied: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> dict[str, int]:
        return {
            "points": self.rows,
            "added": self.added,
            "changed": self.changed,
            "removed": self.removed,
            "unchanged": self.unchanged,
        }


def check_registry(conn: Conn, agent_id: str, rows: Sequence[PointRow]) -> list[RowError]:
    """The row errors the registry finds: unknown, decommissioned or foreign devices, metrics
    of another kind. PointTableError if the agent is unknown or revoked."""
    found = conn.execute(
        "SELECT revoked_at IS NOT NULL FROM agents WHERE agent_id = %s", (agent_id,)
    ).fetchone()
    if found is None:
        raise PointTableError(f"agent {agent_id!r} is not registered (qilu agents provision)")
    if found[0]:
        raise PointTableError(f"agent {agent_id!r} is revoked")
    sites = {
        r[0]
        for r in conn.execute("SELECT site_id FROM agent_sites WHERE agent_id = %s", (agent_id,))
    }
    devices = {
        r[0]: (r[1], r[2], r[3])
        for r in conn.execute(
            "SELECT device_id, site_id, kind, status FROM devices WHERE device_id = ANY(%s)",
            (sorted({p.device_id for p in rows}),),
        )
    }
    errors: list[RowError] = []
    for p in rows:
        dev = devices.get(p.device_id)
        if dev is None:
            errors.append(RowError(p.line, f"device {p.device_id} is not in the registry"))
            continue
        site, kind, status = dev
        if status == "decommissioned":
            errors.append(RowError(p.line, f"device {p.device_id} is decommissioned"))
        elif site not in sites:
            errors.append(
                RowError(
                    p.line,
                    f"device {p.device_id} is on site {site}, not one of agent {agent_id}'s sites",
                )
            )
        elif KINDS[kind].metric(p.metric) is None:
            errors.append(
                RowError(
                    p.line,
                    f"metric {p.metric} is not a metric of {p.device_id}'s kind {kind} "
                    f"({', '.join(m.key for m in KINDS[kind].metrics)})",
                )
            )
    return errors


_COLS = 'ioa, type_id, device_id, metric, scale, "offset", unit, description'


def points(conn: Conn, agent_id: str, station: str) -> list[PointRow]:
    """The stored table of one station, by IOA (empty if none was imported)."""
    return [
        PointRow(*r)
        for r in conn.execute(
            f"SELECT {_COLS} FROM point_table_points"  # noqa: S608 - constant column list
            " WHERE agent_id = %s AND station = %s ORDER BY ioa",
            (agent_id, station),
        )
    ]


def export_csv(conn: Conn, agent_id: str, station: str) -> str:
    """The checked table as the agent reads it; PointTableError if none was imported."""
    found = conn.execute(
        "SELECT 1 FROM point_tables WHERE agent_id = %s AND station = %s", (agent_id, station)
    ).fetchone()
    if found is None:
        raise PointTableError(f"no point table for station {station!r} of agent {agent_id!r}")
    return to_csv(points(conn, agent_id, station))


def _same(a: PointRow, b: PointRow) -> bool:
    return a.cells() == b.cells()


def import_table(
    conn: Conn,
    *,
    agent_id: str,
    station: str,
    rows: Sequence[PointRow],
    row_errors: Sequence[RowError],
    actor: str,
    source: str,
    sha256: str,
    dry_run: bool,
) -> ImportResult:
    """Check ``rows`` against the registry and, unless ``dry_run`` or any error, replace the
    station's table in one transaction with its audit row. Re-importing the same table
    changes nothing and records nothing."""
    res = ImportResult(agent_id, station, len(rows) + len(row_errors), dry_run=dry_run)
    if not rows and not row_errors:
        res.errors.append(RowError(1, "the table has no points"))
        return res
    with conn.transaction(), conn.cursor() as cur:
        if not dry_run:
            cur.execute("LOCK TABLE point_tables IN SHARE ROW EXCLUSIVE MODE")
        res.errors = sorted(
            [*row_errors, *check_registry(conn, agent_id, rows)], key=lambda e: e.line
        )
        old = {p.ioa: p for p in points(conn, agent_id, station)}
        new = {p.ioa: p for p in rows}
        res.added = sum(1 for ioa in new if ioa not in old)
        res.removed = sum(1 for ioa in old if ioa not in new)
        res.changed = sum(1 for ioa, p in new.items() if ioa in old and not _same(p, old[ioa]))
        res.unchanged = len(new) - res.added - res.changed
        if dry_run or res.errors or not (res.added or res.changed or res.removed):
            return res
        cur.execute(
            "INSERT INTO point_tables (agent_id, station, source, sha256, imported_by)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (agent_id, station) DO UPDATE SET"
            " source = EXCLUDED.source, sha256 = EXCLUDED.sha256, imported_at = now(),"
            " imported_by = EXCLUDED.imported_by",
            (agent_id, station, source, sha256, actor),
        )
        cur.execute(
            "DELETE FROM point_table_points WHERE agent_id = %s AND station = %s",
            (agent_id, station),
        )
        with cur.copy(f"COPY point_table_points (agent_id, station, {_COLS}) FROM STDIN") as copy:
            for p in rows:
                copy.write_row(
                    (agent_id, station, p.ioa, p.type_id, p.device_id, p.metric, p.scale,
                     p.offset, p.unit, p.description)
                )  # fmt: skip
        audit.record(
            cur,
            actor=actor,
            action="point_table.import",
            entity="import",
            entity_id=f"points:{agent_id}/{station}",
            before=None,
            after={"file": source, "sha256": sha256, **res.summary()},
        )
        res.applied = True
    logger.info("point table of %s/%s imported: %s", agent_id, station, res.summary())
    return res
