"""Running install tools (apt-get, mvn, npm, initdb) with bounded time and useful errors."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ops.services import render
from qilu.errors import ServiceError

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]

TAIL_LINES = 20


def is_root() -> bool:
    return os.geteuid() == 0


def run_tool(
    argv: Sequence[str],
    *,
    what: str,
    log_file: Path,
    hint: str,
    timeout_s: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    user: str | None = None,
) -> None:
    """Run an install step, its output appended to ``log_file``; ServiceError with the
    tool's last lines and ``hint`` (what to do) if it fails or runs past ``timeout_s``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    logger.debug("running %s (log %s)", " ".join(argv), log_file)
    full_env = {**os.environ, **(env or {})}
    with log_file.open("ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        start = out.tell()
        try:
            done = subprocess.run(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=full_env,
                timeout=timeout_s,
                check=False,
                user=user,
                group=user,
                extra_groups=[] if user is not None else None,
            )
            code: int | str = done.returncode
        except subprocess.TimeoutExpired:
            code = f"timed out after {timeout_s:.0f} s"
        except FileNotFoundError as exc:
            raise ServiceError(f"{what}: {argv[0]} not found ({exc}); {hint}") from exc
    if code == 0:
        return
    with log_file.open("rb") as f:
        f.seek(start)
        text = f.read().decode("utf-8", "replace")
    tail = "\n    ".join(render.tail_lines(text, TAIL_LINES)) or "(no output)"
    raise ServiceError(
        f"{what} failed (exit {code}); last lines of {log_file}:\n    {tail}\n{hint}"
    )


def capture(argv: Sequence[str], *, timeout_s: float = 30.0) -> tuple[int, str]:
    """Run a quick query command; (exit code, stdout+stderr). Missing binary -> (127, msg)."""
    try:
        done = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except FileNotFoundError as exc:
        return 127, str(exc)
    except subprocess.TimeoutExpired:
        return 124, f"{argv[0]} timed out"
    return done.returncode, done.stdout + done.stderr


class Apt:
    """apt-get installs for missing system packages (root only); ``update`` at most once."""

    def __init__(self, log_file: Path) -> None:
        self.log_file = log_file
        self._updated = False

    def install(self, packages: Sequence[str], *, why: str, progress: Progress) -> None:
        names = " ".join(packages)
        if not is_root():
            raise ServiceError(
                f"{why}: the Debian package(s) {names} are missing and we are not root; "
                f"install them with `sudo apt-get install -y {names}` and run again"
            )
        if shutil.which("apt-get") is None:
            raise ServiceError(f"{why}: {names} missing and there is no apt-get; install them")
        progress(f"{why}: installing Debian package(s) {names} (first run)...")
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        argv = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
        hint = f"check that the package repositories are reachable, or install {names} by hand"
        try:
            run_tool(
                argv,
                what=f"apt-get install {names}",
                log_file=self.log_file,
                hint=hint,
                timeout_s=900,
                env=env,
            )
        except ServiceError:
            if self._updated:
                raise
            # a fresh machine often has no package lists yet: update once and retry
            self.update(progress)
            run_tool(
                argv,
                what=f"apt-get install {names}",
                log_file=self.log_file,
                hint=hint,
                timeout_s=900,
                env=env,
            )

    def update(self, progress: Progress) -> None:
        if self._updated:
            return
        progress("apt: updating package lists...")
        run_tool(
            ["apt-get", "update", "-q"],
            what="apt-get update",
            log_file=self.log_file,
            hint="check that the package repositories are reachable",
            timeout_s=600,
            env={"DEBIAN_FRONTEND": "noninteractive"},
        )
        self._updated = True


def user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def chown_tree(path: Path, user: str) -> None:
    """``chown -R user:user path`` (root only)."""
    shutil.chown(path, user, user)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            shutil.chown(Path(root) / name, user, user)


def make_traversable(path: Path) -> list[Path]:
    """Give 'others' the execute bit on every ancestor of ``path`` lacking it (so a system
    user such as postgres can reach its data dir); the folders changed."""
    changed: list[Path] = []
    for parent in reversed(path.resolve().parents):
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)
            changed.append(parent)
    return changed
