"""The agent's Prometheus metrics (served on ``agent.metrics_host:agent.metrics_port``).

Labelled by agent id, so the simulated province (many agents in one process) and a single Pi
agent expose the same names. They live in a registry of their own
(:data:`collectors.metrics.REGISTRY`, with the process and Python collectors, shared with the
collectors' metrics): whatever else the process imports (the ingest's or the API's metrics,
through the platform's modules) stays off the agent's endpoint.
"""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, start_http_server

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


def serve(host: str, port: int, *, key: str = "agent.metrics_port") -> WSGIServer:
    """Serve :data:`REGISTRY` on ``host:port`` (a daemon thread; ``shutdown()`` stops it); a
    port that cannot be bound is a configuration error naming ``key``, not a traceback."""
    try:
        server, _ = start_http_server(port, addr=host, registry=REGISTRY)
    except OSError as exc:
        raise ConfigError(
            key,
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc} (another process "
            "uses the port? choose a free one, or 0 for no endpoint)",
        ) from exc
    return server
