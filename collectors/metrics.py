"""The registry behind the edge agent's metrics endpoint (``agent.metrics_port``).

A registry of its own, with the process and Python collectors: the collectors register their
metrics here (``qilu_iec104_*``, ``qilu_ocpp_*``, ``qilu_mqtt_*``) and the agent its own
(edge_agent/metrics.py), and whatever else the process imports (the ingest's or the API's
metrics) stays off the agent's endpoint. It lives on the collectors' floor so that collectors
import nothing of the agent (docs/adr/0019-floors.md).
"""

from __future__ import annotations

from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR, CollectorRegistry

REGISTRY = CollectorRegistry(auto_describe=True)
for _c in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_c)
