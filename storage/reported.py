"""Reported figures in SQL (migration 057, docs/reported.md): the audited import, the
simulation's figures, and the reads of the API and the dashboards.

An import is one transaction: it locks the table against other writers, deletes the simulated
figures of the targets it brings real figures for (audited ``reported.end_simulation``: made-up
figures of later days would otherwise hide the real ones), compares each figure
with the one stored for the same target, area and day, adds the new ones, replaces the changed
ones (a correction; the audit row keeps both values) and leaves identical ones alone, so
importing a file twice changes nothing and records nothing. A bad row (qilu/reported.py)
refuses the whole file before this module is called.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from qilu.errors import QiluError
from qilu.reported import Figure, Report
from storage import audit

logger = logging.getLogger(__name__)

SIMULATION_ACTOR = "simulation"
_COLS = "target_id, area, day, value, reporter, reported_on, source, note, simulated"


class ReportedImportError(QiluError):
    """The file has bad rows: nothing is imported."""


@dataclass(frozen=True, slots=True)
class ImportSource:
    name: str  # the file name as given
    sha256: str


@dataclass(slots=True)
class ImportResult:
    added: list[Figure] = field(default_factory=list)
    changed: list[tuple[Figure, Figure]] = field(default_factory=list)  # (before, after)
    unchanged: int = 0
    # target -> simulated figures removed (a real import ends the target's simulation)
    simulated_removed: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, int]:
        return {
            "added": len(self.added),
            "changed": len(self.changed),
            "unchanged": self.unchanged,
            "simulated_removed": sum(self.simulated_removed.values()),
        }

    @property
    def empty(self) -> bool:
        return not self.added and not self.changed and not self.simulated_removed


def _figure(row: Sequence[Any]) -> Figure:
    return Figure(
        target_id=row[0],
        area=row[1],
        day=row[2],
        value=float(row[3]),
        reporter=row[4],
        reported_on=row[5],
        source=row[6],
        note=row[7],
        simulated=bool(row[8]),
    )


def _state(f: Figure) -> dict[str, Any]:
    return {
        "target": f.target_id,
        "area": f.area,
        "as_of": f.day.isoformat(),
        "value": f.value,
        "reporter": f.reporter,
        "reported_on": f.reported_on.isoformat(),
        "source": f.source,
        "note": f.note,
        "simulated": f.simulated,
    }


def _same(a: Figure, b: Figure) -> bool:
    return (a.value, a.reporter, a.reported_on, a.source, a.note, a.simulated) == (
        b.value,
        b.reporter,
        b.reported_on,
        b.source,
        b.note,
        b.simulated,
    )


def import_figures(
    conn: psycopg.Connection[TupleRow],
    report: Report,
    *,
    actor: str,
    source: ImportSource,
    dry_run: bool,
) -> ImportResult:
    """Compare a valid report with the stored figures and, unless ``dry_run``, apply it in one
    transaction with an audit row per figure added or changed and one for the import."""
    if not report.ok:
        raise ReportedImportError(f"the file has {report.error_count} bad row(s)")
    result = ImportResult()
    with conn.transaction(), conn.cursor() as cur:
        if not dry_run:
            cur.execute("LOCK TABLE reported_figures IN SHARE ROW EXCLUSIVE MODE")
        targets = sorted({f.target_id for f in report.figures if not f.simulated})
        if dry_run:
            cur.execute(
                "SELECT target_id, count(*) FROM reported_figures"
                " WHERE simulated AND target_id = ANY(%s) GROUP BY target_id",
                (targets,),
            )
        else:  # the real figures end these targets' simulation (migration 063)
            cur.execute("SELECT * FROM qilu_end_reported_simulation(%s)", (targets,))
        result.simulated_removed = {r[0]: int(r[1]) for r in cur.fetchall()}
        keys = [f.key for f in report.figures]
        cur.execute(
            f"SELECT {_COLS} FROM reported_figures"  # noqa: S608 - constant column list
            " WHERE NOT simulated AND (target_id, area, day) IN (SELECT * FROM unnest("
            "%s::text[], %s::text[], %s::date[]))",
            ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]),
        )
        stored = {f.key: f for f in map(_figure, cur.fetchall())}
        for fig in report.figures:
            old = stored.get(fig.key)
            if old is None:
                result.added.append(fig)
            elif _same(old, fig):
                result.unchanged += 1
            else:
                result.changed.append((old, fig))
        if dry_run or result.empty:
            return result
        rows = [*result.added, *(new for _, new in result.changed)]
        audit.record_many(
            cur,
            [
                (
                    actor,
                    "reported.end_simulation",
                    "reported_figure",
                    f"{tid}:simulated",
                    json.dumps({"target": tid, "simulated_figures": n}),
                    None,
                )
                for tid, n in result.simulated_removed.items()
            ],
        )
        cur.executemany(
            f"INSERT INTO reported_figures ({_COLS}, imported_by)"  # noqa: S608
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (target_id, area, day) DO UPDATE SET value = EXCLUDED.value,"
            " reporter = EXCLUDED.reporter, reported_on = EXCLUDED.reported_on,"
            " source = EXCLUDED.source, note = EXCLUDED.note, simulated = EXCLUDED.simulated,"
            " imported_at = now(), imported_by = EXCLUDED.imported_by",
            [(*_values(f), actor) for f in rows],
        )
        action = "reported.import"
        audit.record_many(
            cur,
            [
                *(
                    (actor, "reported.add", "reported_figure", _key(f), None, _json(f))
                    for f in result.added
                ),
                *(
                    (
                        actor,
                        "reported.correct",
                        "reported_figure",
                        _key(new),
                        _json(old),
                        _json(new),
                    )
                    for old, new in result.changed
                ),
            ],
        )
        audit.record(
            cur,
            actor=actor,
            action=action,
            entity="import",
            entity_id=f"reported:{source.sha256[:16]}",
            before=None,
            after={"file": source.name, "sha256": source.sha256, **result.summary()},
        )
    logger.info("reported figures %s imported: %s", source.name, result.summary())
    return result


def _values(f: Figure) -> tuple[Any, ...]:
    return (
        f.target_id,
        f.area,
        f.day,
        f.value,
        f.reporter,
        f.reported_on,
        f.source,
        f.note,
        f.simulated,
    )


def _key(f: Figure) -> str:
    return f"{f.target_id}:{f.area}:{f.day.isoformat()}"


def _json(f: Figure) -> str:
    return json.dumps(_state(f), ensure_ascii=False)


def save_simulated(conn: psycopg.Connection[TupleRow], figures: Iterable[Figure]) -> int:
    """Store the simulation's figures (marked ``simulated``) for the targets no real figure
    was imported for (a real import ended their simulation), where no figure is stored for the
    same target, area and day: a reported figure is never replaced or hidden by a made-up one.
    Returns how many were added."""
    rows = [(*_values(f), SIMULATION_ACTOR) for f in figures if f.simulated]
    with conn.transaction(), conn.cursor() as cur:
        # as the import does: an import running meanwhile cannot end a simulation this adds to
        cur.execute("LOCK TABLE reported_figures IN SHARE ROW EXCLUSIVE MODE")
        cur.execute(
            "CREATE TEMP TABLE _sim_figures (LIKE reported_figures INCLUDING DEFAULTS)"
            " ON COMMIT DROP"
        )
        with cur.copy(f"COPY _sim_figures ({_COLS}, imported_by) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(
            "INSERT INTO reported_figures SELECT * FROM _sim_figures s WHERE NOT EXISTS ("
            " SELECT FROM reported_figures r WHERE r.target_id = s.target_id AND NOT r.simulated)"
            " ON CONFLICT (target_id, area, day) DO NOTHING"
        )
        added = cur.rowcount
    logger.info("simulated reported figures: %d added", added)
    return added


def all_figures(conn: psycopg.Connection[TupleRow]) -> list[Figure]:
    """Every stored figure (a few per target, area and quarter: the province's figure and the
    judgement at the due date need more than the newest)."""
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT {_COLS} FROM reported_figures"  # noqa: S608 - constant column list
            " ORDER BY target_id, area, day"
        )
        return [_figure(r) for r in cur.fetchall()]


def earliest(conn: psycopg.Connection[TupleRow]) -> dict[tuple[str, str], tuple[date, float]]:
    """The first figure of every target and area: the judgement's baseline when the catalog
    gives none."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT DISTINCT ON (target_id, area) target_id, area, day, value"
            " FROM reported_figures ORDER BY target_id, area, day"
        )
        return {(r[0], r[1]): (r[2], float(r[3])) for r in cur.fetchall()}


def history(
    conn: psycopg.Connection[TupleRow], target_id: str, area: str | None = None
) -> list[Figure]:
    """Every figure of a target (of one area, or all), oldest first."""
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT {_COLS} FROM reported_figures WHERE target_id = %s"  # noqa: S608
            " AND (%s::text IS NULL OR area = %s) ORDER BY day, area",
            (target_id, area, area),
        )
        return [_figure(r) for r in cur.fetchall()]
