"""The agent's Prometheus metrics (served on ``agent.metrics_host:agent.metrics_port``).

Labelled by agent id, so the simulated province (many agents in one process) and a single Pi
agent expose the same names. They live in a registry of their own
(:data:`collectors.metrics.REGISTRY`, with the process and Python collectors, shared with the
collectors' metrics): whatever else the process imports (the ingest's or the API's metrics,
through the platform's modules) stays off the agent's endpoint.
"""

from __future__ import annotations

import gzip
import socket
import socketserver
import threading
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.utils import parse_version

from collectors.metrics import REGISTRY
from qilu.errors import ConfigError

READINGS_IN = Counter(
    "qilu_agent_readings_in_total",
    "Readings handed over by collectors and stored in the buffer",
    ["agent"],
    registry=REGISTRY,
)
READINGS_SENT = Counter(
    "qilu_agent_readings_sent_total",
    "Readings whose envelope the broker acknowledged (they left the buffer)",
    ["agent"],
    registry=REGISTRY,
)
READINGS_DROPPED = Counter(
    "qilu_agent_readings_dropped_total",
    "Readings dropped by the buffer bounds (each is in a gap record)",
    ["agent", "reason"],
    registry=REGISTRY,
)
ENVELOPES_SENT = Counter(
    "qilu_agent_envelopes_sent_total",
    "Envelopes acknowledged by the broker",
    ["agent", "kind"],
    registry=REGISTRY,
)
SEND_ERRORS = Counter(
    "qilu_agent_send_errors_total",
    "Failed send attempts (the envelope is retried)",
    ["agent"],
    registry=REGISTRY,
)
BUFFER_READINGS = Gauge(
    "qilu_agent_buffer_readings",
    "Readings in the buffer, not yet acknowledged",
    ["agent"],
    registry=REGISTRY,
)
BUFFER_BYTES = Gauge(
    "qilu_agent_buffer_bytes",
    "Payload bytes of the readings in the buffer",
    ["agent"],
    registry=REGISTRY,
)
BUFFER_DISK_BYTES = Gauge(
    "qilu_agent_buffer_disk_bytes",
    "Disk used by the buffer files (database + WAL)",
    ["agent"],
    registry=REGISTRY,
)
BUFFER_LIMIT_BYTES = Gauge(
    "qilu_agent_buffer_limit_bytes",
    "Configured disk bound of the buffer",
    ["agent"],
    registry=REGISTRY,
)
OLDEST_UNSENT = Gauge(
    "qilu_agent_oldest_unsent_seconds",
    "Age of the oldest reading not yet acknowledged (0 when empty)",
    ["agent"],
    registry=REGISTRY,
)
IN_FLIGHT = Gauge(
    "qilu_agent_in_flight_bytes",
    "Envelope bytes handed to the producer, not yet acked",
    ["agent"],
    registry=REGISTRY,
)
COLLECTOR_UP = Gauge(
    "qilu_agent_collector_up",
    "1 while the collector's source is available",
    ["agent", "collector"],
    registry=REGISTRY,
)
COLLECTOR_DOWN_EVENTS = Counter(
    "qilu_agent_collector_unavailable_total",
    "Times the collector's source became unavailable",
    ["agent", "collector"],
    registry=REGISTRY,
)
BUFFER_DAMAGE = Counter(
    "qilu_agent_buffer_quarantined_total",
    "Damaged buffer files quarantined at start",
    ["agent"],
    registry=REGISTRY,
)

QUARANTINE_ENVELOPES = Gauge(
    "qilu_agent_quarantine_envelopes",
    "Envelopes the broker refused for good (topic not authorised), kept in the buffer until "
    "re-sent with requeue-quarantine",
    ["agent", "sector"],
    registry=REGISTRY,
)
QUARANTINE_READINGS = Gauge(
    "qilu_agent_quarantine_readings",
    "Readings in quarantined envelopes",
    ["agent", "sector"],
    registry=REGISTRY,
)
REFUSED = Counter(
    "qilu_agent_envelopes_refused_total",
    "Envelopes the broker refused for good (not authorised for the topic) and quarantined",
    ["agent", "sector"],
    registry=REGISTRY,
)


Response = tuple[str, list[tuple[str, str]], bytes]
_ESCAPINGS = frozenset(
    {openmetrics.ALLOWUTF8, openmetrics.UNDERSCORES, openmetrics.DOTS, openmetrics.VALUES}
)


def respond(
    method: str,
    target: str,
    accept: str,
    accept_encoding: str,
    registry: CollectorRegistry = REGISTRY,
) -> Response:
    """The endpoint's answer, as prometheus_client's own (``start_http_server``) gives it.

    What a Prometheus server asks for first, OpenMetrics 1.0.0 or later, is rendered by
    ``prometheus_client.openmetrics.exposition``; anything else (the plain text format, a
    ``name[]`` selection) by prometheus_client's exposition module, imported on that first
    request: its ``__init__`` loads an HTTP server, WSGI and urllib that an agent serving
    Prometheus never needs (edge_agent/lean.py; ~1.4 MB of RSS)."""
    if method == "OPTIONS":
        return "200 OK", [("Allow", "OPTIONS,GET")], b""
    url = urlsplit(target)
    if url.path == "/favicon.ico":
        return "200 OK", [], b""
    params = parse_qs(url.query)
    first = accept.split(",", maxsplit=1)[0].split(";")
    version = next((t.split("=", 1)[1] for t in first[1:] if t.strip().startswith("version=")), "")
    if (
        not params
        and first[0].strip() == "application/openmetrics-text"
        and (not version or parse_version(version) >= (1, 0, 0))
    ):
        escaping = next(
            (t.split("=", 1)[1] for t in first[1:] if t.strip().startswith("escaping=")),
            openmetrics.UNDERSCORES,
        )
        escaping = escaping if escaping in _ESCAPINGS else openmetrics.UNDERSCORES
        if version:
            content_type = (
                f"application/openmetrics-text; version={version}; charset=utf-8; "
                f"escaping={escaping}"
            )
            body = openmetrics.generate_latest(  # type: ignore[no-untyped-call]
                registry, escaping=escaping, version=version
            )
        else:
            content_type = openmetrics.CONTENT_TYPE_LATEST
            body = openmetrics.generate_latest(  # type: ignore[no-untyped-call]
                registry, escaping=openmetrics.UNDERSCORES
            )
        headers = [("Content-Type", content_type)]
        if any(e.split(";")[0].strip().lower() == "gzip" for e in accept_encoding.split(",")):
            body = gzip.compress(body)
            headers.append(("Content-Encoding", "gzip"))
        return "200 OK", headers, body
    from prometheus_client import exposition

    # the helper prometheus_client's own WSGI app answers with (prometheus-client 0.26)
    status, headers, body = exposition._bake_output(  # type: ignore[no-untyped-call]
        registry, accept, accept_encoding, params, False
    )
    return str(status), list(headers), bytes(body)


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        request = self.rfile.readline(8192).decode("latin-1").split()
        fields: dict[str, str] = {}
        while (line := self.rfile.readline(8192)) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            fields[name.strip().lower()] = value.strip()
        if len(request) < 2:
            return
        method, target = request[0], request[1]
        if method not in ("GET", "HEAD", "OPTIONS"):
            status, headers, body = "405 Method Not Allowed", [("Allow", "OPTIONS,GET")], b""
        else:
            status, headers, body = respond(
                method, target, fields.get("accept", ""), fields.get("accept-encoding", "")
            )
        head = [f"HTTP/1.0 {status}", *(f"{k}: {v}" for k, v in headers)]
        head.append(f"Content-Length: {len(body)}")
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        if method != "HEAD":
            self.wfile.write(body)


class MetricsServer(socketserver.ThreadingTCPServer):
    """The endpoint: a thread per request, daemon threads; ``shutdown()`` and
    ``server_close()`` stop it."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), _Handler)


def serve(host: str, port: int, *, key: str = "agent.metrics_port") -> MetricsServer:
    """Serve :data:`REGISTRY` on ``host:port`` (a daemon thread; ``shutdown()`` stops it); a
    port that cannot be bound is a configuration error naming ``key``, not a traceback."""
    try:
        server = MetricsServer(host, port)
    except OSError as exc:
        raise ConfigError(
            key,
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc} (another process "
            "uses the port? choose a free one, or 0 for no endpoint)",
        ) from exc
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
