"""Prometheus (Debian package) with the repository's scrape configuration.

Runs a copy of ``infra/prometheus/prometheus.yml`` (``<state>/prometheus/prometheus.yml``) on
loopback with its TSDB in the state folder. The configuration scrapes the platform's
exporters (ingest :9101, API :8080/metrics), Prometheus itself, and the edge agents found in
``<state>/prometheus/targets/agents.json`` (file-based service discovery: the platform writes
the file from the agents table, ``qilu agents targets``; Prometheus re-reads it on change).
"""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from pathlib import Path

from ops.services import render
from ops.services.base import ProbeError, Progress, Server
from ops.services.proc import Launch
from qilu.errors import ServiceError

CANDIDATES = (Path("/usr/bin/prometheus"), Path("/usr/sbin/prometheus"))
RETENTION = "15d"


def agent_targets_file(state_dir: Path) -> Path:
    """The agents' file_sd targets the local Prometheus reads (QILU_AGENT__TARGETS_FILE)."""
    return state_dir / "prometheus" / render.PROMETHEUS_AGENT_TARGETS


def _binary() -> Path | None:
    found = shutil.which("prometheus")
    if found:
        return Path(found)
    return next((p for p in CANDIDATES if p.exists()), None)


class Prometheus(Server):
    name = "prometheus"
    stop_timeout_s = 20.0
    install_note = "installing the prometheus package (first run)..."

    @property
    def source_config(self) -> Path:
        return self.ctx.infra_dir / "prometheus" / "prometheus.yml"

    @property
    def config_file(self) -> Path:
        return self.home / "prometheus.yml"

    @property
    def agent_targets(self) -> Path:
        return agent_targets_file(self.ctx.state_dir)

    def ports(self) -> dict[str, int]:
        return {"prometheus_port": self.ctx.settings.prometheus_port}

    def installed(self) -> bool:
        return _binary() is not None

    def install(self, progress: Progress) -> None:
        self.apt.install(["prometheus"], why="prometheus", progress=progress)
        if not self.installed():
            raise ServiceError("prometheus: the package is installed but no prometheus binary")

    def configure(self, progress: Progress) -> None:
        if not self.source_config.is_file():
            raise ServiceError(f"prometheus: no configuration at {self.source_config}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            text = render.prometheus_config(self.source_config.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ServiceError(f"prometheus: {self.source_config}: {exc}") from exc
        self.config_file.write_text(text, encoding="utf-8")
        self.agent_targets.parent.mkdir(parents=True, exist_ok=True)
        if not self.agent_targets.exists():  # no agents yet: `qilu agents targets` fills it
            self.agent_targets.write_text("[]\n", encoding="utf-8")

    def command(self) -> Launch:
        binary = _binary() or Path("prometheus")
        return Launch(
            argv=[
                str(binary),
                f"--config.file={self.config_file}",
                f"--storage.tsdb.path={self.data_dir}",
                f"--storage.tsdb.retention.time={RETENTION}",
                f"--web.listen-address={self.address}",
                "--web.enable-lifecycle",
            ],
            cwd=self.home,
        )

    def probe(self, timeout_s: float) -> None:
        """``GET /-/ready`` answers 200 once the TSDB is open and the config loaded."""
        url = f"http://{self.address}/-/ready"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                if resp.status != 200:
                    raise ProbeError(f"{url} answered {resp.status}")
        except (urllib.error.URLError, OSError) as exc:
            raise ProbeError(f"{url}: {exc}") from exc
