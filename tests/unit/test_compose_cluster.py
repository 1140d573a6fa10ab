"""docker-compose.yml's cluster profile against the local cluster profile (no Docker here).

The compose file is parsed; its brokers' environment is turned into ``server.properties``
keys the way the ``apache/kafka`` image does, and compared with what
``qilu services up --profile cluster`` renders for the same node: every setting the local
profile renders must be in compose with the same value, except where each broker listens and
keeps its files. Likewise the etcd members, the Patroni nodes and Patroni's bootstrap
settings (``infra/patroni/patroni.yml``), and the platform's processes on the cluster.
The schema check of the whole file is ``tests/integration/test_compose_spec.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ops.services import render
from ops.services.kafka_cluster import KafkaNode
from ops.services.pg_cluster import EtcdMember, PatroniNode
from ops.services.registry import PROFILES
from qilu.settings import REPO_ROOT, ServicesSettings

COMPOSE = REPO_ROOT / "docker-compose.yml"
PATRONI = REPO_ROOT / "infra" / "patroni" / "patroni.yml"
# where a node listens and keeps its files: set per deployment, not compared
PLACEMENT = {
    "listeners",
    "advertised.listeners",
    "controller.quorum.voters",
    "log.dirs",
    "listener.name.agents.ssl.keystore.location",
}


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return data


def cluster(services: dict[str, Any], image: str = "") -> dict[str, dict[str, Any]]:
    """The cluster profile's services (whose image starts with ``image``)."""
    return {
        name: svc
        for name, svc in services.items()
        if "cluster" in svc.get("profiles", ()) and str(svc.get("image", "")).startswith(image)
    }


def kafka_property(env_name: str) -> str:
    """The apache/kafka image's mapping: KAFKA_ dropped, ___ -> -, __ -> _, _ -> ."""
    key = env_name.removeprefix("KAFKA_").lower()
    return key.replace("___", "-").replace("__", "\0").replace("_", ".").replace("\0", "_")


def broker_properties(env: dict[str, Any]) -> dict[str, str]:
    return {
        kafka_property(k): str(v).lower() if isinstance(v, bool) else str(v)
        for k, v in env.items()
        if k.startswith("KAFKA_")
    }


def local_profile(kind: type) -> list[str]:
    return [name for name, cls in PROFILES["cluster"].items() if issubclass(cls, kind)]


def test_the_mapping_of_environment_names_is_the_images() -> None:
    assert kafka_property("KAFKA_MIN_INSYNC_REPLICAS") == "min.insync.replicas"
    assert (
        kafka_property("KAFKA_LISTENER_NAME_AGENTS_SCRAM___SHA___512_SASL_JAAS_CONFIG")
        == "listener.name.agents.scram-sha-512.sasl.jaas.config"
    )


def test_three_brokers_configured_as_the_local_cluster_profile(services: dict[str, Any]) -> None:
    ss = ServicesSettings()
    brokers = cluster(services, "apache/kafka")
    assert len(brokers) == len(ss.cluster_hosts) == len(local_profile(KafkaNode))
    for node_id in range(1, len(ss.cluster_hosts) + 1):
        env = services[f"kafka-{node_id}"]["environment"]
        got = broker_properties(env)
        want = render.kafka_cluster_properties(
            node_id=node_id,
            hosts=ss.cluster_hosts,
            port=ss.cluster_kafka_port,
            controller_port=ss.cluster_kafka_controller_port,
            agent_port=ss.cluster_kafka_agent_port,
            log_dir=Path("/data"),
            agent_keystore=Path("/pki/broker.pem"),  # the agents' listener on TLS
        )
        for key, value in want.items():
            if key in PLACEMENT:
                continue
            assert key in got, f"kafka-{node_id}: {key} missing (local: {value})"
            assert got[key] == str(value), f"kafka-{node_id}: {key}={got[key]}, local {value}"
        # the same quorum: every node a voter, by the same ids
        voters = {v.split("@")[0] for v in got["controller.quorum.voters"].split(",")}
        assert voters == {str(i) for i in range(1, len(brokers) + 1)}
        assert {v.split("@")[0] for v in str(want["controller.quorum.voters"]).split(",")} == voters
        assert "AGENTS:SASL_SSL" in got["listener.security.protocol.map"]
        assert "SSL://" not in env["KAFKA_ADVERTISED_LISTENERS"]  # the image's own SSL setup
        assert got["min.insync.replicas"] == "2"
        assert got["default.replication.factor"] == "3"


def test_the_comparison_fails_on_a_differing_setting(services: dict[str, Any]) -> None:
    env = dict(services["kafka-1"]["environment"])
    env["KAFKA_MIN_INSYNC_REPLICAS"] = 1
    assert broker_properties(env)["min.insync.replicas"] == "1"
    del env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"]
    assert "unclean.leader.election.enable" not in broker_properties(env)


def test_single_broker_agents_listener_is_tls_too(services: dict[str, Any]) -> None:
    got = broker_properties(services["kafka"]["environment"])
    assert "AGENTS:SASL_SSL" in got["listener.security.protocol.map"]
    assert got["listener.name.agents.ssl.keystore.type"] == "PEM"
    mounts = [v.split(":")[-2] for v in services["kafka"]["volumes"]]
    assert got["listener.name.agents.ssl.keystore.location"] in mounts


def test_etcd_members_as_many_as_the_local_profile(services: dict[str, Any]) -> None:
    members = {n: s for n, s in cluster(services).items() if n.startswith("etcd-")}
    local = local_profile(EtcdMember)
    assert len(members) == len(local) == 3, (list(members), local)
    for name, svc in members.items():
        flags = dict(a.split("=", 1) for a in svc["command"] if a.startswith("--"))
        initial = flags["--initial-cluster"].split(",")
        assert sorted(p.split("=")[0] for p in initial) == sorted(members), name
    patroni_hosts = services["pg-1"]["environment"]["PATRONI_ETCD3_HOSTS"].split(",")
    assert sorted(h.split(":")[0] for h in patroni_hosts) == sorted(members)


def test_patroni_nodes_and_settings_are_the_local_profiles(services: dict[str, Any]) -> None:
    nodes = {n: s for n, s in cluster(services).items() if n.startswith("pg-")}
    assert sorted(nodes) == sorted(local_profile(PatroniNode))
    compose_cfg = yaml.safe_load(PATRONI.read_text())
    local = render.patroni_config(
        node_name="pg-1",
        host="127.0.0.21",
        pg_port=25432,
        api_port=28008,
        etcd="127.0.0.20:22379",
        data_dir=Path("/data"),
        run_dir=Path("/run"),
        bin_dir=Path("/bin"),
        superuser="postgres",
        password="x",
        replicator="replicator",
    )
    want, got = local["bootstrap"]["dcs"], compose_cfg["bootstrap"]["dcs"]
    assert got["synchronous_mode"] is True
    for key, value in want.items():
        if key != "postgresql":
            assert got[key] == value, key
    assert got["postgresql"]["use_pg_rewind"] == want["postgresql"]["use_pg_rewind"]
    params = got["postgresql"]["parameters"]
    for key, value in want["postgresql"]["parameters"].items():
        assert str(params[key]) == str(value), key
    assert params["shared_preload_libraries"] == "timescaledb"  # TimescaleDB in compose
    assert compose_cfg["bootstrap"]["initdb"] == local["bootstrap"]["initdb"]
    assert compose_cfg["postgresql"]["basebackup"] == local["postgresql"]["basebackup"]
    assert compose_cfg["postgresql"]["parameters"] == render.PATRONI_TUNING
    assert compose_cfg["scope"] == local["scope"]
    for name, svc in nodes.items():
        env = svc["environment"]
        assert env["PATRONI_NAME"] == name
        assert env["PATRONI_REPLICATION_USERNAME"] == "replicator"
        assert "./infra/patroni/patroni.yml:/etc/patroni/patroni.yml:ro" in svc["volumes"]


def test_the_single_database_ends_a_gone_clients_statement_as_the_local_one(
    services: dict[str, Any],
) -> None:
    command = services["timescaledb"]["command"]
    key = "client_connection_check_interval"
    assert command[:2] == ["postgres", "-c"]
    assert f"{key}={render.POSTGRES_TUNING[key]}" in command


def test_the_platform_on_the_cluster_reaches_every_broker_and_the_primary(
    services: dict[str, Any],
) -> None:
    brokers = sorted(cluster(services, "apache/kafka"))
    nodes = sorted(n for n in cluster(services) if n.startswith("pg-"))
    apps = {n: s for n, s in cluster(services).items() if s.get("image") == "qilu-telemetry:dev"}
    assert {"migrate-cluster", "api-cluster"} <= set(apps)
    ingests = [n for n in apps if n.startswith("ingest-cluster-")]
    assert len(ingests) >= 2  # two hosts' worth, one consumer group
    for name, svc in apps.items():
        env = svc["environment"]
        assert sorted(h.split(":")[0] for h in env["QILU_KAFKA__BOOTSTRAP"].split(",")) == brokers
        assert sorted(env["QILU_DB__HOST"].split(",")) == nodes, name
        assert env["QILU_DB__TARGET_SESSION_ATTRS"] == "read-write", name
        assert env["QILU_KAFKA__AGENT_SECURITY_PROTOCOL"] == "SASL_SSL", name
        assert set(svc["depends_on"]) >= set(brokers) | set(nodes), name
    ids = [services[n]["environment"]["QILU_INGEST__GROUP_INSTANCE_ID"] for n in ingests]
    assert len(set(ids)) == len(ids)
    for name in (*ingests, "api-cluster"):
        cond = services[name]["depends_on"]["migrate-cluster"]["condition"]
        assert cond == "service_completed_successfully"
