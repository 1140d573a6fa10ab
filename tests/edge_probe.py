"""A probe of the edge agent's process: which packages it holds after walking the agent's path.

Run as a script by tests/unit/test_edge_lean.py (the development environment) and by
tests/integration/test_edge_install.py (a virtualenv with only the edge install); it imports
nothing of the tests, so it runs wherever the project is installed::

    python tests/edge_probe.py build CONFIG            build the agent of CONFIG, no network
    python tests/edge_probe.py run CONFIG SECONDS      run it (python -m edge_agent run) that long
    python tests/edge_probe.py run CONFIG SECONDS --scrape PORT   and scrape its metrics
    python tests/edge_probe.py build CONFIG --also M   and import module M too (a planted import)

It prints one JSON object: ``modules`` (the top-level names in ``sys.modules``), ``rc`` (the
agent's exit code for ``run``) and ``kafka_deferred`` (kafka-python's package ``__init__`` not
run: edge_agent/lean.py).
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import sys
import threading
import warnings

# the platform's server side: none of these may be imported on the agent's path
SERVER_PACKAGES = (
    "fastapi",
    "starlette",
    "uvicorn",
    "psycopg",
    "psycopg_pool",
    "pyarrow",
    "numpy",
    "grafana_foundation_sdk",
    "grafana_client",
    "openpyxl",
    "jwt",
    "yaml",
    "cryptography",
    "httptools",
    "uvloop",
    "confluent_kafka",
    # the platform's typed settings and target catalog: the agent's configuration is
    # dataclasses (qilu/schema.py), and the edge install does not hold pydantic
    "pydantic",
    "pydantic_core",
    "pydantic_settings",
)
# the platform's stages and control plane above the edge (docs/adr/0019-floors.md)
SERVER_STAGES = ("api", "storage", "stream", "dashboards", "interconnect", "ops")


def scrape(port: int, into: list[str]) -> None:
    """GET /metrics as a Prometheus server does (OpenMetrics first), over a bare socket:
    urllib would load modules of its own into the process this probe inspects."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            b"GET /metrics HTTP/1.1\r\nHost: probe\r\nAccept: application/openmetrics-text;"
            b"version=1.0.0,text/plain;version=0.0.4;q=0.5\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    into.extend(data.decode("utf-8", "replace").splitlines())


def main(argv: list[str]) -> int:
    warnings.simplefilter("ignore", DeprecationWarning)  # kafka-python's, at import
    mode, config_path = argv[0], argv[1]
    also = argv[argv.index("--also") + 1] if "--also" in argv else None
    from edge_agent import lean

    lean.defer_all()  # as python -m edge_agent does before anything else
    from edge_agent import __main__ as lean_main

    rc = None
    scraped: list[str] = []
    if mode == "run":  # the agent's process as the systemd unit runs it
        seconds = float(argv[2])
        # SIGINT: before the agent's loop runs it is a KeyboardInterrupt (exit 130), after
        # that the agent's own stop
        threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT)).start()
        if "--scrape" in argv:  # as a Prometheus server asks, just before the stop
            port = int(argv[argv.index("--scrape") + 1])
            threading.Timer(seconds - 1.5, scrape, (port, scraped)).start()
        rc = lean_main.main(["--log-level", "WARNING", "run", "--config", config_path])
    else:
        from edge_agent import config, metrics, runtime

        del metrics
        runtime.build_agent(config.load(config_path))
        from kafka import KafkaProducer  # what the producer factory imports when it runs
        from kafka.net.compat import KafkaNetClient

        del KafkaProducer, KafkaNetClient
    agent = set(sys.modules)  # what the agent itself loaded; then the rest of its path:
    from edge_agent import online

    from collectors import COLLECTOR_TYPES

    del online  # imported by check-config --online and the check at start
    for target in COLLECTOR_TYPES.values():  # every registered collector's module
        importlib.import_module(target.partition(":")[0])
    if also:
        importlib.import_module(also)
    out = {
        "modules": sorted({name.split(".")[0] for name in sys.modules}),
        "rc": rc,
        "kafka_deferred": lean.kafka_init_deferred(),
        "prometheus_deferred": lean.init_deferred("prometheus_client"),
        "prometheus_exposition": "prometheus_client.exposition" in agent,
        "crc32c_deferred": lean.init_deferred("crc32c"),
        "importlib_metadata": "importlib.metadata" in agent,
        # urllib.request (http.client, email) registered, not run: paho-mqtt imports it
        "urllib_request_deferred": lean.init_deferred("urllib.request"),
        "http_client": "http.client" in agent,
        # the unit's command line is read without argparse (edge_agent/__main__.py)
        "argparse": "argparse" in agent,
        # importlib.resources' package init (its file reader imports zipfile): kafka-python's
        # schema reads go through lean.read_text (tempfile is not listed: paho-mqtt's
        # urllib.request imports it in an agent with an MQTT collector)
        "resources_modules": sorted(
            m
            for m in agent
            if m.startswith(("importlib.resources.", "importlib.readers", "zipfile"))
        ),
        "scraped": scraped,
    }
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
