"""``qilu services up|down|status|logs``: the local servers on loopback."""

from __future__ import annotations

import argparse
import sys

from ops.services import render
from ops.services.kafka_cluster import cluster_bootstrap
from ops.services.manager import Services
from ops.services.registry import DEFAULT_PROFILE, PROFILES
from qilu.errors import ServiceError
from qilu.settings import Settings

KNOWN = [name for servers in PROFILES.values() for name in servers]
NAMES_HELP = "servers to act on (default: all of the profile): " + "; ".join(
    f"{profile}: {', '.join(servers)}" for profile, servers in PROFILES.items()
)
PROFILE_HELP = (
    f"which set of servers (default: the named servers' profile, else {DEFAULT_PROFILE}): "
    f"{DEFAULT_PROFILE} = one of each on "
    "127.0.0.1; cluster = three Kafka brokers (each a KRaft controller too) on "
    "127.0.0.11-13, replication factor 3, min.insync.replicas 2 (docs/services.md)"
)


def _name(text: str) -> str:
    if text not in KNOWN:
        raise argparse.ArgumentTypeError(
            f"unknown service {text!r} (choose from {', '.join(KNOWN)})"
        )
    return text


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _profile(args: argparse.Namespace) -> str:
    """--profile, else the profile the named servers belong to, else the default."""
    if args.profile:
        return str(args.profile)
    names = list(getattr(args, "names", None) or [getattr(args, "name", None)])
    for profile, servers in PROFILES.items():
        if names and all(n in servers for n in names):
            return profile
    return DEFAULT_PROFILE


def _services(settings: Settings, args: argparse.Namespace) -> Services:
    return Services(settings.services, settings.db, progress=_say, profile=_profile(args))


def _up(args: argparse.Namespace, settings: Settings) -> int:
    services = _services(settings, args)
    services.up(args.names or None, restart_stale=True)
    if services.profile == "cluster":
        s = settings.services
        _say(
            "clients of the cluster: QILU_KAFKA__BOOTSTRAP="
            f"{cluster_bootstrap(s.cluster_hosts, s.cluster_kafka_port)}"
            " (agents: port "
            f"{s.cluster_kafka_agent_port}); topics get the brokers' replication factor 3"
        )
    return 0


def _down(args: argparse.Namespace, settings: Settings) -> int:
    _services(settings, args).down(args.names or None)
    return 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    rows = _services(settings, args).status(args.names or None)
    table = render.render_table(
        ("NAME", "STATE", "PID", "ADDRESS", "DATA"),
        ((s.name, str(s.state), str(s.pid or "-"), s.address, str(s.data_dir)) for s in rows),
    )
    sys.stdout.write(table)
    return 0 if all(s.up for s in rows) else 1


def _logs(args: argparse.Namespace, settings: Settings) -> int:
    services = _services(settings, args)
    path = services.server(args.name).log_file
    sys.stdout.write(f"==> {path} <==\n")
    if not path.exists():
        raise ServiceError(f"{args.name}: no log yet at {path}; start it with `qilu services up`")
    text = services.log_tail(args.name, args.lines)
    sys.stdout.write(text + ("\n" if text else ""))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``qilu services`` and its sub-commands."""
    parser = subparsers.add_parser(
        "services",
        help="install, start, stop and inspect the local servers (Kafka, PostgreSQL, ...)",
        description=(
            "Local servers on loopback for development, tests and benchmarks: "
            "kafka (KRaft single node), postgres (PostgreSQL 15), mosquitto (MQTT) and "
            "timescale (a TimescaleDB test engine: PGlite over the wire protocol). "
            "Missing software is installed on first use (Maven, npm, apt-get as root). "
            "All data, logs and pid files live in the state folder "
            "(QILU_SERVICES__STATE_DIR, default <repo>/.state); ports come from "
            "QILU_SERVICES__*_PORT."
        ),
    )
    sub = parser.add_subparsers(dest="services_command", metavar="ACTION", required=True)

    actions = (
        (
            "up",
            _up,
            "install if missing, start, and wait until every server answers",
            "Install what is missing, write the configs, start each server in the "
            "background and wait until it answers a real request (at most "
            "QILU_SERVICES__START_TIMEOUT_S each). Servers already running are left alone. "
            "Fails at once if a port is taken by another process.",
        ),
        (
            "down",
            _down,
            "stop the servers gracefully (SIGKILL after a timeout)",
            "Stop each server gracefully (SIGTERM; a fast shutdown for postgres) and "
            "SIGKILL it if it has not stopped in time. Data is kept; stopping a stopped "
            "server does nothing.",
        ),
        (
            "status",
            _status,
            "show a table of the servers; exit 0 only if all asked for are running",
            "Print name, state (running / stopped / not installed / not answering), pid, "
            "address and data folder of each server. Exit status 0 if all of them are "
            "running, 1 otherwise.",
        ),
    )
    for action, handler, summary, description in actions:
        cmd = sub.add_parser(action, help=summary, description=description)
        cmd.add_argument("names", nargs="*", type=_name, metavar="NAME", help=NAMES_HELP)
        cmd.add_argument("--profile", choices=tuple(PROFILES), default=None, help=PROFILE_HELP)
        cmd.set_defaults(handler=handler)

    logs = sub.add_parser(
        "logs",
        help="print the log file path and its last lines",
        description="Print the path of a server's log file and its last lines.",
    )
    logs.add_argument("name", type=_name, metavar="NAME", help=NAMES_HELP.split(": ", 1)[1])
    logs.add_argument("--profile", choices=tuple(PROFILES), default=None, help=PROFILE_HELP)
    logs.add_argument(
        "-n", "--lines", type=int, default=50, help="how many lines to print (default 50)"
    )
    logs.set_defaults(handler=_logs)
