"""The protocol every local server implements, and the context it works in.

A server is one small class: where its files live (``data_dir``), which ports it needs,
how to tell it is installed and install it, how to write its config (and one-time init such
as ``initdb``), the command that runs it in the foreground, and a probe that proves it
answers. :class:`ops.services.manager.Services` does the rest (locking, pid files, port
checks, detached start, waiting, stopping) the same way for all of them.

Adding a server (Prometheus, say) = a subclass like the others in its own module, a port
field in ``ServicesSettings`` and one line in ``ops.services.registry.SERVER_TYPES``.
"""

from __future__ import annotations

import abc
import enum
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ops.services.proc import Launch
from ops.services.tools import Apt
from qilu.settings import REPO_ROOT, DatabaseSettings, ServicesSettings

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Context:
    """What every server needs to know: settings and the shared folders."""

    settings: ServicesSettings
    db: DatabaseSettings
    repo_root: Path = REPO_ROOT

    @property
    def state_dir(self) -> Path:
        return self.settings.state_dir.resolve()

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def infra_dir(self) -> Path:
        return self.repo_root / "infra"

    @property
    def host(self) -> str:
        return self.settings.host


class ProbeError(Exception):
    """A readiness probe did not get a proper answer (yet); the message says what failed."""


class State(enum.StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"
    NOT_INSTALLED = "not installed"
    NOT_ANSWERING = "not answering"  # our process is alive but its port does not accept


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    name: str
    state: State
    pid: int | None
    address: str
    data_dir: Path
    log_file: Path

    @property
    def up(self) -> bool:
        return self.state is State.RUNNING


class Server(abc.ABC):
    """One local server. Subclasses set ``name`` and implement the abstract methods.

    Keep ``ports``, ``command`` and the paths free of I/O; do the I/O in ``install``,
    ``configure``, ``probe`` and ``after_start``.
    """

    name: ClassVar[str]
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    stop_timeout_s: ClassVar[float] = 30.0
    # accept "listening" as up when the probe cannot get in (single-connection engines)
    busy_ok: ClassVar[bool] = False
    # a line for the user before a slow first install
    install_note: ClassVar[str] = "installing (first run)..."
    # a quorum member answers only once a majority of its peers runs: start them all,
    # then wait for each (the cluster profile's Kafka nodes)
    starts_with_peers: ClassVar[bool] = False

    def __init__(self, ctx: Context, apt: Apt) -> None:
        self.ctx = ctx
        self.apt = apt

    # ---- layout (pure)

    @property
    def home(self) -> Path:
        """This server's folder in the state dir."""
        return self.ctx.state_dir / self.name

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_file(self) -> Path:
        return self.ctx.logs_dir / f"{self.name}.log"

    @property
    def install_log(self) -> Path:
        return self.ctx.logs_dir / f"{self.name}-install.log"

    @abc.abstractmethod
    def ports(self) -> dict[str, int]:
        """ServicesSettings field name -> port; the first is the client port."""

    @property
    def port(self) -> int:
        return next(iter(self.ports().values()))

    @property
    def host(self) -> str:
        """The loopback address this server listens on (the cluster's nodes have their own)."""
        return self.ctx.host

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # ---- lifecycle

    @abc.abstractmethod
    def installed(self) -> bool:
        """Is everything needed to run present (binaries, jars, node modules)?"""

    @abc.abstractmethod
    def install(self, progress: Progress) -> None:
        """Install what is missing; ServiceError with what to do if it cannot."""

    @abc.abstractmethod
    def configure(self, progress: Progress) -> None:
        """Write config files and do one-time init (idempotent); runs before every start."""

    @abc.abstractmethod
    def command(self) -> Launch:
        """The foreground command that runs the server."""

    @abc.abstractmethod
    def probe(self, timeout_s: float) -> None:
        """Return if the server really answers (a protocol round trip), else ProbeError."""

    def config_current(self) -> bool:
        """False when the running server's config differs from what ``configure`` would
        write now (``qilu services up`` then restarts it). Servers that cannot tell: True."""
        return True

    def detached_pids(self) -> list[int]:
        """Processes of this server that left its process tree (a daemon that detaches
        its children, as Patroni does with PostgreSQL): ``Services.kill`` kills them too."""
        return []

    def after_start(self, progress: Progress) -> None:  # noqa: B027 - optional hook
        """Runs once the server answers (e.g. create the application database)."""
