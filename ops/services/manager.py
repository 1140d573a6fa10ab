"""The manager: install-if-missing, start detached, wait until answering, stop, report.

Every operation is idempotent and bounded in time. ``up``/``down`` hold an exclusive lock
on ``<state>/.lock`` so two commands never start the same server twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from ops.services import proc, render
from ops.services.base import Context, ProbeError, Progress, Server, ServiceStatus, State
from ops.services.registry import DEFAULT_PROFILE, PROFILES
from ops.services.tools import TAIL_LINES, Apt
from qilu.errors import ServiceError
from qilu.settings import REPO_ROOT, DatabaseSettings, ServicesSettings

logger = logging.getLogger(__name__)

START_MARKER = "==== qilu services: starting"
LOCK_TIMEOUT_S = 1800.0  # a first install of everything on a slow mirror
PROBE_SLICE_S = 5.0
KILL_WAIT_S = 15.0


def _log_progress(message: str) -> None:
    logger.info("%s", message)


class Services:
    """Start, stop and inspect the local servers (see ``ALL_SERVICES``)."""

    def __init__(
        self,
        settings: ServicesSettings,
        db: DatabaseSettings | None = None,
        *,
        progress: Progress | None = None,
        repo_root: Path = REPO_ROOT,
        profile: str = DEFAULT_PROFILE,
    ) -> None:
        if profile not in PROFILES:
            raise ServiceError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
        self.ctx = Context(settings=settings, db=db or DatabaseSettings(), repo_root=repo_root)
        self.progress: Progress = progress or _log_progress
        self.profile = profile
        self._apt = Apt(self.ctx.logs_dir / "apt.log")
        self._servers = {name: cls(self.ctx, self._apt) for name, cls in PROFILES[profile].items()}

    # ------------------------------------------------------------------ lookup

    def server(self, name: str) -> Server:
        try:
            return self._servers[name]
        except KeyError:
            raise ServiceError(
                f"unknown service {name!r} in the {self.profile} profile; known: "
                f"{', '.join(self._servers)}"
            ) from None

    def _select(self, names: Iterable[str] | None) -> list[Server]:
        wanted = list(names) if names else list(self._servers)
        for name in wanted:
            self.server(name)  # validates
        return [srv for n, srv in self._servers.items() if n in wanted]

    def _pidfile(self, srv: Server) -> proc.PidFile:
        return proc.PidFile(self.ctx.run_dir, srv.name)

    def pid(self, name: str) -> int | None:
        """The pid of the running server, or None."""
        rec = self._pidfile(self.server(name)).live()
        return rec.pid if rec is not None else None

    # ------------------------------------------------------------------ public API

    def up(self, names: Sequence[str] | None = None, *, restart_stale: bool = False) -> None:
        """Install what is missing, start what is not running, wait until all answer.

        A running server whose configuration this version would render differently is
        restarted with ``restart_stale`` (``qilu services up``), else only reported: library
        callers (test fixtures) must not restart servers others are using."""
        servers = self._select(names)
        with self._locked():
            waiting: list[Callable[[], None]] = []
            for srv in servers:
                finish = self._up_one(srv, restart_stale=restart_stale)
                if finish is not None and srv.starts_with_peers:
                    waiting.append(finish)  # once its peers are launched too
                elif finish is not None:
                    finish()
            for finish in waiting:
                finish()

    def start(self, name: str) -> None:
        """``up`` for one server (e.g. after :meth:`kill`)."""
        self.up([name])

    def down(self, names: Sequence[str] | None = None) -> None:
        """Stop gracefully (SIGTERM; SIGINT = fast shutdown for postgres), SIGKILL after
        the server's stop timeout. Stopping a stopped server does nothing."""
        servers = self._select(names)
        with self._locked():
            for srv in reversed(servers):
                self._down_one(srv)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the server and all its child processes, no clean-up (fault
        tests). With SIGKILL, return once the main process is gone."""
        srv = self.server(name)
        rec = self._pidfile(srv).live()
        if rec is None:
            raise ServiceError(f"{name}: not running, nothing to kill")
        detached = srv.detached_pids()  # read before the kill: their pid files go with them
        sent = proc.signal_tree(rec.pid, sig)
        for pid in detached:
            sent += proc.signal_tree(pid, sig)
        logger.info("%s: sent signal %s to %s", name, sig, sent)
        if sig == signal.SIGKILL and not proc.wait_gone(rec.pid, rec.start_ticks, KILL_WAIT_S):
            raise ServiceError(f"{name}: pid {rec.pid} survived SIGKILL for {KILL_WAIT_S:.0f} s")

    def status(self, names: Sequence[str] | None = None) -> list[ServiceStatus]:
        """Cheap status (pid alive + port accepts), no protocol round trip."""
        out = []
        for srv in self._select(names):
            rec = self._pidfile(srv).live()
            if rec is not None:
                accepts = proc.tcp_accepts(srv.host, srv.port)
                state = State.RUNNING if accepts else State.NOT_ANSWERING
            elif not srv.installed():
                state = State.NOT_INSTALLED
            else:
                state = State.STOPPED
            out.append(
                ServiceStatus(
                    name=srv.name,
                    state=state,
                    pid=rec.pid if rec is not None else None,
                    address=srv.address,
                    data_dir=srv.data_dir,
                    log_file=srv.log_file,
                )
            )
        return out

    def log_tail(self, name: str, lines: int = TAIL_LINES) -> str:
        srv = self.server(name)
        try:
            text = srv.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(render.tail_lines(text, lines))

    # ------------------------------------------------------------------ internals

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.ctx.state_dir.mkdir(parents=True, exist_ok=True)
        self.ctx.logs_dir.mkdir(exist_ok=True)
        self.ctx.run_dir.mkdir(exist_ok=True)
        with (self.ctx.state_dir / ".lock").open("a") as f:
            deadline = time.monotonic() + LOCK_TIMEOUT_S
            told = False
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not told:
                        self.progress("waiting for another `qilu services` command to finish...")
                        told = True
                    if time.monotonic() > deadline:
                        raise ServiceError(
                            f"another `qilu services` command held {f.name} for "
                            f"{LOCK_TIMEOUT_S:.0f} s; is one stuck?"
                        ) from None
                    time.sleep(0.5)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _up_one(self, srv: Server, *, restart_stale: bool = False) -> Callable[[], None] | None:
        """Start ``srv`` if needed; returns what is left to do (wait until it answers), or
        None when it already answers."""
        pidfile = self._pidfile(srv)
        rec = pidfile.live()
        if rec is not None and not srv.config_current():
            if restart_stale:
                self.progress(f"{srv.name}: configuration changed; restarting (pid {rec.pid})...")
                self._stop(srv, rec)
                pidfile.remove()
                rec = None
            else:
                logger.warning(
                    "%s: running with an out-of-date configuration; `qilu services up %s` "
                    "restarts it",
                    srv.name,
                    srv.name,
                )
        if rec is not None:
            try:
                srv.probe(PROBE_SLICE_S)
            except ProbeError as exc:
                if srv.busy_ok and proc.tcp_accepts(srv.host, srv.port):
                    self.progress(
                        f"{srv.name}: already running (pid {rec.pid}) on {srv.address}; "
                        "busy with another client"
                    )
                    return None
                logger.info("%s: running but not answering yet (%s); waiting", srv.name, exc)
                running = rec

                def finish_running() -> None:
                    self._wait_ready(srv, running, self.ctx.settings.start_timeout_s)
                    self.progress(
                        f"{srv.name}: already running (pid {running.pid}) on {srv.address}"
                    )

                return finish_running
            self.progress(f"{srv.name}: already running (pid {rec.pid}) on {srv.address}")
            return None
        pidfile.remove()
        self._check_ports(srv)
        if not srv.installed():
            srv.install(self.progress)
        srv.configure(self.progress)
        self.progress(f"{srv.name}: starting on {srv.address}...")
        with srv.log_file.open("a") as log:
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            log.write(f"\n{START_MARKER} {srv.name} at {stamp} ====\n")
        pid = proc.launch_detached(srv.command(), srv.log_file)
        launched = pidfile.write(pid)
        started = time.monotonic()

        def finish() -> None:
            self._wait_ready(srv, launched, self.ctx.settings.start_timeout_s)
            srv.after_start(self.progress)
            self.progress(
                f"{srv.name}: running (pid {pid}) on {srv.address}, "
                f"ready in {time.monotonic() - started:.1f} s"
            )

        return finish

    def _check_ports(self, srv: Server) -> None:
        host = srv.host
        for field, port in srv.ports().items():
            if not proc.port_free(host, port):
                owner = proc.listener_pid(host, port)
                raise ServiceError(
                    render.port_taken_message(
                        srv.name, host, port, owner, render.port_env_key(field)
                    )
                )

    def _start_log_tail(self, srv: Server) -> str:
        try:
            text = srv.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        lines = render.tail_lines(render.since_last_marker(text, START_MARKER), TAIL_LINES)
        return "\n    ".join(lines) or "(empty)"

    def _wait_ready(self, srv: Server, rec: proc.PidRecord, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        while True:
            if not rec.alive():
                self._pidfile(srv).remove()
                raise ServiceError(
                    f"{srv.name}: exited during start-up; last lines of {srv.log_file}:\n"
                    f"    {self._start_log_tail(srv)}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                srv.probe(max(1.0, min(PROBE_SLICE_S, remaining)))
            except ProbeError as exc:
                last = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                logger.debug("%s: not ready: %s", srv.name, last)
                time.sleep(0.5)
            else:
                return
        tail = self._start_log_tail(srv)
        self._stop(srv, rec)
        raise ServiceError(
            f"{srv.name}: did not answer within {timeout_s:.0f} s (last probe: {last}); "
            f"stopped it. Last lines of {srv.log_file}:\n    {tail}\n"
            "Raise QILU_SERVICES__START_TIMEOUT_S if the machine is just slow."
        )

    def _down_one(self, srv: Server) -> None:
        pidfile = self._pidfile(srv)
        rec = pidfile.live()
        if rec is None:
            pidfile.remove()
            self.progress(f"{srv.name}: not running")
            return
        self.progress(f"{srv.name}: stopping (pid {rec.pid})...")
        self._stop(srv, rec)
        pidfile.remove()
        self.progress(f"{srv.name}: stopped")

    def _stop(self, srv: Server, rec: proc.PidRecord) -> None:
        proc.send(rec.pid, srv.stop_signal)
        if proc.wait_gone(rec.pid, rec.start_ticks, srv.stop_timeout_s):
            return
        self.progress(
            f"{srv.name}: still running after {srv.stop_timeout_s:.0f} s; sending SIGKILL"
        )
        proc.signal_tree(rec.pid, signal.SIGKILL)
        if not proc.wait_gone(rec.pid, rec.start_ticks, KILL_WAIT_S):
            raise ServiceError(f"{srv.name}: pid {rec.pid} survived SIGKILL")
