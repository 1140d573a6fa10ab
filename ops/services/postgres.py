"""PostgreSQL 15 from Debian packages, in its own cluster under the state dir."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

from ops.services import proc, render
from ops.services.base import ProbeError, Progress, Server
from ops.services.proc import Launch
from ops.services.tools import chown_tree, is_root, make_traversable, run_tool, user_exists
from qilu.errors import ServiceError

logger = logging.getLogger(__name__)

PG_MAJOR = 15
PG_BIN = Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin")
SUPERUSER = "postgres"
SYSTEM_USER = "postgres"  # PostgreSQL refuses to run as root


class Postgres(Server):
    name = "postgres"
    # SIGINT to the postmaster is exactly `pg_ctl stop -m fast`: roll back open
    # transactions, disconnect clients, write a shutdown checkpoint
    stop_signal = signal.SIGINT
    stop_timeout_s = 90.0
    install_note = f"installing postgresql-{PG_MAJOR} (first run)..."

    @property
    def socket_dir(self) -> Path:
        return self.home / "run"

    @property
    def run_as(self) -> str | None:
        return SYSTEM_USER if is_root() else None

    def ports(self) -> dict[str, int]:
        return {"postgres_port": self.ctx.settings.postgres_port}

    # ---- install

    def installed(self) -> bool:
        return (PG_BIN / "initdb").exists() and (PG_BIN / "postgres").exists()

    def install(self, progress: Progress) -> None:
        self.apt.install([f"postgresql-{PG_MAJOR}"], why="postgres", progress=progress)
        if not self.installed():
            raise ServiceError(f"postgres: installed postgresql-{PG_MAJOR} but {PG_BIN} is empty")

    # ---- configure

    def configure(self, progress: Progress) -> None:
        user = self.run_as
        if user is not None and not user_exists(user):
            raise ServiceError(
                f"postgres: running as root needs the '{user}' system user "
                f"(created by the postgresql-{PG_MAJOR} package); reinstall it"
            )
        self.home.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if user is not None:
            changed = make_traversable(self.home)
            if changed:
                logger.warning(
                    "postgres: gave others execute permission on %s so the postgres user "
                    "can reach its data dir",
                    ", ".join(map(str, changed)),
                )
            chown_tree(self.socket_dir, user)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(progress, user)
        self._wait_for_dead_postmaster()
        conf = self.data_dir / "postgresql.conf"
        conf.write_text(render.with_postgres_include(conf.read_text()))
        s = self.ctx.settings
        socket_dir = render.postgres_socket_dir(self.socket_dir, s.postgres_port)
        if not socket_dir:
            logger.info("postgres: state path too long for a unix socket; TCP only")
        qilu_conf = self.data_dir / "qilu.conf"
        qilu_conf.write_text(
            render.postgres_conf(host=s.host, port=s.postgres_port, socket_dir=socket_dir)
        )
        if user is not None:
            chown_tree(conf, user)
            chown_tree(qilu_conf, user)

    def _wait_for_dead_postmaster(self) -> None:
        """After a crash (kill -9) the old postmaster may linger as a zombie until its
        parent reaps it; PostgreSQL would take that pid for a live postmaster and refuse."""
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
            old_pid = int(first)
        except (OSError, ValueError):
            return
        st = proc.read_stat(old_pid)
        if st is None or st.state not in ("Z", "X"):
            return  # gone (postgres clears the stale file) or alive (postgres says so)
        if not proc.wait_reaped(old_pid, st.start_ticks, 30.0):
            raise ServiceError(
                f"postgres: the previous postmaster (pid {old_pid}) is a zombie nobody reaps; "
                f"its parent (pid {st.ppid}) must wait() for it before postgres can restart"
            )

    def _initdb(self, progress: Progress, user: str | None) -> None:
        progress(f"postgres: creating the cluster in {self.data_dir} (first run)...")
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise ServiceError(
                f"postgres: {self.data_dir} is not empty but holds no cluster; "
                "move it away or delete it"
            )
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        pwfile = self.home / ".pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.ctx.db.password.get_secret_value() + "\n")
        try:
            if user is not None:
                chown_tree(self.data_dir, user)
                chown_tree(pwfile, user)
            run_tool(
                render.initdb_command(
                    initdb=str(PG_BIN / "initdb"),
                    data_dir=self.data_dir,
                    pwfile=pwfile,
                    superuser=SUPERUSER,
                ),
                what="postgres: initdb",
                log_file=self.install_log,
                hint=f"to start over: rm -rf {self.data_dir}",
                timeout_s=300,
                cwd=self.home,
                user=user,
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def command(self) -> Launch:
        return Launch(
            argv=[str(PG_BIN / "postgres"), "-D", str(self.data_dir)],
            cwd=self.data_dir,
            user=self.run_as,
            env={"LC_ALL": "C.UTF-8"},
        )

    # ---- readiness

    def conninfo(self, dbname: str = "postgres", timeout_s: float = 10.0) -> str:
        """libpq conninfo for the superuser (the password comes from ``Settings.db``)."""
        from psycopg.conninfo import make_conninfo

        return make_conninfo(
            host=self.ctx.host,
            port=self.ctx.settings.postgres_port,
            user=SUPERUSER,
            password=self.ctx.db.password.get_secret_value(),
            dbname=dbname,
            sslmode="disable",
            connect_timeout=max(1, round(timeout_s)),
            application_name="qilu-services",
        )

    def probe(self, timeout_s: float) -> None:
        import psycopg

        try:
            with psycopg.connect(self.conninfo("postgres", timeout_s)) as conn:
                conn.execute("select 1").fetchone()
        except psycopg.Error as exc:
            raise ProbeError(str(exc).strip()) from exc

    def after_start(self, progress: Progress) -> None:
        """Create the application role (if not the superuser) and database if missing."""
        import psycopg
        from psycopg import sql

        db = self.ctx.db
        try:
            with psycopg.connect(self.conninfo(), autocommit=True) as conn:
                if db.user != SUPERUSER:
                    exists = conn.execute(
                        "select 1 from pg_roles where rolname = %s", (db.user,)
                    ).fetchone()
                    if exists is None:
                        progress(f"postgres: creating role {db.user}")
                        conn.execute(
                            sql.SQL("create role {} login password {}").format(
                                sql.Identifier(db.user),
                                sql.Literal(db.password.get_secret_value()),
                            )
                        )
                found = conn.execute(
                    "select 1 from pg_database where datname = %s", (db.name,)
                ).fetchone()
                if found is None:
                    progress(f"postgres: creating database {db.name}")
                    conn.execute(
                        sql.SQL("create database {} owner {}").format(
                            sql.Identifier(db.name), sql.Identifier(db.user)
                        )
                    )
        except psycopg.Error as exc:
            raise ServiceError(f"postgres: could not create database {db.name}: {exc}") from exc
