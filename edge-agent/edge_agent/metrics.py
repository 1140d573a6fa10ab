"""The agent's Prometheus metrics (served on ``agent.metrics_host:agent.metrics_port``).

Labelled by agent id, so the simulated province (many agents in one process) and a single Pi
agent expose the same names.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

READINGS_IN = Counter(
    "qilu_agent_readings_in_total",
    "Readings handed over by collectors and stored in the buffer",
    ["agent"],
)
READINGS_SENT = Counter(
    "qilu_agent_readings_sent_total",
    "Readings whose envelope the broker acknowledged (they left the buffer)",
    ["agent"],
)
READINGS_DROPPED = Counter(
    "qilu_agent_readings_dropped_total",
    "Readings dropped by the buffer bounds (each is in a gap record)",
    ["agent", "reason"],
)
ENVELOPES_SENT = Counter(
    "qilu_agent_envelopes_sent_total", "Envelopes acknowledged by the broker", ["agent", "kind"]
)
SEND_ERRORS = Counter(
    "qilu_agent_send_errors_total", "Failed send attempts (the envelope is retried)", ["agent"]
)
BUFFER_READINGS = Gauge(
    "qilu_agent_buffer_readings", "Readings in the buffer, not yet acknowledged", ["agent"]
)
BUFFER_BYTES = Gauge(
    "qilu_agent_buffer_bytes", "Payload bytes of the readings in the buffer", ["agent"]
)
BUFFER_DISK_BYTES = Gauge(
    "qilu_agent_buffer_disk_bytes", "Disk used by the buffer files (database + WAL)", ["agent"]
)
BUFFER_LIMIT_BYTES = Gauge(
    "qilu_agent_buffer_limit_bytes", "Configured disk bound of the buffer", ["agent"]
)
OLDEST_UNSENT = Gauge(
    "qilu_agent_oldest_unsent_seconds",
    "Age of the oldest reading not yet acknowledged (0 when empty)",
    ["agent"],
)
IN_FLIGHT = Gauge(
    "qilu_agent_in_flight_bytes", "Envelope bytes handed to the producer, not yet acked", ["agent"]
)
COLLECTOR_UP = Gauge(
    "qilu_agent_collector_up", "1 while the collector's source is available", ["agent", "collector"]
)
COLLECTOR_DOWN_EVENTS = Counter(
    "qilu_agent_collector_unavailable_total",
    "Times the collector's source became unavailable",
    ["agent", "collector"],
)
BUFFER_DAMAGE = Counter(
    "qilu_agent_buffer_quarantined_total",
    "Damaged buffer files quarantined at start",
    ["agent"],
)
