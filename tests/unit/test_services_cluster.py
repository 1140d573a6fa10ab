"""The cluster profile of `qilu services` without I/O: its brokers' configuration, layout
and the CLI's choice of profile."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from ops.services import Services, State, render
from ops.services import cli as services_cli
from ops.services.kafka_cluster import cluster_bootstrap
from ops.services.pg_cluster import PatroniNode
from qilu.errors import ServiceError
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
    assert [r.name for r in services.status()] == [
        "kafka-1", "kafka-2", "kafka-3", "etcd-1", "etcd-2", "etcd-3", "pg-1", "pg-2"
    ]  # fmt: skip
    rows = services.status(["kafka-1", "kafka-2", "kafka-3"])
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


# ------------------------------------------------------------------ PostgreSQL under Patroni


def test_patroni_node_config() -> None:
    cfg = render.patroni_config(
        node_name="pg-2",
        host="127.0.0.22",
        pg_port=25432,
        api_port=28008,
        etcd="127.0.0.20:22379",
        data_dir=Path("/s/pg-2/data"),
        run_dir=Path("/s/pg-2/run"),
        bin_dir=Path("/usr/lib/postgresql/15/bin"),
        superuser="postgres",
        password="pw",
        replicator="replicator",
    )
    assert cfg["scope"] == "qilu"
    assert cfg["name"] == "pg-2"
    assert cfg["etcd3"] == {"hosts": "127.0.0.20:22379"}  # etcd v3, not the deprecated raft
    assert cfg["restapi"]["listen"] == "127.0.0.22:28008"
    assert cfg["postgresql"]["listen"] == "127.0.0.22:25432"
    dcs = cfg["bootstrap"]["dcs"]
    assert dcs["synchronous_mode"] is True
    assert "synchronous_mode_strict" not in dcs  # a lone primary keeps taking writes
    assert (dcs["ttl"], dcs["loop_wait"]) == (20, 2)
    assert dcs["postgresql"]["use_pg_rewind"] is True
    # a vanished client's transaction (and its locks) goes within about 25 s, not 2 h
    params = dcs["postgresql"]["parameters"]
    keepalive = ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count")
    idle, interval, count = (params[k] for k in keepalive)
    assert idle + interval * count <= 30
    # the whole province without a forced checkpoint every ~20 s (issue 18); local parameters,
    # so a cluster bootstrapped before them gets them at its next start
    local = cfg["postgresql"]["parameters"]
    assert (local["shared_buffers"], local["max_wal_size"]) == ("1GB", "4GB")
    assert local["wal_compression"] == "lz4"
    assert local["client_connection_check_interval"] == "2s"  # a gone client's statement ends
    assert (local["synchronous_commit"], local["fsync"], local["full_page_writes"]) == ("on",) * 3
    assert "max_connections" not in local  # Patroni takes that one from the DCS only
    assert cfg["postgresql"]["authentication"]["replication"]["username"] == "replicator"
    assert all("127.0.0.0/8" in line for line in cfg["postgresql"]["pg_hba"][:2])


def test_pg_nodes_in_the_cluster_profile(tmp_path: Path) -> None:
    settings = ServicesSettings(state_dir=tmp_path / "state")
    services = Services(settings, DatabaseSettings(), profile="cluster")
    names = ["etcd-1", "etcd-2", "etcd-3", "pg-1", "pg-2"]
    rows = {r.name: r.address for r in services.status(names)}
    assert rows == {
        "etcd-1": "127.0.0.31:22379",
        "etcd-2": "127.0.0.32:22379",
        "etcd-3": "127.0.0.33:22379",
        "pg-1": "127.0.0.21:25432",
        "pg-2": "127.0.0.22:25432",
    }
    for name in names:
        for field, port in services.server(name).ports().items():
            assert getattr(settings, field) == port
    pg1 = services.server("pg-1")
    assert pg1.detached_pids() == []  # no postmaster.pid yet
    (tmp_path / "state" / "pg-1" / "data").mkdir(parents=True)
    (tmp_path / "state" / "pg-1" / "data" / "postmaster.pid").write_text("999999999\n/x\n")
    assert pg1.detached_pids() == []  # not a live process


def test_three_etcd_members_one_quorum_and_patroni_knows_them_all(tmp_path: Path) -> None:
    settings = ServicesSettings(state_dir=tmp_path / "state")
    services = Services(settings, DatabaseSettings(), profile="cluster")
    peers = ",".join(f"etcd-{n}=http://127.0.0.3{n}:22380" for n in (1, 2, 3))
    for n in (1, 2, 3):
        member = services.server(f"etcd-{n}")
        assert member.starts_with_peers  # a member answers only once a majority runs
        argv = list(member.command().argv)
        flags = dict(zip(argv[1::2], argv[2::2], strict=True))
        assert flags["--name"] == f"etcd-{n}"
        assert flags["--listen-client-urls"] == f"http://127.0.0.3{n}:22379"
        assert flags["--initial-cluster"] == peers
        assert flags["--data-dir"] == str(tmp_path / "state" / f"etcd-{n}" / "data")
    with pytest.raises(ValueError, match="outside"):
        render.etcd_member_args(
            member_id=4, hosts=("a", "b", "c"), client_port=1, peer_port=2, data_dir=tmp_path
        )
    node = services.server("pg-1")
    assert isinstance(node, PatroniNode)
    cfg = yaml.safe_load(node.rendered_config())
    assert cfg["etcd3"]["hosts"] == "127.0.0.31:22379,127.0.0.32:22379,127.0.0.33:22379"


def test_writers_conninfo_lists_both_nodes_and_asks_for_the_primary() -> None:
    from psycopg.conninfo import conninfo_to_dict

    db = DatabaseSettings(
        host="127.0.0.21,127.0.0.22", port=25432, target_session_attrs="read-write"
    )
    info = conninfo_to_dict(db.conninfo())
    assert info["host"] == "127.0.0.21,127.0.0.22"
    assert info["target_session_attrs"] == "read-write"
    assert "target_session_attrs" not in conninfo_to_dict(DatabaseSettings().conninfo())
    with pytest.raises(ValueError, match="target_session_attrs"):
        DatabaseSettings(target_session_attrs="write")


def test_qilu_run_on_the_cluster_profile_reaches_every_broker_and_the_primary(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ops.services.registry import client_env, client_settings
    from qilu.settings import Settings

    base = Settings()
    assert client_settings(base, "single") is base
    s = client_settings(base, "cluster")
    assert s.kafka.bootstrap == ",".join(f"{h}:29092" for h in HOSTS)
    assert s.kafka.agent_bootstrap == ",".join(f"{h}:29094" for h in HOSTS)
    assert (s.db.host, s.db.port, s.db.target_session_attrs) == (
        "127.0.0.21,127.0.0.22",
        25432,
        "read-write",
    )
    with pytest.raises(ValueError, match="unknown profile"):
        client_settings(base, "triple")
    # qilu run's children read the same from their environment
    for key, value in client_env(s).items():
        monkeypatch.setenv(key, value)
    child = Settings()
    assert (child.kafka.bootstrap, child.db.conninfo()) == (s.kafka.bootstrap, s.db.conninfo())
