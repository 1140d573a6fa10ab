"""The cluster profile of `qilu services` without I/O: its brokers' configuration, layout
and the CLI's choice of profile."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from qilu.errors import ServiceError
from qilu.services import Services, State, render
from qilu.services import cli as services_cli
from qilu.services.kafka_cluster import cluster_bootstrap
from qilu.settings import DatabaseSettings, KafkaSettings, ServicesSettings

HOSTS = ("127.0.0.11", "127.0.0.12", "127.0.0.13")


def node(node_id: int) -> dict[str, str | int]:
    return render.kafka_cluster_properties(
        node_id=node_id,
        hosts=HOSTS,
        port=29092,
        controller_port=29093,
        agent_port=29094,
        log_dir=Path(f"/s/kafka-{node_id}/data"),
    )


def test_each_node_is_broker_and_controller_of_one_three_voter_quorum() -> None:
    voters = "1@127.0.0.11:29093,2@127.0.0.12:29093,3@127.0.0.13:29093"
    for n, host in enumerate(HOSTS, start=1):
        props = node(n)
        assert props["node.id"] == n
        assert props["process.roles"] == "broker,controller"
        assert props["controller.quorum.voters"] == voters
        assert props["listeners"] == (
            f"PLAINTEXT://{host}:29092,CONTROLLER://{host}:29093,AGENTS://{host}:29094"
        )
        assert props["advertised.listeners"] == f"PLAINTEXT://{host}:29092,AGENTS://{host}:29094"
        assert props["log.dirs"] == f"/s/kafka-{n}/data"


def test_replication_three_copies_two_in_sync_no_unclean_leaders() -> None:
    props = node(2)
    assert props["default.replication.factor"] == 3
    assert props["min.insync.replicas"] == 2
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "share.coordinator.state.topic.replication.factor",
    ):
        assert props[key] == 3, key
    assert props["transaction.state.log.min.isr"] == 2
    assert props["unclean.leader.election.enable"] == "false"
    with pytest.raises(ValueError, match="node_id 4"):
        render.kafka_cluster_properties(
            node_id=4, hosts=HOSTS, port=1, controller_port=2, agent_port=3, log_dir=Path("/x")
        )


def test_topics_take_the_brokers_replication_factor_by_default() -> None:
    assert KafkaSettings().replication_factor == -1  # 1 on the single node, 3 in the cluster


def test_cluster_profile_layout(tmp_path: Path) -> None:
    settings = ServicesSettings(state_dir=tmp_path / "state")
    services = Services(settings, DatabaseSettings(), profile="cluster")
    rows = services.status()
    assert [r.name for r in rows] == ["kafka-1", "kafka-2", "kafka-3"]
    assert [r.address for r in rows] == [f"{h}:29092" for h in HOSTS]
    assert all(r.state in (State.STOPPED, State.NOT_INSTALLED) for r in rows)
    assert [r.data_dir for r in rows] == [
        tmp_path / "state" / f"kafka-{n}" / "data" for n in (1, 2, 3)
    ]
    one = services.server("kafka-1")
    assert one.starts_with_peers
    # the nodes share the single node's jars; each port is a settings field
    assert one.command().argv[-1] == str(tmp_path / "state" / "kafka-1" / "server.properties")
    assert f"{tmp_path / 'state' / 'kafka' / 'lib'}/*" in one.command().argv
    for field, port in one.ports().items():
        assert getattr(settings, field) == port
    assert not (tmp_path / "state").exists(), "status must not create anything"
    with pytest.raises(ServiceError, match="'kafka' in the cluster profile"):
        services.server("kafka")
    with pytest.raises(ServiceError, match="unknown profile"):
        Services(settings, DatabaseSettings(), profile="three")


def test_bootstrap_lists_every_node() -> None:
    assert cluster_bootstrap(HOSTS, 29092) == ("127.0.0.11:29092,127.0.0.12:29092,127.0.0.13:29092")


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="qilu")
    services_cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["services", *argv])


def test_cli_profile_from_option_or_from_the_named_servers() -> None:
    assert services_cli._profile(_args("up", "--profile", "cluster")) == "cluster"
    assert services_cli._profile(_args("up")) == "single"
    assert services_cli._profile(_args("status", "kafka-2")) == "cluster"
    assert services_cli._profile(_args("logs", "kafka-3")) == "cluster"
    assert services_cli._profile(_args("logs", "kafka")) == "single"
    with pytest.raises(SystemExit):
        _args("up", "--profile", "three")


def test_zero_replicas_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="0 replicas"):
        KafkaSettings(replication_factor=0)
    assert KafkaSettings(replication_factor=3).replication_factor == 3
