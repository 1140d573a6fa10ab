"""Prometheus (Debian package) with the repository's scrape configuration.

Runs ``prometheus --config.file=<repo>/infra/prometheus/prometheus.yml`` on loopback with its
TSDB in the state folder. The configuration scrapes the platform's exporters (ingest :9101,
agents :9102, API :8080/metrics) and Prometheus itself.
"""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from pathlib import Path

from qilu.errors import ServiceError
from qilu.services.base import ProbeError, Progress, Server
from qilu.services.proc import Launch

CANDIDATES = (Path("/usr/bin/prometheus"), Path("/usr/sbin/prometheus"))
RETENTION = "15d"


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
    def config_file(self) -> Path:
        return self.ctx.infra_dir / "prometheus" / "prometheus.yml"

    def ports(self) -> dict[str, int]:
        return {"prometheus_port": self.ctx.settings.prometheus_port}

    def installed(self) -> bool:
        return _binary() is not None

    def install(self, progress: Progress) -> None:
        self.apt.install(["prometheus"], why="prometheus", progress=progress)
        if not self.installed():
            raise ServiceError("prometheus: the package is installed but no prometheus binary")

    def configure(self, progress: Progress) -> None:
        if not self.config_file.is_file():
            raise ServiceError(f"prometheus: no configuration at {self.config_file}")
        self.data_dir.mkdir(parents=True, exist_ok=True)

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
