"""Pure logic of ``qilu services``: config rendering, parsers and wire packets.

Nothing here touches the file system, the network or the process table, so every function
can be unit-tested with plain strings. The server modules feed it what they read.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HEADER = "written by `qilu services`; edits are overwritten on the next `up`"

# sun_path is 108 bytes on Linux including the trailing NUL; keep a margin
UNIX_SOCKET_PATH_MAX = 100


# --------------------------------------------------------------------------- kafka


def new_kafka_cluster_id(raw: bytes | None = None) -> str:
    """A Kafka cluster id: a random UUID in URL-safe base64 without padding (22 chars).

    Like Kafka's own ``Uuid.randomUuid`` it never starts with ``-`` (the storage tool would
    read it as an option). ``raw`` (16 bytes) is for tests.
    """
    while True:
        data = raw if raw is not None else uuid.uuid4().bytes
        text = base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")
        if not text.startswith("-"):
            return text
        if raw is not None:
            return "A" + text[1:]


_CLUSTER_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{21}$")


def is_kafka_cluster_id(text: str) -> bool:
    return bool(_CLUSTER_ID.match(text))


def render_properties(values: Mapping[str, str | int], *, comment: str = HEADER) -> str:
    """A Java .properties file, keys in the given order."""
    lines = [f"# {comment}"]
    for key, value in values.items():
        text = str(value)
        if "\n" in text:
            raise ValueError(f"{key}: value must be one line")
        lines.append(f"{key}={text.replace(chr(92), chr(92) * 2)}")
    return "\n".join(lines) + "\n"


def kafka_server_properties(
    *,
    host: str,
    port: int,
    controller_port: int,
    log_dir: Path,
    agent_port: int | None = None,
    partitions: int = 6,
    node_id: int = 1,
    agent_keystore: Path | None = None,
) -> dict[str, str | int]:
    """KRaft single node, combined broker + controller, loopback only.

    Two client listeners (docs/adr/0010-agent-authentication.md):

    - ``PLAINTEXT`` on ``port``: the platform's internal clients (ingest, admin tools, tests).
      No authentication: its principal ``User:ANONYMOUS`` is a super user, so this listener
      must stay on loopback (or a private network the agents cannot reach);
    - ``AGENTS`` on ``agent_port``: what edge agents connect to, SASL/SCRAM-SHA-512, one user
      per agent created by ``qilu agents provision``; the ``StandardAuthorizer`` lets each agent
      only write to the topics of its sectors (no ACL = denied). With ``agent_keystore`` (the
      ``broker.pem`` of ``qilu pki``: key and certificate chain) it is SASL_SSL: TLS with that
      certificate, agents verifying it against the platform's CA.
    """
    listeners = f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}"
    advertised = f"PLAINTEXT://{host}:{port}"
    protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    if agent_port is not None:
        listeners += f",AGENTS://{host}:{agent_port}"
        advertised += f",AGENTS://{host}:{agent_port}"
        protocols += ",AGENTS:SASL_SSL" if agent_keystore else ",AGENTS:SASL_PLAINTEXT"
    props: dict[str, str | int] = {
        "process.roles": "broker,controller",
        "node.id": node_id,
        "controller.quorum.voters": f"{node_id}@{host}:{controller_port}",
        "listeners": listeners,
        "advertised.listeners": advertised,
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": protocols,
    }
    if agent_port is not None:
        props |= {
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.agents.sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.agents.scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            # the internal and controller listeners are unauthenticated (ANONYMOUS)
            "super.users": "User:ANONYMOUS",
            "allow.everyone.if.no.acl.found": "false",
        }
        if agent_keystore:
            props |= {
                "listener.name.agents.ssl.keystore.type": "PEM",
                "listener.name.agents.ssl.keystore.location": str(agent_keystore),
                "listener.name.agents.ssl.enabled.protocols": "TLSv1.3,TLSv1.2",
            }
    return props | {
        "log.dirs": str(log_dir),
        "num.partitions": partitions,
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": 1,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        "group.initial.rebalance.delay.ms": 0,
        "num.recovery.threads.per.data.dir": 2,
    }


def kafka_cluster_properties(
    *,
    node_id: int,
    hosts: Sequence[str],
    port: int,
    controller_port: int,
    agent_port: int,
    log_dir: Path,
    partitions: int = 6,
    agent_keystore: Path | None = None,
) -> dict[str, str | int]:
    """One of the cluster profile's brokers (docs/services.md): node ``node_id`` (1-based)
    listens on ``hosts[node_id - 1]``; every node is a broker and a KRaft controller, the
    three controllers form the quorum. Topics get three replicas, and a write acknowledged
    with ``acks=all`` is on at least two of them (``min.insync.replicas=2``), so losing one
    broker loses no acknowledged record and leaves the partition writable."""
    if not 1 <= node_id <= len(hosts):
        raise ValueError(f"node_id {node_id} outside 1..{len(hosts)}")
    replicas = len(hosts)
    min_isr = replicas // 2 + 1
    props = kafka_server_properties(
        host=hosts[node_id - 1],
        port=port,
        controller_port=controller_port,
        agent_port=agent_port,
        log_dir=log_dir,
        partitions=partitions,
        node_id=node_id,
        agent_keystore=agent_keystore,
    )
    return props | {
        "controller.quorum.voters": ",".join(
            f"{i}@{h}:{controller_port}" for i, h in enumerate(hosts, start=1)
        ),
        "default.replication.factor": replicas,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": replicas,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": min_isr,
        # a replica that fell behind never becomes leader: it could lack acknowledged records
        "unclean.leader.election.enable": "false",
        # a broker that stops heartbeating is fenced (its partitions get new leaders) after
        # 4 s instead of 9 s: the target is writes back within 10 s of a broker loss
        # (docs/services.md); heartbeats every second keep a loaded broker from being fenced
        "broker.session.timeout.ms": 4000,
        "broker.heartbeat.interval.ms": 1000,
    }


def etcd_member_args(
    *, member_id: int, hosts: Sequence[str], client_port: int, peer_port: int, data_dir: Path
) -> list[str]:
    """etcd's arguments for member ``member_id`` (1-based, ``etcd-N`` on ``hosts[N - 1]``) of
    a quorum of ``len(hosts)`` members on the same ports, bootstrapped together."""
    if not 1 <= member_id <= len(hosts):
        raise ValueError(f"member_id {member_id} outside 1..{len(hosts)}")
    host = hosts[member_id - 1]
    client, peer = f"http://{host}:{client_port}", f"http://{host}:{peer_port}"
    cluster = ",".join(f"etcd-{i}=http://{h}:{peer_port}" for i, h in enumerate(hosts, start=1))
    return [
        "--name", f"etcd-{member_id}",
        "--data-dir", str(data_dir),
        "--listen-client-urls", client,
        "--advertise-client-urls", client,
        "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer,
        "--initial-cluster", cluster,
        "--initial-cluster-state", "new",
        "--initial-cluster-token", "qilu",
    ]  # fmt: skip


def patroni_config(
    *,
    node_name: str,
    host: str,
    pg_port: int,
    api_port: int,
    etcd: str,
    data_dir: Path,
    run_dir: Path,
    bin_dir: Path,
    superuser: str,
    password: str,
    replicator: str,
) -> dict[str, Any]:
    """One Patroni node of the cluster profile (docs/adr/0017-postgres-failover.md).

    Failure detection: the primary's leader key lives ``ttl`` = 20 s (Patroni's minimum)
    and is renewed every ``loop_wait`` = 2 s, so a dead primary is replaced within about
    20-25 s. ``synchronous_mode``: a commit returns once the replica has it, so the replica
    that Patroni promotes holds every acknowledged commit (when the replica is down, the
    primary goes on alone: not ``synchronous_mode_strict``)."""
    return {
        "scope": "qilu",
        "name": node_name,
        "restapi": {"listen": f"{host}:{api_port}", "connect_address": f"{host}:{api_port}"},
        "etcd3": {"hosts": etcd},
        "bootstrap": {
            "dcs": {
                "ttl": 20,
                "loop_wait": 2,
                "retry_timeout": 5,
                "maximum_lag_on_failover": 1_048_576,
                "synchronous_mode": True,
                "postgresql": {
                    "use_pg_rewind": True,
                    "parameters": {
                        "wal_level": "replica",
                        "hot_standby": "on",
                        "wal_log_hints": "on",
                        "max_wal_senders": 10,
                        "max_replication_slots": 10,
                        "max_connections": 200,
                        # a client host that vanishes mid-transaction (no FIN, no RST) keeps
                        # its row locks until the server notices: probe idle connections after
                        # 10 s, every 5 s, 3 times (about 25 s) instead of the kernel's 2 h
                        "tcp_keepalives_idle": 10,
                        "tcp_keepalives_interval": 5,
                        "tcp_keepalives_count": 3,
                    },
                },
            },
            "initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}, "data-checksums"],
        },
        "postgresql": {
            "listen": f"{host}:{pg_port}",
            "connect_address": f"{host}:{pg_port}",
            "data_dir": str(data_dir),
            "bin_dir": str(bin_dir),
            "pgpass": str(run_dir / "pgpass"),
            "authentication": {
                "superuser": {"username": superuser, "password": password},
                "replication": {"username": replicator, "password": password},
            },
            # local parameters, not bootstrap.dcs: they reach a cluster bootstrapped before
            # they were written too (Patroni reads them at every start)
            "parameters": {"unix_socket_directories": str(run_dir), **PATRONI_TUNING},
            # a new replica's pg_basebackup asks for an immediate checkpoint, not a spread one
            "basebackup": [{"checkpoint": "fast"}],
            "pg_hba": [
                f"host replication {replicator} 127.0.0.0/8 scram-sha-256",
                "host all all 127.0.0.0/8 scram-sha-256",
                "local all all trust",
            ],
        },
        "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False},
    }


def kafka_log4j2_properties() -> str:
    """log4j2 config: everything to stdout (the launcher points it at logs/kafka.log).

    WARN for most loggers; INFO for the few lines that tell start-up and shut-down.
    A .properties config needs no YAML parser on the classpath.
    """
    info_loggers = ("kafka.server.KafkaRaftServer", "kafka.Kafka")
    lines = [
        f"# {HEADER}",
        "status = warn",
        "name = qilu-kafka",
        # Kafka logs its own shutdown; log4j's hook would only race it (and warn)
        "shutdownHook = disable",
        "appender.out.type = Console",
        "appender.out.name = STDOUT",
        "appender.out.target = SYSTEM_OUT",
        "appender.out.layout.type = PatternLayout",
        "appender.out.layout.pattern = [%d] %p %m (%c)%n",
        "rootLogger.level = WARN",
        "rootLogger.appenderRef.out.ref = STDOUT",
    ]
    for i, name in enumerate(info_loggers):
        lines += [f"logger.l{i}.name = {name}", f"logger.l{i}.level = INFO"]
    return "\n".join(lines) + "\n"


def kafka_command(
    *, java: str, heap_mb: int, lib_dir: Path, log4j_config: Path, server_properties: Path
) -> list[str]:
    return [
        java,
        f"-Xmx{heap_mb}m",
        f"-Xms{heap_mb}m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j_config}",
        "-cp",
        f"{lib_dir}/*",
        "kafka.Kafka",
        str(server_properties),
    ]


_JAVA_VERSION = re.compile(r'version "(?P<v>[^"]+)"')


def parse_java_major(version_output: str) -> int | None:
    """The major version from ``java -version`` output: "1.8.0_292" -> 8, "17.0.15" -> 17."""
    m = _JAVA_VERSION.search(version_output)
    if m is None:
        return None
    parts = re.split(r"[._+-]", m.group("v"))
    try:
        first = int(parts[0])
        return int(parts[1]) if first == 1 and len(parts) > 1 else first
    except ValueError:
        return None


# --------------------------------------------------------------------------- postgres


def pg_quote(value: str) -> str:
    """A postgresql.conf string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def postgres_socket_dir(candidate: Path, port: int) -> str:
    """The unix socket directory, or "" (sockets off) when the path would be too long."""
    if len(str(candidate / f".s.PGSQL.{port}")) > UNIX_SOCKET_PATH_MAX:
        return ""
    return str(candidate)


POSTGRES_TUNING: dict[str, str] = {
    # a 2-core / 24 GiB box running ingest benchmarks
    "max_connections": "100",
    "shared_buffers": "1GB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "15min",
    "wal_compression": "on",
    # a statement whose client is gone (a killed `qilu run`, a dropped network) ends within
    # ~2 s instead of running to its end and rolling back: a restarted run's rollup refresh
    # went on for 5+ minutes beside the new one's (issue 18). Linux; PostgreSQL 14+
    "client_connection_check_interval": "2s",
    # durability is a product promise: never turn these off for speed
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
}


# The cluster profile's nodes, the single node's tuning but max_connections (Patroni keeps
# that one in its DCS: bootstrap.dcs above). With PostgreSQL's defaults (128MB shared_buffers,
# 1GB max_wal_size, 5 min checkpoints, no WAL compression) the whole province (37,000
# readings/s) forced a checkpoint every ~20 s: 3,455 full-page images and 18.9 MB of WAL a
# second for pg-2 to replay, and the primary's backends wrote ~7,300 buffers a second
# themselves (bench/province_live.py, issue 18). lz4: the WAL compressed at a fraction of
# pglz's CPU, on a primary that shares two cores with everything else.
PATRONI_TUNING: dict[str, str] = {
    k: v for k, v in POSTGRES_TUNING.items() if k != "max_connections"
} | {"wal_compression": "lz4"}


def postgres_conf(*, host: str, port: int, socket_dir: str) -> str:
    """The settings included from postgresql.conf (``include 'qilu.conf'``)."""
    values: dict[str, str] = {
        "listen_addresses": pg_quote(host),
        "port": str(port),
        "unix_socket_directories": pg_quote(socket_dir),
        **POSTGRES_TUNING,
        "logging_collector": "off",
        "log_destination": "'stderr'",
        "log_line_prefix": pg_quote("%m [%p] %q%u@%d "),
        "log_timezone": "'UTC'",
        "timezone": "'UTC'",
    }
    lines = [f"# {HEADER}"] + [f"{k} = {v}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


POSTGRES_INCLUDE_LINE = "include_if_exists = 'qilu.conf'"


def with_postgres_include(postgresql_conf: str) -> str:
    """postgresql.conf with our include line appended once (idempotent)."""
    if any(line.strip() == POSTGRES_INCLUDE_LINE for line in postgresql_conf.splitlines()):
        return postgresql_conf
    sep = "" if postgresql_conf.endswith("\n") or not postgresql_conf else "\n"
    return f"{postgresql_conf}{sep}\n# qilu services: our settings, last so they win\n" + (
        POSTGRES_INCLUDE_LINE + "\n"
    )


def initdb_command(*, initdb: str, data_dir: Path, pwfile: Path, superuser: str) -> list[str]:
    return [
        initdb,
        "-D",
        str(data_dir),
        "-U",
        superuser,
        f"--pwfile={pwfile}",
        "--auth-host=scram-sha-256",
        "--auth-local=trust",
        "--encoding=UTF8",
        "--no-locale",
    ]


# --------------------------------------------------------------------------- prometheus

# where a rendered prometheus.yml finds the agents' file_sd targets, relative to its folder
PROMETHEUS_AGENT_TARGETS = "targets/agents.json"


def prometheus_config(source: str) -> str:
    """The repository's prometheus.yml as the local Prometheus runs it: the same text under a
    header, written next to its ``targets/`` folder (Prometheus resolves the relative file_sd
    paths against the configuration file's folder)."""
    if PROMETHEUS_AGENT_TARGETS not in source:
        raise ValueError(f"prometheus.yml does not read the agents' {PROMETHEUS_AGENT_TARGETS}")
    return f"# {HEADER}; the source is infra/prometheus/prometheus.yml\n{source}"


# --------------------------------------------------------------------------- mosquitto


def mosquitto_conf(*, host: str, port: int, data_dir: Path, run_as: str | None) -> str:
    """Our own broker config: loopback, anonymous (development only), persistent."""
    lines = [
        f"# {HEADER}",
        "per_listener_settings false",
        f"listener {port} {host}",
        "allow_anonymous true",
        "persistence true",
        f"persistence_location {data_dir}/",
        "autosave_interval 60",
        # stderr is logs/mosquitto.log (the launcher redirects it); unbuffered, unlike stdout
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
        "log_timestamp true",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
    ]
    if run_as:
        lines.append(f"user {run_as}")
    return "\n".join(lines) + "\n"


def _mqtt_remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _mqtt_string(text: str) -> bytes:
    data = text.encode("utf-8")
    return len(data).to_bytes(2, "big") + data


def mqtt_connect_packet(client_id: str, *, keepalive_s: int = 10) -> bytes:
    """An MQTT 3.1.1 CONNECT with a clean session and no credentials."""
    variable = _mqtt_string("MQTT") + bytes([4, 0x02]) + keepalive_s.to_bytes(2, "big")
    payload = _mqtt_string(client_id)
    body = variable + payload
    return bytes([0x10]) + _mqtt_remaining_length(len(body)) + body


MQTT_DISCONNECT = bytes([0xE0, 0x00])


def parse_mqtt_connack(data: bytes) -> int:
    """The CONNACK return code (0 = accepted); ValueError if it is no CONNACK."""
    if len(data) < 4 or data[0] != 0x20 or data[1] != 0x02:
        raise ValueError(f"not an MQTT CONNACK: {data[:8].hex()}")
    return data[3]


# --------------------------------------------------------------------------- timescale


def timescale_command(
    *, node: str, script: Path, data_dir: Path, host: str, port: int
) -> list[str]:
    return [
        node,
        str(script),
        "--data",
        str(data_dir),
        "--host",
        host,
        "--port",
        str(port),
    ]


# --------------------------------------------------------------------------- processes


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of /proc/PID/stat we use."""

    pid: int
    comm: str
    state: str
    ppid: int
    start_ticks: int


def parse_proc_stat(text: str) -> ProcStat:
    """Parse /proc/PID/stat; ``comm`` may hold spaces and parentheses."""
    lpar, rpar = text.index("("), text.rindex(")")
    fields = text[rpar + 2 :].split()
    # fields[0] is field 3 (state); starttime is field 22
    return ProcStat(
        pid=int(text[:lpar]),
        comm=text[lpar + 1 : rpar],
        state=fields[0],
        ppid=int(fields[1]),
        start_ticks=int(fields[19]),
    )


def descendants(root: int, parents: Mapping[int, int]) -> list[int]:
    """All processes below ``root`` given a pid -> ppid map, children before grandchildren."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    out: list[int] = []
    todo = sorted(children.get(root, []))
    while todo:
        pid = todo.pop(0)
        if pid in out or pid == root:
            continue
        out.append(pid)
        todo.extend(sorted(children.get(pid, [])))
    return out


@dataclass(frozen=True, slots=True)
class Listener:
    address: str
    port: int
    inode: int


_TCP_LISTEN = "0A"


def _hex_to_ip(hex_ip: str) -> str:
    raw = bytes.fromhex(hex_ip)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    # /proc/net/tcp6: four 32-bit words, each in host (little-endian) byte order
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return str(ipaddress.IPv6Address(words))


def parse_proc_net_tcp(text: str) -> list[Listener]:
    """The listening sockets in a /proc/net/tcp or /proc/net/tcp6 table."""
    out: list[Listener] = []
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 10 or cols[3] != _TCP_LISTEN:
            continue
        hex_ip, hex_port = cols[1].rsplit(":", 1)
        out.append(Listener(_hex_to_ip(hex_ip), int(hex_port, 16), int(cols[9])))
    return out


def listener_covers(listener: Listener, host: str, port: int) -> bool:
    """Would ``listener`` stop us from binding ``host:port``?"""
    if listener.port != port:
        return False
    ip = ipaddress.ip_address(listener.address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_unspecified or str(ip) == host


def port_taken_message(name: str, host: str, port: int, pid: int | None, env_key: str) -> str:
    who = f"pid {pid}" if pid is not None else "pid unknown"
    return (
        f"{name}: port {port} on {host} is taken by another process ({who}); "
        f"stop it or set {env_key}"
    )


def port_env_key(field: str) -> str:
    """The environment variable that sets a ``ServicesSettings`` field."""
    return f"QILU_SERVICES__{field.upper()}"


# --------------------------------------------------------------------------- output


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def tail_lines(text: str, n: int) -> list[str]:
    """The last ``n`` lines, colour escapes removed."""
    lines = strip_ansi(text).splitlines()
    return lines[-n:] if n > 0 else []


def since_last_marker(text: str, marker: str) -> str:
    """The part of a log after the last line containing ``marker`` (all of it if none)."""
    idx = text.rfind(marker)
    if idx < 0:
        return text
    nl = text.find("\n", idx)
    return "" if nl < 0 else text[nl + 1 :]


def render_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A left-aligned plain-text table; the last column is not padded."""
    all_rows = [list(header)] + [list(r) for r in rows]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(header))]
    out = []
    for row in all_rows:
        cells = [c.ljust(widths[i]) for i, c in enumerate(row[:-1])] + [row[-1]]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out) + "\n"


def content_fingerprint(parts: Iterable[bytes]) -> str:
    """A short stable hash of some file contents (install markers)."""
    import hashlib

    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()[:16]
