"""The servers ``qilu services`` knows, per profile, in start order (stopped in reverse).

``single`` (the default): one of each, on 127.0.0.1. ``cluster``: three Kafka nodes, etcd and two
PostgreSQL nodes under Patroni, each on its own loopback address (docs/services.md), beside
the single-node servers.
"""

from __future__ import annotations

from ops.services.base import Server
from ops.services.kafka import Kafka
from ops.services.kafka_cluster import KafkaNode1, KafkaNode2, KafkaNode3
from ops.services.mosquitto import Mosquitto
from ops.services.pg_cluster import Etcd, PatroniNode1, PatroniNode2
from ops.services.postgres import Postgres
from ops.services.prometheus import Prometheus
from ops.services.timescale import Timescale

SERVER_TYPES: dict[str, type[Server]] = {
    cls.name: cls for cls in (Kafka, Postgres, Mosquitto, Timescale, Prometheus)
}
CLUSTER_TYPES: dict[str, type[Server]] = {
    cls.name: cls for cls in (KafkaNode1, KafkaNode2, KafkaNode3, Etcd, PatroniNode1, PatroniNode2)
}
DEFAULT_PROFILE = "single"
PROFILES: dict[str, dict[str, type[Server]]] = {
    DEFAULT_PROFILE: SERVER_TYPES,
    "cluster": CLUSTER_TYPES,
}

ALL_SERVICES: tuple[str, ...] = tuple(SERVER_TYPES)
