"""A real TimescaleDB engine for tests: PGlite (PostgreSQL as WASM) + TimescaleDB, served
over the PostgreSQL wire protocol by pglite-socket (``infra/pglite/server.mjs``).

Limits: one client connection at a time (others queue), user/password postgres/postgres,
``sslmode=disable``, no COPY FROM STDIN, protocol messages under ~64 KB; clients must use
``prepare_threshold=None``.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from ops.services import render
from ops.services.base import ProbeError, Progress, Server
from ops.services.proc import Launch
from ops.services.tools import capture, run_tool
from qilu.errors import ServiceError

logger = logging.getLogger(__name__)

USER = "postgres"
PASSWORD = "postgres"  # noqa: S105 - fixed by the engine, loopback only
FILES = ("package.json", "package-lock.json", "server.mjs")
MARKER = ".qilu-installed"
MIN_NODE = 18


class Timescale(Server):
    name = "timescale"
    stop_timeout_s = 20.0
    busy_ok = True  # a client holding the single connection makes the probe queue
    install_note = "installing PGlite + TimescaleDB node modules (first run)..."

    @property
    def app_dir(self) -> Path:
        """package.json, server.mjs and node_modules, copied from infra/pglite."""
        return self.ctx.state_dir / "pglite"

    @property
    def source_dir(self) -> Path:
        return self.ctx.infra_dir / "pglite"

    def ports(self) -> dict[str, int]:
        return {"timescale_port": self.ctx.settings.timescale_port}

    def conninfo(self, timeout_s: float = 10.0) -> str:
        from psycopg.conninfo import make_conninfo

        return make_conninfo(
            host=self.ctx.host,
            port=self.ctx.settings.timescale_port,
            user=USER,
            password=PASSWORD,
            dbname="postgres",
            sslmode="disable",
            connect_timeout=max(1, round(timeout_s)),
        )

    def _fingerprint(self) -> str:
        parts = []
        for name in ("package.json", "package-lock.json"):
            path = self.source_dir / name
            parts.append(path.read_bytes() if path.exists() else b"")
        return render.content_fingerprint(parts) + "\n"

    def installed(self) -> bool:
        if shutil.which("node") is None:
            return False
        try:
            return (self.app_dir / MARKER).read_text() == self._fingerprint()
        except OSError:
            return False

    def install(self, progress: Progress) -> None:
        if shutil.which("node") is None or shutil.which("npm") is None:
            self.apt.install(["nodejs", "npm"], why="timescale: Node.js", progress=progress)
        self._require_node()
        for name in FILES:
            if not (self.source_dir / name).exists():
                raise ServiceError(f"timescale: {self.source_dir / name} is missing")
        progress(f"timescale: {self.install_note}")
        self.app_dir.mkdir(parents=True, exist_ok=True)
        self._copy_sources()
        run_tool(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=warn"],
            what="timescale: npm ci",
            log_file=self.install_log,
            hint=(
                "check that the npm registry is reachable (or ~/.npmrc points at a mirror); "
                f"to retry from scratch: rm -rf {self.app_dir}"
            ),
            timeout_s=900,
            cwd=self.app_dir,
        )
        (self.app_dir / MARKER).write_text(self._fingerprint())

    def _require_node(self) -> None:
        code, out = capture(["node", "--version"])
        try:
            major = int(out.strip().lstrip("v").split(".")[0]) if code == 0 else 0
        except ValueError:
            major = 0
        if major < MIN_NODE:
            raise ServiceError(
                f"timescale: Node.js {MIN_NODE}+ is needed, `node --version` says "
                f"{out.strip()[:80] or 'nothing'}; install a newer Node.js"
            )

    def _copy_sources(self) -> None:
        for name in FILES:
            src, dst = self.source_dir / name, self.app_dir / name
            if not dst.exists() or dst.read_bytes() != src.read_bytes():
                shutil.copyfile(src, dst)

    def configure(self, progress: Progress) -> None:
        # server.mjs may change without package.json changing: refresh it on every start
        self._copy_sources()
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def command(self) -> Launch:
        s = self.ctx.settings
        argv = render.timescale_command(
            node=shutil.which("node") or "node",
            script=self.app_dir / "server.mjs",
            data_dir=self.data_dir,
            host=s.host,
            port=s.timescale_port,
        )
        return Launch(argv=argv, cwd=self.app_dir)

    def probe(self, timeout_s: float) -> None:
        import psycopg

        try:
            with psycopg.connect(self.conninfo(timeout_s), prepare_threshold=None) as conn:
                conn.execute("select 1").fetchone()
        except psycopg.Error as exc:
            raise ProbeError(str(exc).strip()) from exc

    def after_start(self, progress: Progress) -> None:
        import psycopg

        try:
            with psycopg.connect(self.conninfo(), prepare_threshold=None, autocommit=True) as conn:
                row = conn.execute(
                    "select extversion from pg_extension where extname = 'timescaledb'"
                ).fetchone()
        except psycopg.Error as exc:
            raise ServiceError(f"timescale: engine answers but the check failed: {exc}") from exc
        if row is None:
            raise ServiceError(
                f"timescale: the timescaledb extension is not loaded; see {self.log_file}"
            )
        progress(f"timescale: timescaledb {row[0]} loaded")
