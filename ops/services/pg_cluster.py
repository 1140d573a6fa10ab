"""The cluster profile's PostgreSQL: a primary and a streaming replica managed by Patroni.

Debian's ``patroni`` (3.0.2) runs one agent per PostgreSQL node; the agents elect the primary
through a leader key in ``etcd`` (Debian's ``etcd-server``: three members, ``etcd-1`` ..
``etcd-3``, a quorum that survives the loss of one, as in production), promote the replica
when the primary's key expires, and rejoin the old primary as a replica (``pg_rewind``).
Why Patroni and not pg_auto_failover: docs/adr/0017-postgres-failover.md.

Writers reach whichever node is primary with one connection string listing both nodes and
``target_session_attrs=read-write`` (``QILU_DB__HOST=127.0.0.21,127.0.0.22``,
``QILU_DB__TARGET_SESSION_ATTRS=read-write``).
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, ClassVar

from ops.services import proc, render
from ops.services.base import ProbeError, Progress, Server
from ops.services.postgres import PG_BIN, PG_MAJOR, SUPERUSER, SYSTEM_USER
from ops.services.proc import Launch
from ops.services.tools import chown_tree, is_root, make_traversable, user_exists
from qilu.errors import ServiceError

REPLICATOR = "replicator"


def _http_get(url: str, timeout_s: float) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - http only
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        raise ProbeError(f"GET {url}: {exc}") from exc


class EtcdMember(Server):
    """Member ``member_id`` (1-based) of the etcd quorum holding Patroni's leader key, on
    ``cluster_etcd_hosts[member_id - 1]``; the members start together (a member answers
    ``/health`` only once a majority of them runs)."""

    member_id: ClassVar[int]
    install_note = "installing etcd-server (first run)..."
    starts_with_peers = True

    @property
    def host(self) -> str:
        return self.ctx.settings.cluster_etcd_hosts[self.member_id - 1]

    def ports(self) -> dict[str, int]:
        s = self.ctx.settings
        return {
            "cluster_etcd_port": s.cluster_etcd_port,
            "cluster_etcd_peer_port": s.cluster_etcd_peer_port,
        }

    def installed(self) -> bool:
        return shutil.which("etcd") is not None

    def install(self, progress: Progress) -> None:
        self.apt.install(["etcd-server"], why="etcd", progress=progress)

    def configure(self, progress: Progress) -> None:
        del progress
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)

    def command(self) -> Launch:
        s = self.ctx.settings
        argv = render.etcd_member_args(
            member_id=self.member_id,
            hosts=s.cluster_etcd_hosts,
            client_port=s.cluster_etcd_port,
            peer_port=s.cluster_etcd_peer_port,
            data_dir=self.data_dir,
        )
        return Launch(argv=[shutil.which("etcd") or "etcd", *argv], cwd=self.home)

    def probe(self, timeout_s: float) -> None:
        url = f"http://{self.host}:{self.ctx.settings.cluster_etcd_port}/health"
        code, body = _http_get(url, timeout_s)
        if code != 200 or b'"true"' not in body:
            raise ProbeError(f"GET {url}: {code} {body[:200]!r}")


class EtcdMember1(EtcdMember):
    name = "etcd-1"
    member_id = 1


class EtcdMember2(EtcdMember):
    name = "etcd-2"
    member_id = 2


class EtcdMember3(EtcdMember):
    name = "etcd-3"
    member_id = 3


class PatroniNode(Server):
    """PostgreSQL node ``node_id`` (1-based) under Patroni, on ``cluster_pg_hosts``."""

    node_id: ClassVar[int]
    install_note = "installing patroni (first run)..."
    stop_timeout_s = 90.0

    @property
    def host(self) -> str:
        return self.ctx.settings.cluster_pg_hosts[self.node_id - 1]

    @property
    def config_file(self) -> Path:
        return self.home / "patroni.yml"

    @property
    def run_as(self) -> str | None:
        return SYSTEM_USER if is_root() else None

    def ports(self) -> dict[str, int]:
        s = self.ctx.settings
        return {
            "cluster_pg_port": s.cluster_pg_port,
            "cluster_patroni_port": s.cluster_patroni_port,
        }

    def installed(self) -> bool:
        return shutil.which("patroni") is not None and (PG_BIN / "postgres").exists()

    def install(self, progress: Progress) -> None:
        self.apt.install(["patroni", f"postgresql-{PG_MAJOR}"], why="patroni", progress=progress)

    def rendered_config(self) -> str:
        s = self.ctx.settings
        return json.dumps(
            render.patroni_config(
                node_name=self.name,
                host=self.host,
                pg_port=s.cluster_pg_port,
                api_port=s.cluster_patroni_port,
                etcd=",".join(f"{h}:{s.cluster_etcd_port}" for h in s.cluster_etcd_hosts),
                data_dir=self.data_dir,
                run_dir=self.home / "run",
                bin_dir=PG_BIN,
                superuser=SUPERUSER,
                password=self.ctx.db.password.get_secret_value(),
                replicator=REPLICATOR,
            ),
            indent=2,
        )

    def config_current(self) -> bool:
        try:
            return self.config_file.read_text() == self.rendered_config()
        except OSError:
            return False

    def configure(self, progress: Progress) -> None:
        del progress
        user = self.run_as
        if user is not None and not user_exists(user):
            raise ServiceError(f"{self.name}: running as root needs the '{user}' system user")
        (self.home / "run").mkdir(parents=True, exist_ok=True)
        # the JSON is YAML too; 0600: it holds the passwords
        self.config_file.write_text(self.rendered_config())
        self.config_file.chmod(0o600)
        if user is not None:
            make_traversable(self.home)
            chown_tree(self.home, user)

    def command(self) -> Launch:
        return Launch(
            argv=[shutil.which("patroni") or "patroni", str(self.config_file)],
            cwd=self.home,
            user=self.run_as,
            env={"LC_ALL": "C.UTF-8"},
        )

    def detached_pids(self) -> list[int]:
        """Patroni starts PostgreSQL detached from itself: its postmaster, if running."""
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
            pid = int(first)
        except (OSError, ValueError):
            return []
        return [pid] if proc.read_stat(pid) is not None else []

    def api(self, path: str, timeout_s: float = 3.0) -> tuple[int, dict[str, Any]]:
        """Patroni's REST API on this node: status code and JSON body."""
        url = f"http://{self.host}:{self.ctx.settings.cluster_patroni_port}{path}"
        code, body = _http_get(url, timeout_s)
        try:
            doc = json.loads(body) if body else {}
        except ValueError:
            doc = {}
        return code, doc if isinstance(doc, dict) else {}

    def probe(self, timeout_s: float) -> None:
        # 200 once PostgreSQL runs on this node (primary, or replica streaming)
        code, doc = self.api("/health", timeout_s)
        if code != 200:
            raise ProbeError(f"patroni /health: {code} {doc.get('state', '')}")

    def primary_host(self, timeout_s: float | None = None) -> str:
        """The node Patroni made primary (waits for an election or a bootstrap in progress,
        at most ``timeout_s``, by default the services' start timeout)."""
        if timeout_s is None:
            timeout_s = self.ctx.settings.start_timeout_s
        deadline = time.monotonic() + timeout_s
        s = self.ctx.settings
        while True:
            for host in s.cluster_pg_hosts:
                try:
                    code, _ = _http_get(f"http://{host}:{s.cluster_patroni_port}/primary", 3.0)
                except ProbeError:
                    continue
                if code == 200:
                    return host
            if time.monotonic() > deadline:
                raise ServiceError(f"{self.name}: no primary after {timeout_s:.0f} s")
            time.sleep(0.5)

    def after_start(self, progress: Progress) -> None:
        """The application's database on the primary, as the single-node profile does."""
        import psycopg
        from psycopg import sql
        from psycopg.conninfo import make_conninfo

        db = self.ctx.db
        info = make_conninfo(
            host=self.primary_host(),
            port=self.ctx.settings.cluster_pg_port,
            user=SUPERUSER,
            password=db.password.get_secret_value(),
            dbname="postgres",
            sslmode="disable",
            connect_timeout=10,
        )
        try:
            with psycopg.connect(info, autocommit=True) as conn:
                found = conn.execute(
                    "select 1 from pg_database where datname = %s", (db.name,)
                ).fetchone()
                if found is None:
                    progress(f"{self.name}: creating database {db.name}")
                    conn.execute(sql.SQL("create database {}").format(sql.Identifier(db.name)))
        except psycopg.Error as exc:
            raise ServiceError(f"{self.name}: could not create database {db.name}: {exc}") from exc


class PatroniNode1(PatroniNode):
    name = "pg-1"
    node_id = 1


class PatroniNode2(PatroniNode):
    name = "pg-2"
    node_id = 2
