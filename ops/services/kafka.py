"""Apache Kafka, KRaft single node (combined broker + controller), jars from Maven."""

from __future__ import annotations

import logging
import shutil
import socket
import warnings
from pathlib import Path

from ops.services import render
from ops.services.base import ProbeError, Progress, Server
from ops.services.proc import Launch
from ops.services.tools import capture, run_tool
from qilu.errors import ServiceError

logger = logging.getLogger(__name__)

MIN_JAVA = 17
MARKER = ".qilu-installed"


class Kafka(Server):
    name = "kafka"
    stop_timeout_s = 60.0  # controlled shutdown flushes and closes every partition
    install_note = "downloading jars (first run, ~1 min)..."

    # ---- layout

    @property
    def lib_dir(self) -> Path:
        return self.home / "lib"

    @property
    def pom(self) -> Path:
        return self.ctx.infra_dir / "kafka" / "pom.xml"

    @property
    def server_properties(self) -> Path:
        return self.home / "server.properties"

    @property
    def log4j_config(self) -> Path:
        return self.home / "log4j2.properties"

    @property
    def cluster_id_file(self) -> Path:
        return self.home / "cluster-id"

    @property
    def agent_port(self) -> int:
        """The SASL/SCRAM listener of the edge agents (docs/adr/0010)."""
        s = self.ctx.settings
        return s.kafka_agent_port or s.kafka_port + 2

    def ports(self) -> dict[str, int]:
        s = self.ctx.settings
        return {
            "kafka_port": s.kafka_port,
            "kafka_controller_port": s.kafka_controller_port,
            "kafka_agent_port": self.agent_port,
        }

    def rendered_properties(self) -> str:
        s = self.ctx.settings
        props = render.kafka_server_properties(
            host=s.host,
            port=s.kafka_port,
            controller_port=s.kafka_controller_port,
            agent_port=self.agent_port,
            log_dir=self.data_dir,
            agent_keystore=self.agent_keystore,
        )
        return render.render_properties(props)

    @property
    def agent_keystore(self) -> Path | None:
        """``broker.pem`` of ``qilu pki`` when the agents' listener runs TLS."""
        tls = self.ctx.settings.kafka_agent_tls_dir
        return tls.resolve() / "broker.pem" if tls is not None else None

    def config_current(self) -> bool:
        """Does the running broker's server.properties match what this version renders?"""
        try:
            return self.server_properties.read_text() == self.rendered_properties()
        except OSError:
            return False

    def marker_text(self) -> str:
        pom = self.pom.read_bytes() if self.pom.exists() else b""
        fingerprint = render.content_fingerprint([pom])
        return f"kafka {self.ctx.settings.kafka_version} pom {fingerprint}\n"

    # ---- install

    def installed(self) -> bool:
        marker = self.lib_dir / MARKER
        try:
            return marker.read_text() == self.marker_text()
        except OSError:
            return False

    def install(self, progress: Progress) -> None:
        self._require_java(progress)
        if shutil.which("mvn") is None:
            self.apt.install(
                ["maven"], why="kafka: Maven (to fetch the Kafka jars)", progress=progress
            )
        if not self.pom.exists():
            raise ServiceError(f"kafka: {self.pom} is missing; restore it from git")
        version = self.ctx.settings.kafka_version
        progress(f"kafka: {self.install_note}")
        # stale jars of another version on the classpath would break the broker: start clean
        shutil.rmtree(self.lib_dir, ignore_errors=True)
        self.lib_dir.mkdir(parents=True)
        run_tool(
            [
                "mvn",
                "-q",
                "-B",
                "-Dstyle.color=never",
                "-f",
                str(self.pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={self.lib_dir}",
                f"-Dkafka.version={version}",
            ],
            what=f"kafka: mvn dependency:copy-dependencies (Kafka {version})",
            log_file=self.install_log,
            hint=(
                "check that Maven Central is reachable (or ~/.m2/settings.xml points at a "
                f"mirror) and that Kafka {version} exists (QILU_SERVICES__KAFKA_VERSION)"
            ),
            timeout_s=900,
        )
        if not list(self.lib_dir.glob(f"kafka_2.13-{version}.jar")):
            raise ServiceError(f"kafka: Maven finished but kafka_2.13-{version}.jar is missing")
        (self.lib_dir / MARKER).write_text(self.marker_text())

    def _require_java(self, progress: Progress) -> None:
        code, out = capture(["java", "-version"])
        major = render.parse_java_major(out) if code == 0 else None
        if major is not None and major >= MIN_JAVA:
            return
        found = "no java on PATH" if code == 127 else f"java {major or '?'}"
        if major is None or major < MIN_JAVA:
            self.apt.install(
                ["openjdk-17-jre-headless"],
                why=f"kafka: Java {MIN_JAVA}+ is needed ({found})",
                progress=progress,
            )
            code, out = capture(["java", "-version"])
            major = render.parse_java_major(out) if code == 0 else None
        if major is None or major < MIN_JAVA:
            raise ServiceError(
                f"kafka: Java {MIN_JAVA} or newer is needed, `java -version` says: "
                f"{out.strip()[:200] or found}; put a JDK/JRE 17+ first on PATH"
            )

    # ---- configure

    def configure(self, progress: Progress) -> None:
        self._require_java(progress)
        if self.agent_keystore is not None and not self.agent_keystore.is_file():
            raise ServiceError(
                f"{self.name}: services.kafka_agent_tls_dir has no broker.pem; run "
                f"`qilu pki init --dir D` and `qilu pki issue --dir D --name <agents' host>`"
            )
        self.home.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.server_properties.write_text(self.rendered_properties())
        self.log4j_config.write_text(render.kafka_log4j2_properties())
        if (self.data_dir / "meta.properties").exists():
            return
        cluster_id = self._cluster_id()
        progress(f"{self.name}: formatting the log dir (cluster id {cluster_id})...")
        run_tool(
            [
                "java",
                "-cp",
                f"{self.lib_dir}/*",
                f"-Dlog4j2.configurationFile={self.log4j_config}",
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(self.server_properties),
                "--ignore-formatted",
            ],
            what=f"{self.name}: storage format",
            log_file=self.install_log,
            hint=f"to start over: qilu services down kafka && rm -rf {self.data_dir}",
            timeout_s=120,
        )

    def _cluster_id(self) -> str:
        try:
            existing = self.cluster_id_file.read_text().strip()
        except OSError:
            existing = ""
        if render.is_kafka_cluster_id(existing):
            return existing
        cluster_id = render.new_kafka_cluster_id()
        self.cluster_id_file.write_text(cluster_id + "\n")
        return cluster_id

    def command(self) -> Launch:
        argv = render.kafka_command(
            java="java",
            heap_mb=self.ctx.settings.kafka_heap_mb,
            lib_dir=self.lib_dir,
            log4j_config=self.log4j_config,
            server_properties=self.server_properties,
        )
        return Launch(argv=argv, cwd=self.home)

    # ---- readiness

    def probe(self, timeout_s: float) -> None:
        host, port = self.host, self.port
        try:
            socket.create_connection((host, port), timeout=min(timeout_s, 2.0)).close()
        except OSError as exc:
            raise ProbeError(f"tcp connect: {exc}") from exc
        with warnings.catch_warnings():
            # kafka-python 3.0 uses deprecated importlib.resources calls at import time;
            # nothing for us to act on, and fatal under pytest's filterwarnings=error
            warnings.simplefilter("ignore", DeprecationWarning)
            from kafka import KafkaAdminClient

        ms = int(timeout_s * 1000)
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=f"{host}:{port}",
                client_id="qilu-services-probe",
                request_timeout_ms=ms,
                bootstrap_timeout_ms=ms,
            )
            try:
                admin.list_topics()
            finally:
                admin.close()
        # kafka-python raises assorted error types while a broker starts: any means not ready
        except Exception as exc:
            raise ProbeError(f"metadata request: {exc}") from exc
