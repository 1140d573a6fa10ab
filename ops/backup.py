"""Backups of the platform's PostgreSQL cluster with pgBackRest, and point-in-time restores.

Continuous WAL archiving plus full and differential base backups into a pgBackRest
repository (local by default, any repository type pgBackRest supports through
``backup.repo_options``); restores to a time or to a named restore point into an empty data
directory. docs/operations.md is the runbook; docs/adr/0016 says how the ingest then replays
Kafka from the offsets the restored database holds.

Pure (no I/O): :func:`render_config` (pgbackrest.conf), :func:`archive_conf` (the
PostgreSQL settings that archive WAL), :func:`restore_argv`, :func:`parse_info` (``pgbackrest
info --output=json``), :func:`due_backup` (what the schedule runs next) and :func:`assess`
(the status verdict). The archiver's state (its query, also the Grafana alert rule
``qilu-wal-archive-stalled``, and its lag) is :mod:`storage.wal_archive`.

I/O: :class:`PgBackRest` runs the tool as the cluster's system user (``postgres`` when we
are root, as the services code runs the server) and installs the Debian package
``pgbackrest`` on first use, like the other services.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ops.services.base import Progress
from ops.services.render import postgres_socket_dir
from ops.services.tools import Apt, chown_tree, is_root, run_tool
from qilu.errors import ConfigError, ServiceError
from qilu.settings import BackupSettings, DatabaseSettings, ServicesSettings
from storage.restore_points import RESTORE_POINT
from storage.wal_archive import ArchiverState, archive_lag_s, pending_segments

logger = logging.getLogger(__name__)

PACKAGE = "pgbackrest"
BACKUP_CONF = "qilu-backup.conf"  # in the data dir, included from postgresql.conf
INCLUDE_LINE = f"include_if_exists = '{BACKUP_CONF}'"
SYSTEM_USER = "postgres"  # the cluster's OS user, which runs pgbackrest when we are root
SUPERUSER = "postgres"  # the database role pgbackrest connects as (the services cluster's)
WAL_SEGMENT_BYTES = 16 * 1024 * 1024  # initdb's default; segments per "log" file: 256


class BackupType(enum.StrEnum):
    FULL = "full"
    DIFF = "diff"
    INCR = "incr"


# ---------------------------------------------------------------------------- layout (pure)


@dataclass(frozen=True, slots=True)
class Layout:
    """Where everything is, from the settings (no I/O)."""

    stanza: str
    home: Path
    repo_path: Path
    data_dir: Path
    socket_dir: str  # "" when the path is too long for a unix socket
    port: int
    repo_options: dict[str, str] = field(default_factory=dict)

    @property
    def config_file(self) -> Path:
        return self.home / "pgbackrest.conf"

    @property
    def log_dir(self) -> Path:
        return self.home / "log"

    @property
    def lock_dir(self) -> Path:
        return self.home / "lock"

    @property
    def tool_log(self) -> Path:
        return self.home / "qilu-backup.log"

    @classmethod
    def of(cls, backup: BackupSettings, services: ServicesSettings, db: DatabaseSettings) -> Layout:
        state = services.state_dir.resolve()
        home = (backup.home or state / "pgbackrest").resolve()
        pg_home = state / "postgres"
        port = db.port
        socket = (
            str(backup.pg_socket_dir)
            if backup.pg_socket_dir is not None
            else postgres_socket_dir(pg_home / "run", port)
        )
        return cls(
            stanza=backup.stanza,
            home=home,
            repo_path=(backup.repo_path or home / "repo").resolve(),
            data_dir=(backup.pg_data_dir or pg_home / "data").resolve(),
            socket_dir=socket,
            port=port,
            repo_options=dict(backup.repo_options),
        )


def render_config(layout: Layout, backup: BackupSettings) -> str:
    """pgbackrest.conf: the repository, retention and the cluster of the stanza."""
    if not layout.socket_dir:
        raise ConfigError(
            "backup.pg_socket_dir",
            "pgBackRest reaches PostgreSQL through its unix socket, and the services state "
            "path is too long for one; set a shorter services.state_dir or pg_socket_dir",
        )
    glob = {
        "repo1-path": str(layout.repo_path),
        "repo1-retention-full": str(backup.retention_full),
        "repo1-retention-diff": str(backup.retention_diff),
        **layout.repo_options,
        "log-path": str(layout.log_dir),
        "lock-path": str(layout.lock_dir),
        "log-level-console": "warn",
        "log-level-file": "info",
        "start-fast": "y",
        "process-max": str(backup.process_max),
        "compress-type": "lz4",
        "archive-check": "y",
    }
    stanza = {
        "pg1-path": str(layout.data_dir),
        "pg1-port": str(layout.port),
        "pg1-socket-path": layout.socket_dir,
        "pg1-user": SUPERUSER,
    }
    lines = ["# written by `qilu backup setup` (ops/backup.py); edits are overwritten"]
    lines += ["[global]", *(f"{k}={v}" for k, v in glob.items()), ""]
    lines += [f"[{layout.stanza}]", *(f"{k}={v}" for k, v in stanza.items())]
    return "\n".join(lines) + "\n"


def base_argv(layout: Layout) -> list[str]:
    return [PACKAGE, f"--config={layout.config_file}", f"--stanza={layout.stanza}"]


def archive_conf(layout: Layout, backup: BackupSettings) -> str:
    """The PostgreSQL settings that archive every WAL segment into the repository."""
    push = " ".join([*base_argv(layout), "archive-push", "%p"])
    return (
        "# written by `qilu backup setup` (ops/backup.py): WAL archiving with pgBackRest\n"
        "wal_level = replica\n"
        "archive_mode = on\n"
        f"archive_command = '{push}'\n"
        f"archive_timeout = {backup.archive_timeout_s}\n"
    )


def with_include(postgresql_conf: str) -> str:
    """postgresql.conf with the include of :data:`BACKUP_CONF` appended once."""
    if any(line.strip() == INCLUDE_LINE for line in postgresql_conf.splitlines()):
        return postgresql_conf
    sep = "" if postgresql_conf.endswith("\n") or not postgresql_conf else "\n"
    return f"{postgresql_conf}{sep}# qilu backup: WAL archiving\n{INCLUDE_LINE}\n"


@dataclass(frozen=True, slots=True)
class RestoreTarget:
    """Where recovery stops: a time, a named restore point, or the end of the archive."""

    time: datetime | None = None
    point: str | None = None

    def __post_init__(self) -> None:
        if self.time is not None and self.point is not None:
            raise ConfigError("--to/--point", "give a time or a restore point, not both")
        if self.time is not None and self.time.tzinfo is None:
            raise ConfigError("--to", "the time needs a zone (e.g. 2026-12-06T14:05:00+08:00)")
        if self.point is not None and not RESTORE_POINT.match(self.point):
            raise ConfigError("--point", f"not a restore point name: {self.point!r}")

    def describe(self) -> str:
        if self.time is not None:
            return f"time {self.time.isoformat()}"
        if self.point is not None:
            return f"restore point {self.point!r}"
        return "the end of the WAL archive"


def restore_argv(
    layout: Layout, target: RestoreTarget, data_dir: Path, *, archive: bool = True
) -> list[str]:
    """The ``pgbackrest restore`` command into ``data_dir`` (promoted at the target)."""
    argv = [*base_argv(layout), f"--pg1-path={data_dir}"]
    if target.time is not None:
        stamp = target.time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
        argv += ["--type=time", f"--target={stamp}", "--target-action=promote"]
    elif target.point is not None:
        argv += ["--type=name", f"--target={target.point}", "--target-action=promote"]
    if not archive:
        # a copy beside the original must not push WAL into the original's archive
        argv.append("--archive-mode=off")
    return [*argv, "restore"]


# ------------------------------------------------------------------------ status (pure)


@dataclass(frozen=True, slots=True)
class BackupInfo:
    label: str
    type: BackupType
    started: datetime
    stopped: datetime
    database_bytes: int
    repo_bytes: int  # what this backup adds to the repository
    wal_start: str
    wal_stop: str


# pgBackRest's stanza status codes that still mean "the repository answered": 0 ok, 2 no
# valid backups yet
_INFO_OK = (0, 2)


def parse_info(text: str, stanza: str) -> list[BackupInfo]:
    """The backups of ``stanza`` in ``pgbackrest info --output=json``, oldest first.
    ServiceError when the stanza is not there or its repository cannot be read (pgBackRest
    answers those with exit 0 and a status code in the JSON)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ServiceError(f"pgbackrest info: not JSON ({exc}): {text[:200]!r}") from exc
    out: list[BackupInfo] = []
    found = False
    for st in doc if isinstance(doc, list) else []:
        if st.get("name") != stanza:
            continue
        found = True
        status = st.get("status", {})
        if status.get("code", 0) not in _INFO_OK:
            raise ServiceError(
                f"pgbackrest info: stanza {stanza}: {status.get('message', 'unknown error')} "
                f"(status {status.get('code')})"
            )
        for b in st.get("backup", []):
            ts = b.get("timestamp", {})
            info = b.get("info", {})
            archive = b.get("archive", {})
            out.append(
                BackupInfo(
                    label=str(b["label"]),
                    type=BackupType(b["type"]),
                    started=datetime.fromtimestamp(int(ts["start"]), UTC),
                    stopped=datetime.fromtimestamp(int(ts["stop"]), UTC),
                    database_bytes=int(info.get("size", 0)),
                    repo_bytes=int(info.get("repository", {}).get("delta", 0)),
                    wal_start=str(archive.get("start") or ""),
                    wal_stop=str(archive.get("stop") or ""),
                )
            )
    if not found:
        raise ServiceError(f"pgbackrest info: no stanza {stanza} (run `qilu backup setup`)")
    return sorted(out, key=lambda b: b.stopped)


def due_backup(
    backups: Sequence[BackupInfo], now: datetime, backup: BackupSettings
) -> BackupType | None:
    """What the schedule runs now: a full one when there is none or the last is older than
    ``full_every_h``, a differential when the newest backup is older than ``diff_every_h``."""
    fulls = [b for b in backups if b.type is BackupType.FULL]
    if not fulls or now - fulls[-1].started >= timedelta(hours=backup.full_every_h):
        return BackupType.FULL
    if now - backups[-1].started >= timedelta(hours=backup.diff_every_h):
        return BackupType.DIFF
    return None


@dataclass(frozen=True, slots=True)
class BackupStatus:
    last: BackupInfo | None
    last_full: BackupInfo | None
    backups: int
    repo_bytes: int
    archive_lag_s: float
    archive_failing: bool
    pending_segments: int | None
    archive_mode: str
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def assess(
    backups: Sequence[BackupInfo],
    archiver: ArchiverState,
    repo_bytes: int,
    backup: BackupSettings,
    repo_error: str | None = None,
) -> BackupStatus:
    """The status and what is wrong with it (empty: healthy). ``repo_error``: the repository
    could not be read (its backups are then unknown, the archiver's state still counts)."""
    problems: list[str] = []
    if repo_error is not None:
        problems.append(f"the backup repository cannot be read: {repo_error}")
    now = archiver.now
    last = backups[-1] if backups else None
    fulls = [b for b in backups if b.type is BackupType.FULL]
    if archiver.archive_mode == "off":
        problems.append("WAL archiving is off: run `qilu backup setup` and restart PostgreSQL")
    lag = archive_lag_s(archiver)
    if lag > backup.max_archive_lag_s:
        problems.append(
            f"WAL archiving stalled: {pending_segments(archiver)} segment(s) waiting, no "
            f"progress for {lag:.0f} s (limit {backup.max_archive_lag_s:.0f} s)"
            + (f"; last failure at {archiver.last_failed_time}" if archiver.failing else "")
        )
    if last is None:
        if repo_error is None:
            problems.append("no backup yet: run `qilu backup run --type full`")
    elif now - last.stopped > timedelta(hours=backup.max_backup_age_h):
        age_h = (now - last.stopped).total_seconds() / 3600
        problems.append(
            f"the last backup is {age_h:.1f} h old (limit {backup.max_backup_age_h:g} h)"
        )
    return BackupStatus(
        last=last,
        last_full=fulls[-1] if fulls else None,
        backups=len(backups),
        repo_bytes=repo_bytes,
        archive_lag_s=lag,
        archive_failing=archiver.failing,
        pending_segments=pending_segments(archiver),
        archive_mode=archiver.archive_mode,
        problems=problems,
    )


def pick_backup(backups: Sequence[BackupInfo], target: RestoreTarget) -> BackupInfo | None:
    """The backup pgBackRest starts from for a time target: the newest one whose recorded
    stop time is strictly earlier than the target, both in whole seconds as pgBackRest
    compares them (a target in the same second as a backup's stop cannot use that backup;
    for a restore point or the end of the archive: the newest)."""
    if target.time is None:
        return backups[-1] if backups else None
    limit = int(target.time.timestamp())
    before = [b for b in backups if int(b.stopped.timestamp()) < limit]
    return before[-1] if before else None


# ------------------------------------------------------------------------------------ I/O


class PgBackRest:
    """pgBackRest for one cluster: set up, back up, report, restore."""

    def __init__(self, layout: Layout, backup: BackupSettings, apt: Apt | None = None) -> None:
        self.layout = layout
        self.settings = backup
        self.apt = apt or Apt(layout.home / "apt.log")

    @property
    def user(self) -> str | None:
        return SYSTEM_USER if is_root() else None

    # -- install and configure
    def installed(self) -> bool:
        return shutil.which(PACKAGE) is not None

    def install(self, progress: Progress) -> None:
        if self.installed():
            return
        self.apt.install([PACKAGE], why="backup", progress=progress)
        if not self.installed():
            raise ServiceError(f"backup: installed {PACKAGE} but it is not on PATH")

    def configure(self, progress: Progress) -> None:
        """Write pgbackrest.conf and the archiving settings (idempotent). They take effect
        with a reload of PostgreSQL, except ``archive_mode``, which needs a restart."""
        lay = self.layout
        if not (lay.data_dir / "PG_VERSION").exists():
            raise ServiceError(f"backup: no PostgreSQL cluster in {lay.data_dir}")
        self.write_config()
        (lay.data_dir / BACKUP_CONF).write_text(archive_conf(lay, self.settings))
        conf = lay.data_dir / "postgresql.conf"
        conf.write_text(with_include(conf.read_text()))
        if self.user is not None:
            lay.home.chmod(0o750)
            chown_tree(lay.home, self.user)
            chown_tree(lay.data_dir / BACKUP_CONF, self.user)
        progress(f"backup: pgBackRest configured in {lay.config_file}, repository {lay.repo_path}")

    def write_config(self) -> None:
        """pgbackrest.conf and the folders it names (also what a restore on a new server,
        which never ran ``qilu backup setup``, needs to reach the repository)."""
        lay = self.layout
        for d in (lay.home, lay.log_dir, lay.lock_dir, lay.repo_path):
            d.mkdir(parents=True, exist_ok=True)
        lay.config_file.write_text(render_config(lay, self.settings))
        if self.user is not None:
            shutil.chown(lay.home, self.user, self.user)  # not the repository inside
            for path in (lay.config_file, lay.log_dir, lay.lock_dir):
                chown_tree(path, self.user)

    # -- running the tool
    def _env(self) -> dict[str, str]:
        return {"PGBACKREST_CONFIG": str(self.layout.config_file)}

    def run(self, args: Sequence[str], *, what: str, timeout_s: float = 3600.0) -> None:
        """A long step (backup, restore, stanza-create), output in the tool log."""
        run_tool(
            [*base_argv(self.layout), *args],
            what=f"pgbackrest {what}",
            log_file=self.layout.tool_log,
            hint=f"pgBackRest's own log is in {self.layout.log_dir}",
            timeout_s=timeout_s,
            cwd=self.layout.home,
            user=self.user,
        )

    def output(self, args: Sequence[str], *, timeout_s: float = 120.0) -> str:
        """A query step (info): its standard output."""
        if not self.layout.config_file.exists():
            raise ServiceError(
                f"backup: not set up ({self.layout.config_file} missing); run `qilu backup setup`"
            )
        try:
            done = subprocess.run(
                [*base_argv(self.layout), *args],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
                cwd=self.layout.home,
                user=self.user,
                group=self.user,
                extra_groups=[] if self.user is not None else None,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ServiceError(f"pgbackrest {' '.join(args)}: {exc}") from exc
        if done.returncode != 0:
            raise ServiceError(
                f"pgbackrest {' '.join(args)} failed (exit {done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-1000:]}"
            )
        return done.stdout

    def stanza_create(self) -> None:
        self.run(["stanza-create"], what="stanza-create", timeout_s=300)

    def check(self) -> None:
        """pgbackrest check: the configuration is right and a WAL switch gets archived."""
        self.run(["check"], what="check", timeout_s=300)

    def backup(self, kind: BackupType) -> None:
        """A backup, then the retention applied (``pgbackrest expire``: backups beyond
        ``retention_full``/``retention_diff`` and the WAL only they need are removed)."""
        self.run([f"--type={kind.value}", "backup"], what=f"backup ({kind.value})")
        self.expire()

    def expire(self) -> None:
        self.run(["expire"], what="expire", timeout_s=600)

    def info(self) -> list[BackupInfo]:
        return parse_info(self.output(["--output=json", "info"]), self.layout.stanza)

    def repo_bytes(self, backups: Sequence[BackupInfo]) -> int:
        """The repository's size: on disk for a local one, else what the backups hold."""
        if self.settings.repo_options.get("repo1-type", "posix") == "posix":
            total = 0
            for root, _, files in os.walk(self.layout.repo_path):
                for name in files:
                    try:
                        total += (Path(root) / name).stat().st_size
                    except FileNotFoundError:
                        continue  # expired while we walked
            return total
        return sum(b.repo_bytes for b in backups)

    def restore(self, target: RestoreTarget, data_dir: Path, *, archive: bool = True) -> None:
        """Restore into ``data_dir`` (missing or empty): start PostgreSQL on it afterwards,
        and it replays WAL up to the target and promotes."""
        if data_dir.exists() and any(data_dir.iterdir()):
            raise ConfigError(
                "--data-dir", f"{data_dir} is not empty: restore into a fresh directory"
            )
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.user is not None:
            chown_tree(data_dir, self.user)
        argv = restore_argv(self.layout, target, data_dir, archive=archive)
        self.run(argv[len(base_argv(self.layout)) :], what="restore", timeout_s=24 * 3600)
