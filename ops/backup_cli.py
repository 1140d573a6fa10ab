"""``qilu backup`` (setup, run, status, schedule, point) and ``qilu restore``: pgBackRest for
the platform's PostgreSQL cluster (ops/backup.py; the runbook is docs/operations.md)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client import Gauge, start_http_server

from ops.backup import (
    BackupInfo,
    BackupStatus,
    BackupType,
    Layout,
    PgBackRest,
    RestoreTarget,
    assess,
    due_backup,
    pick_backup,
    restore_argv,
)
from qilu.errors import ConfigError, ServiceError
from qilu.settings import Settings
from storage.db import connect
from storage.restore_points import create_restore_point
from storage.wal_archive import (
    read_archiver,
)

logger = logging.getLogger(__name__)

LAST_BACKUP = Gauge(
    "qilu_backup_last_success_timestamp_seconds",
    "Unix time the newest backup of this type finished",
    ["type"],
)
ARCHIVE_LAG = Gauge(
    "qilu_backup_archive_lag_seconds",
    "Seconds WAL archiving has made no progress while segments wait (0: nothing waits)",
)
ARCHIVE_FAILING = Gauge(
    "qilu_backup_archive_failing", "1 when the last attempt to archive a WAL segment failed"
)
REPO_BYTES = Gauge("qilu_backup_repository_bytes", "Size of the backup repository")
PROBLEMS = Gauge("qilu_backup_problems", "Problems `qilu backup status` reports (0: healthy)")


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def register(sub: Any) -> None:
    p = sub.add_parser(
        "backup",
        help="backups of the database with pgBackRest (docs/operations.md)",
        description=(
            "Continuous WAL archiving and full/differential base backups of the platform's "
            "PostgreSQL cluster into a pgBackRest repository (local by default; any type "
            "pgBackRest supports through QILU_BACKUP__REPO_OPTIONS)."
        ),
    )
    bsub = p.add_subparsers(dest="backup_command", required=True, metavar="ACTION")
    s = bsub.add_parser(
        "setup",
        help="install pgBackRest, write its configuration, turn on WAL archiving",
        description=(
            "Writes pgbackrest.conf and the archiving settings (included from "
            "postgresql.conf), creates the stanza and checks that a WAL segment reaches the "
            "repository. Turning archive_mode on needs a PostgreSQL restart."
        ),
    )
    s.add_argument(
        "--restart",
        action="store_true",
        help="restart the services PostgreSQL cluster if archive_mode must change "
        "(otherwise: say so and stop)",
    )
    s.set_defaults(handler=_setup)
    r = bsub.add_parser("run", help="take a backup now")
    r.add_argument(
        "--type",
        choices=["full", "diff", "incr", "auto"],
        default="auto",
        help="full, diff (since the last full), incr, or auto: what the schedule "
        "(backup.full_every_h, backup.diff_every_h) says is due, nothing if none is",
    )
    r.set_defaults(handler=_run)
    st = bsub.add_parser(
        "status",
        help="last backups, WAL archive lag, repository size; exit 1 if a problem",
    )
    st.add_argument("--json", action="store_true", help="print JSON instead of lines")
    st.set_defaults(handler=_status)
    sc = bsub.add_parser(
        "schedule",
        help="run due backups and export the status as Prometheus metrics, until stopped",
    )
    sc.add_argument(
        "--interval-s", type=float, default=60.0, help="seconds between checks (default 60)"
    )
    sc.add_argument(
        "--metrics-port", type=int, default=None, help="Prometheus port (default 9104, 0: off)"
    )
    sc.set_defaults(handler=_schedule)
    pt = bsub.add_parser(
        "point",
        help="create a named restore point now (`qilu restore --point NAME` goes back to it)",
    )
    pt.add_argument("name", help="letters, digits, '.', '_', ':', '-'; at most 63")
    pt.set_defaults(handler=_point)

    rs = sub.add_parser(
        "restore",
        help="point-in-time restore of the database into an empty data directory",
        description=(
            "Restores the newest backup before the target into --data-dir (which must be empty or "
            "missing) and sets recovery to replay the WAL archive up to the target, then "
            "promote. Start PostgreSQL on that directory, then the ingest: it resumes from the "
            "Kafka offsets the restored database holds. Registry, agent and API key changes "
            "made after the target are undone with it: --dry-run lists them from the running "
            "database's audit log; re-apply them before starting the ingest "
            "(docs/operations.md)."
        ),
    )
    rs.add_argument(
        "--to",
        default=None,
        metavar="TIME",
        help="the time to go back to, ISO 8601 with a zone (e.g. 2026-12-06T14:05:00+08:00)",
    )
    rs.add_argument(
        "--point",
        default=None,
        metavar="NAME",
        help="a named restore point instead of a time (`qilu backup point`, and the "
        "platform's qilu-migrate-*/qilu-import-* points)",
    )
    rs.add_argument(
        "--latest",
        action="store_true",
        help="replay the whole WAL archive (to the last archived change) instead of --to/--point",
    )
    rs.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where to restore; must be missing or empty, the command refuses anything else "
        "and moves nothing (default: the services cluster's data dir: stop PostgreSQL and "
        "move that directory away first)",
    )
    rs.add_argument(
        "--no-archive",
        action="store_true",
        help="a copy beside the running original: do not archive its WAL into the repository",
    )
    rs.add_argument(
        "--dry-run", action="store_true", help="print what would happen, change nothing"
    )
    rs.set_defaults(handler=_restore)


def tool(settings: Settings) -> PgBackRest:
    return PgBackRest(Layout.of(settings.backup, settings.services, settings.db), settings.backup)


def _setup(args: argparse.Namespace, settings: Settings) -> int:
    bk = tool(settings)
    bk.install(_say)
    bk.configure(_say)
    with connect(settings.db, autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
        row = conn.execute("SHOW archive_mode").fetchone()
    if row is None or row[0] == "off":
        if not args.restart:
            _say(
                "backup: archive_mode is off in the running server; restart PostgreSQL "
                "(`qilu backup setup --restart` for the services cluster) and run setup again"
            )
            return 1
        if settings.backup.pg_data_dir is not None:
            raise ConfigError("backup.pg_data_dir", "--restart restarts only the services cluster")
        from ops.services import Services

        svc = Services(settings.services, settings.db)
        _say("backup: restarting PostgreSQL to turn WAL archiving on")
        svc.down(["postgres"])
        svc.up(["postgres"])
    bk.stanza_create()
    bk.check()
    _say(f"backup: stanza {bk.layout.stanza} ready; WAL archiving checked")
    return 0


def _run(args: argparse.Namespace, settings: Settings) -> int:
    bk = tool(settings)
    if args.type == "auto":
        kind = due_backup(bk.info(), datetime.now(UTC), settings.backup)
        if kind is None:
            _say("backup: nothing due")
            return 0
    else:
        kind = BackupType(args.type)
    began = time.monotonic()
    bk.backup(kind)
    _say(f"backup: {kind.value} backup done in {time.monotonic() - began:.1f} s")
    return 0


def current_status(settings: Settings, bk: PgBackRest | None = None) -> BackupStatus:
    """The status ``qilu backup status`` prints: the repository's backups (if it can be
    read: a stalled archive is often an unreachable repository) and the archiver's state."""
    bk = bk or tool(settings)
    backups: list[BackupInfo] = []
    repo_error = None
    try:
        backups = bk.info()
    except ServiceError as exc:
        repo_error = str(exc)
    with connect(settings.db) as conn:
        archiver = read_archiver(conn)
    return assess(backups, archiver, bk.repo_bytes(backups), settings.backup, repo_error)


def status_lines(st: BackupStatus) -> list[str]:
    def when(b: Any) -> str:
        if b is None:
            return "none"
        return f"{b.label} ({b.type}) finished {b.stopped.isoformat()}, {b.database_bytes} B"

    lines = [
        f"last backup:       {when(st.last)}",
        f"last full backup:  {when(st.last_full)}",
        f"backups kept:      {st.backups}",
        f"repository size:   {st.repo_bytes} B",
        f"WAL archiving:     {st.archive_mode}; lag {st.archive_lag_s:.0f} s, "
        f"{st.pending_segments if st.pending_segments is not None else '?'} segment(s) "
        f"waiting{', last attempt FAILED' if st.archive_failing else ''}",
    ]
    lines += [f"PROBLEM: {p}" for p in st.problems] or ["status: ok"]
    return lines


def _status(args: argparse.Namespace, settings: Settings) -> int:
    st = current_status(settings)
    if args.json:
        _say(json.dumps(asdict(st), default=str, indent=2))
    else:
        for line in status_lines(st):
            _say(line)
    return 0 if st.ok else 1


def export(st: BackupStatus) -> None:
    if st.last_full is not None:
        LAST_BACKUP.labels("full").set(st.last_full.stopped.timestamp())
    if st.last is not None:
        LAST_BACKUP.labels("any").set(st.last.stopped.timestamp())
    ARCHIVE_LAG.set(st.archive_lag_s)
    ARCHIVE_FAILING.set(1 if st.archive_failing else 0)
    REPO_BYTES.set(st.repo_bytes)
    PROBLEMS.set(len(st.problems))


def schedule_round(
    settings: Settings, bk: PgBackRest, known: frozenset[str] = frozenset()
) -> frozenset[str]:
    """One round of ``qilu backup schedule``: the backup that is due, then the status into
    the metrics. Problems are logged when they appear and when they are gone, not every
    round; returns the kinds of problem now (the text before the first colon)."""
    try:
        try:
            kind = due_backup(bk.info(), datetime.now(UTC), settings.backup)
        except ServiceError:
            kind = None  # the repository cannot be read: the status below says so
        if kind is not None:
            logger.info("backup: %s backup due, starting", kind)
            bk.backup(kind)
        st = current_status(settings, bk)
    except (ServiceError, psycopg.Error) as exc:  # the next round tries again
        PROBLEMS.set(max(1, len(known)))
        if "round failed" not in known:
            logger.warning("backup schedule round failed: %s", exc)
        return known | {"round failed"}
    export(st)
    kinds = frozenset(p.split(":")[0] for p in st.problems)
    for p in st.problems:
        if p.split(":")[0] not in known:
            logger.warning("backup: %s", p)
    if known and not kinds:
        logger.warning("backup: healthy again")
    return kinds


def _schedule(args: argparse.Namespace, settings: Settings) -> int:
    port = args.metrics_port if args.metrics_port is not None else settings.backup.metrics_port
    if port:
        start_http_server(port, addr="127.0.0.1")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    bk = tool(settings)
    known: frozenset[str] = frozenset()
    while not stop.is_set():
        known = schedule_round(settings, bk, known)
        stop.wait(args.interval_s)
    return 0


def _point(args: argparse.Namespace, settings: Settings) -> int:
    with connect(settings.db, autocommit=True) as conn:
        lsn = create_restore_point(conn, args.name)
    if lsn is None:
        raise ServiceError(
            f"could not create restore point {args.name!r} (needs wal_level replica and a "
            "superuser or a role granted EXECUTE on pg_create_restore_point)"
        )
    _say(f"restore point {args.name} at WAL {lsn}")
    return 0


def parse_time(text: str) -> datetime:
    try:
        t = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError("--to", f"not an ISO 8601 time: {text!r}") from exc
    if t.tzinfo is None:
        raise ConfigError("--to", "the time needs a zone (e.g. 2026-12-06T14:05:00+08:00)")
    return t


# changes recorded in the audit log after a time: what a restore to that time undoes
_CHANGES_AFTER = (
    "SELECT at, actor, action, entity, entity_id FROM audit_log WHERE at >= %s"
    " ORDER BY at, audit_id"
)
_POINT_TIME = (
    "SELECT min(at) FROM audit_log WHERE action = 'registry.import'"
    " AND after->>'restore_point' = %s"
)


def restore_target(args: argparse.Namespace) -> RestoreTarget:
    given = [o for o, v in (("--to", args.to), ("--point", args.point)) if v]
    if args.latest and given:
        raise ConfigError("--latest", f"give --latest or {given[0]}, not both")
    if not args.latest and not given:
        raise ConfigError(
            "--to/--point/--latest",
            "say where to go back to: --to TIME, --point NAME, or --latest for the end of "
            "the WAL archive",
        )
    return RestoreTarget(time=parse_time(args.to) if args.to else None, point=args.point)


def changes_after(
    conn: psycopg.Connection[Any], target: RestoreTarget
) -> tuple[datetime | None, list[tuple[Any, ...]]]:
    """The audit log's changes a restore to ``target`` undoes (from the database as it is
    now): from the target time on, or for a restore point that a registry import created,
    from that import on. (None, []) when that time is unknown (an operator's point, or the
    end of the archive)."""
    since = target.time
    if target.point is not None:
        row = conn.execute(_POINT_TIME, (target.point,)).fetchone()
        since = row[0] if row else None
    if since is None:
        return None, []
    return since, conn.execute(_CHANGES_AFTER, (since,)).fetchall()


def _say_changes(settings: Settings, target: RestoreTarget) -> None:
    """The registry, agent and API key changes the restore undoes, or how to find them."""
    if target.time is None and target.point is None:
        return
    try:
        with connect(settings.db) as conn:
            since, rows = changes_after(conn, target)
    except psycopg.Error as exc:
        _say(f"  the running database does not answer ({str(exc).strip()[:200]}): list the ")
        _say("  changes the restore undoes from a copy of it (docs/operations.md)")
        return
    if since is None:
        _say("  the audit log cannot tell when this restore point was made: list the changes")
        _say("  after it by hand (docs/operations.md)")
        return
    if not rows:
        _say(f"  the audit log has no change since {since.isoformat()}: nothing to re-apply")
        return
    _say(f"  the restore undoes {len(rows)} change(s) of the audit log since {since.isoformat()};")
    _say("  re-apply them before starting the ingest (else envelopes of agents provisioned")
    _say("  or given sites after that time are refused on replay):")
    for at, actor, action, entity, entity_id in rows:
        _say(f"    {at.isoformat()}  {action} {entity} {entity_id}  by {actor}")


def _restore(args: argparse.Namespace, settings: Settings) -> int:
    target = restore_target(args)
    bk = tool(settings)
    data_dir = (args.data_dir or bk.layout.data_dir).resolve()
    if not bk.layout.config_file.exists():
        # a new server: the repository is reachable, `qilu backup setup` never ran here
        if args.dry_run:
            _say(f"{bk.layout.config_file} is missing: the restore writes it from the settings")
            return 1
        bk.write_config()
        _say(f"wrote {bk.layout.config_file} (repository {bk.layout.repo_path})")
    backups = bk.info()
    chosen = pick_backup(backups, target)
    _say(f"restore to {target.describe()} into {data_dir}")
    if chosen is None:
        _say(
            "  no backup qualifies: pgBackRest needs one whose stop time, in whole seconds, "
            "is earlier than the target (`qilu backup status` lists them); nothing was changed"
        )
        return 1
    _say(
        f"  from backup {chosen.label} ({chosen.type}, finished "
        f"{chosen.stopped.isoformat()}), then WAL from {chosen.wal_start} on"
    )
    if args.dry_run:
        if data_dir.exists() and any(data_dir.iterdir()):
            _say(f"  {data_dir} is not empty: move it away first (the restore refuses it)")
        _say(
            "  " + " ".join(restore_argv(bk.layout, target, data_dir, archive=not args.no_archive))
        )
        _say_changes(settings, target)
        _say("  then: start PostgreSQL on it; it replays WAL to the target and promotes;")
        _say("  then: start the ingest; it resumes from the restored database's offsets")
        return 0
    began = time.monotonic()
    bk.restore(target, data_dir, archive=not args.no_archive)
    _say(
        f"restored into {data_dir} in {time.monotonic() - began:.1f} s; start PostgreSQL on "
        "it (`qilu services up postgres` for the services cluster): it replays the WAL "
        f"archive to {target.describe()} and promotes."
    )
    _say(
        "Before starting the ingest, re-apply the registry, agent and API key changes made "
        "after the target (`qilu restore --dry-run` lists them from the damaged database's "
        "audit log; docs/operations.md): envelopes of agents provisioned after it are "
        "refused on replay otherwise. Then start the ingest."
    )
    return 0
