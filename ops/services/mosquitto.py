"""Eclipse Mosquitto MQTT broker (Debian package) with our own config, not the system unit."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

from ops.services import render
from ops.services.base import ProbeError, Progress, Server
from ops.services.proc import Launch
from ops.services.tools import chown_tree, is_root, user_exists
from qilu.errors import ServiceError

SYSTEM_USER = "mosquitto"
CANDIDATES = (Path("/usr/sbin/mosquitto"), Path("/usr/bin/mosquitto"))


def _binary() -> Path | None:
    found = shutil.which("mosquitto")
    if found:
        return Path(found)
    return next((p for p in CANDIDATES if p.exists()), None)


class Mosquitto(Server):
    name = "mosquitto"
    stop_timeout_s = 15.0
    install_note = "installing the mosquitto package (first run)..."

    @property
    def config_file(self) -> Path:
        return self.home / "mosquitto.conf"

    @property
    def run_as(self) -> str | None:
        """Mosquitto started as root drops to a user: ours when the system one exists."""
        if not is_root():
            return None
        return SYSTEM_USER if user_exists(SYSTEM_USER) else "root"

    def ports(self) -> dict[str, int]:
        return {"mosquitto_port": self.ctx.settings.mosquitto_port}

    def installed(self) -> bool:
        # mosquitto-clients too: the MQTT collector's tests publish with mosquitto_pub
        return _binary() is not None and shutil.which("mosquitto_pub") is not None

    def install(self, progress: Progress) -> None:
        self.apt.install(["mosquitto", "mosquitto-clients"], why="mosquitto", progress=progress)
        if not self.installed():
            raise ServiceError("mosquitto: the package is installed but no mosquitto binary")

    def configure(self, progress: Progress) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        run_as = self.run_as
        if run_as not in (None, "root"):
            chown_tree(self.data_dir, run_as)
        s = self.ctx.settings
        self.config_file.write_text(
            render.mosquitto_conf(
                host=s.host, port=s.mosquitto_port, data_dir=self.data_dir, run_as=run_as
            )
        )

    def command(self) -> Launch:
        binary = _binary() or Path("mosquitto")
        return Launch(argv=[str(binary), "-c", str(self.config_file)], cwd=self.home)

    def probe(self, timeout_s: float) -> None:
        """MQTT CONNECT -> CONNACK(accepted) -> DISCONNECT."""
        host, port = self.ctx.host, self.ctx.settings.mosquitto_port
        client_id = f"qilu-probe-{os.getpid()}"
        try:
            with socket.create_connection((host, port), timeout=timeout_s) as sock:
                sock.sendall(render.mqtt_connect_packet(client_id))
                data = b""
                while len(data) < 4:
                    chunk = sock.recv(4 - len(data))
                    if not chunk:
                        raise ProbeError("connection closed before CONNACK")
                    data += chunk
                code = render.parse_mqtt_connack(data)
                if code != 0:
                    raise ProbeError(f"CONNACK refused the connection (code {code})")
                sock.sendall(render.MQTT_DISCONNECT)
        except (OSError, ValueError) as exc:
            raise ProbeError(str(exc)) from exc
