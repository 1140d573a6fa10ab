"""``qilu services up|down|status|logs``: the local servers on loopback."""

from __future__ import annotations

import argparse
import sys

from qilu.errors import ServiceError
from qilu.services import render
from qilu.services.manager import Services
from qilu.services.registry import ALL_SERVICES
from qilu.settings import Settings

NAMES_HELP = f"servers to act on (default: all): {', '.join(ALL_SERVICES)}"


def _name(text: str) -> str:
    if text not in ALL_SERVICES:
        raise argparse.ArgumentTypeError(
            f"unknown service {text!r} (choose from {', '.join(ALL_SERVICES)})"
        )
    return text


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _services(settings: Settings) -> Services:
    return Services(settings.services, settings.db, progress=_say)


def _up(args: argparse.Namespace, settings: Settings) -> int:
    _services(settings).up(args.names or None, restart_stale=True)
    return 0


def _down(args: argparse.Namespace, settings: Settings) -> int:
    _services(settings).down(args.names or None)
    return 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    rows = _services(settings).status(args.names or None)
    table = render.render_table(
        ("NAME", "STATE", "PID", "ADDRESS", "DATA"),
        ((s.name, str(s.state), str(s.pid or "-"), s.address, str(s.data_dir)) for s in rows),
    )
    sys.stdout.write(table)
    return 0 if all(s.up for s in rows) else 1


def _logs(args: argparse.Namespace, settings: Settings) -> int:
    services = _services(settings)
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
        cmd.set_defaults(handler=handler)

    logs = sub.add_parser(
        "logs",
        help="print the log file path and its last lines",
        description="Print the path of a server's log file and its last lines.",
    )
    logs.add_argument("name", type=_name, metavar="NAME", help=f"one of {', '.join(ALL_SERVICES)}")
    logs.add_argument(
        "-n", "--lines", type=int, default=50, help="how many lines to print (default 50)"
    )
    logs.set_defaults(handler=_logs)
