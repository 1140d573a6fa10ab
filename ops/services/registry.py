"""The servers ``qilu services`` knows, per profile, in start order (stopped in reverse).

``single`` (the default): one of each, on 127.0.0.1. ``cluster``: three Kafka nodes, three
etcd members and two PostgreSQL nodes under Patroni, each on its own loopback address
(docs/services.md), beside the single-node servers.
"""

from __future__ import annotations

from ops.services.base import Server
from ops.services.kafka import Kafka
from ops.services.kafka_cluster import KafkaNode1, KafkaNode2, KafkaNode3, cluster_bootstrap
from ops.services.mosquitto import Mosquitto
from ops.services.pg_cluster import (
    EtcdMember1,
    EtcdMember2,
    EtcdMember3,
    PatroniNode1,
    PatroniNode2,
)
from ops.services.postgres import Postgres
from ops.services.prometheus import Prometheus
from ops.services.timescale import Timescale
from qilu.settings import Settings

SERVER_TYPES: dict[str, type[Server]] = {
    cls.name: cls for cls in (Kafka, Postgres, Mosquitto, Timescale, Prometheus)
}
CLUSTER_TYPES: dict[str, type[Server]] = {
    cls.name: cls
    for cls in (
        KafkaNode1,
        KafkaNode2,
        KafkaNode3,
        EtcdMember1,
        EtcdMember2,
        EtcdMember3,
        PatroniNode1,
        PatroniNode2,
    )
}
DEFAULT_PROFILE = "single"
PROFILES: dict[str, dict[str, type[Server]]] = {
    DEFAULT_PROFILE: SERVER_TYPES,
    "cluster": CLUSTER_TYPES,
}

ALL_SERVICES: tuple[str, ...] = tuple(SERVER_TYPES)


def client_settings(settings: Settings, profile: str = DEFAULT_PROFILE) -> Settings:
    """``settings`` as the platform's processes use them against ``profile``'s servers: for
    ``cluster`` every broker in the bootstrap lists, both PostgreSQL nodes in one connection
    string that asks for the primary (docs/adr/0017-postgres-failover.md)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    if profile == DEFAULT_PROFILE:
        return settings
    ss = settings.services
    kafka = settings.kafka.model_copy(
        update={
            "bootstrap": cluster_bootstrap(ss.cluster_hosts, ss.cluster_kafka_port),
            "agent_bootstrap": cluster_bootstrap(ss.cluster_hosts, ss.cluster_kafka_agent_port),
        }
    )
    db = settings.db.model_copy(
        update={
            "host": ",".join(ss.cluster_pg_hosts),
            "port": ss.cluster_pg_port,
            "target_session_attrs": "read-write",
        }
    )
    return settings.model_copy(update={"kafka": kafka, "db": db})


def client_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process ``settings``' Kafka and database addresses
    (what :func:`client_settings` changes)."""
    return {
        "QILU_KAFKA__BOOTSTRAP": settings.kafka.bootstrap,
        "QILU_KAFKA__AGENT_BOOTSTRAP": settings.kafka.agent_bootstrap,
        "QILU_DB__HOST": settings.db.host,
        "QILU_DB__PORT": str(settings.db.port),
        "QILU_DB__TARGET_SESSION_ATTRS": settings.db.target_session_attrs,
    }
