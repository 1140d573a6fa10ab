"""Processes and ports on this machine: detached launch, pid files, liveness, signals.

Linux only (reads /proc). A server is started through a short-lived launcher process so it
is re-parented away from the caller at once: no zombie is left in a long-lived test process
and no ``Popen`` object outlives its child.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ops.services import render
from qilu.errors import ServiceError

logger = logging.getLogger(__name__)

PROC = Path("/proc")

_LAUNCHER = r"""
import json, os, subprocess, sys
spec = json.loads(sys.stdin.read())
log = open(spec["log"], "ab", buffering=0)
kw = {}
if spec.get("user"):
    kw = {"user": spec["user"], "group": spec["group"], "extra_groups": []}
try:
    p = subprocess.Popen(
        spec["argv"], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        cwd=spec["cwd"], env=spec["env"], start_new_session=True, close_fds=True, **kw,
    )
except OSError as exc:
    sys.stdout.write("error: %s" % exc)
    sys.stdout.flush()
    os._exit(1)
sys.stdout.write(str(p.pid))
sys.stdout.flush()
os._exit(0)
"""


@dataclass(frozen=True, slots=True)
class Launch:
    """How to start one server: argv, environment additions, working dir, system user."""

    argv: Sequence[str]
    cwd: Path
    env: Mapping[str, str] = field(default_factory=dict)
    user: str | None = None  # run as this system user (needs root), e.g. "postgres"


def launch_detached(spec: Launch, log_file: Path) -> int:
    """Start ``spec`` in a new session, stdout/stderr appended to ``log_file``; its pid."""
    env = {**os.environ, **spec.env}
    payload: dict[str, object] = {
        "argv": list(spec.argv),
        "cwd": str(spec.cwd),
        "env": env,
        "log": str(log_file),
        "user": spec.user,
        "group": spec.user,
    }
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-c", _LAUNCHER],
            input=json.dumps(payload),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ServiceError(f"could not launch {spec.argv[0]}: launcher timed out") from exc
    out = done.stdout.strip()
    if done.returncode != 0 or not out.isdigit():
        detail = out or done.stderr.strip()[-500:]
        raise ServiceError(f"could not launch {spec.argv[0]}: {detail}")
    return int(out)


def read_stat(pid: int) -> render.ProcStat | None:
    try:
        return render.parse_proc_stat((PROC / str(pid) / "stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def is_alive(pid: int, start_ticks: int | None = None) -> bool:
    """The process exists, is not a zombie and (if given) started at ``start_ticks``."""
    st = read_stat(pid)
    if st is None or st.state in ("Z", "X"):
        return False
    return start_ticks is None or st.start_ticks == start_ticks


def process_table() -> dict[int, int]:
    """pid -> ppid of every live process."""
    table: dict[int, int] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            st = read_stat(int(entry.name))
            if st is not None and st.state not in ("Z", "X"):
                table[st.pid] = st.ppid
    return table


def signal_tree(pid: int, sig: int) -> list[int]:
    """Send ``sig`` to ``pid`` and every descendant (collected first); the pids signalled."""
    targets = [pid, *render.descendants(pid, process_table())]
    sent = []
    for target in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, sig)
            sent.append(target)
    return sent


REAP_GRACE_S = 10.0


def is_reaped(pid: int, start_ticks: int | None = None) -> bool:
    """Not even a zombie is left (or the pid now belongs to another process)."""
    st = read_stat(pid)
    return st is None or (start_ticks is not None and st.start_ticks != start_ticks)


def wait_gone(pid: int, start_ticks: int | None, timeout_s: float) -> bool:
    """Wait until the process has exited; then give its parent (usually init, as servers
    are detached) a short grace to reap the zombie, since a zombie still holds its pid and
    e.g. PostgreSQL refuses to start while the pid in postmaster.pid exists."""
    deadline = time.monotonic() + timeout_s
    while is_alive(pid, start_ticks):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    wait_reaped(pid, start_ticks, REAP_GRACE_S)
    return True


def wait_reaped(pid: int, start_ticks: int | None, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not is_reaped(pid, start_ticks):
        if time.monotonic() >= deadline:
            logger.debug("pid %d is still a zombie after %.0f s", pid, timeout_s)
            return False
        time.sleep(0.1)
    return True


# --------------------------------------------------------------------------- pid files


@dataclass(frozen=True, slots=True)
class PidRecord:
    pid: int
    start_ticks: int | None

    def alive(self) -> bool:
        return is_alive(self.pid, self.start_ticks)


class PidFile:
    """``<run>/<name>.pid`` holds the pid alone (so ``kill $(cat ...)`` works); the
    companion ``.start`` file holds the process start time to detect a recycled pid."""

    def __init__(self, run_dir: Path, name: str) -> None:
        self.path = run_dir / f"{name}.pid"
        self._start = run_dir / f"{name}.start"

    def write(self, pid: int) -> PidRecord:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        st = read_stat(pid)
        ticks = st.start_ticks if st is not None else None
        self._start.write_text(f"{ticks}\n" if ticks is not None else "")
        self.path.write_text(f"{pid}\n")
        return PidRecord(pid, ticks)

    def read(self) -> PidRecord | None:
        try:
            pid = int(self.path.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            ticks: int | None = int(self._start.read_text().strip())
        except (OSError, ValueError):
            ticks = None
        return PidRecord(pid, ticks)

    def live(self) -> PidRecord | None:
        rec = self.read()
        return rec if rec is not None and rec.alive() else None

    def remove(self) -> None:
        for p in (self.path, self._start):
            p.unlink(missing_ok=True)


# --------------------------------------------------------------------------- ports


def port_free(host: str, port: int) -> bool:
    """Can we bind ``host:port`` right now?"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def tcp_accepts(host: str, port: int, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def listener_pid(host: str, port: int) -> int | None:
    """The pid listening on (or covering) ``host:port``, when /proc lets us see it."""
    inodes: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            text = (PROC / "net" / table).read_text()
        except OSError:
            continue
        listeners = render.parse_proc_net_tcp(text)
        inodes.update(li.inode for li in listeners if render.listener_covers(li, host, port))
    inodes.discard(0)
    if not inodes:
        return None
    wanted = {f"socket:[{i}]" for i in inodes}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if str(fd.readlink()) in wanted:
                    return int(entry.name)
            except OSError:
                continue
    return None


def owned_by(pid: int | None, root: int) -> bool:
    """Is ``pid`` the process ``root`` or one of its descendants?"""
    if pid is None:
        return False
    return pid == root or pid in render.descendants(root, process_table())


def send(pid: int, sig: signal.Signals) -> bool:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True
