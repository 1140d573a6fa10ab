"""The ``qilu`` command line: one entry point, one subcommand per role.

Each subcommand lives with the stage it runs and exposes ``register(subparsers)``; this module
only wires them together, builds the settings once and maps the error tree to exit codes.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, NoReturn

from qilu import __version__, log
from qilu.errors import ConfigError, QiluError, ServiceError

if TYPE_CHECKING:  # pydantic-settings: the server extra's; the agent's commands go without
    from qilu.settings import Settings

logger = logging.getLogger(__name__)

# module path -> it registers one or more subcommands
COMMAND_MODULES: tuple[str, ...] = (
    "ops.services.cli",
    "ops.demo",
    "storage.cli",
    "storage.points_cli",
    "ops.backup_cli",
    "ops.reported_cli",
    "stream.cli",
    "stream.deadletters_cli",
    "edge_agent.cli",
    "ops.agents_cli",
    "ops.pki_cli",
    "interconnect.tcec102.cli",
    "api.cli",
    "dashboards.cli",
    "ops.check",
    "ops.bench_cli",
)

Handler = Callable[[argparse.Namespace, "Settings"], int]
# a command that needs no platform settings (the agent's own: `qilu agent run`, `check-config`,
# `requeue-quarantine`) sets ``agent_handler`` instead: it runs where the settings' pydantic
# is not installed (the edge install), and the platform's settings are not built for it
AgentHandler = Callable[[argparse.Namespace], int]

# what the `server` extra of pyproject.toml installs (import names): an edge install (a plain
# `pip install qilu-telemetry`, edge-agent/INSTALL-PI.md) has none of them, and its `qilu`
# runs the agent's commands; the others say which extra they need instead of a traceback
SERVER_EXTRA = frozenset(
    {
        "psycopg", "psycopg_pool", "fastapi", "starlette", "uvicorn", "jwt", "pyarrow",
        "httptools", "uvloop", "grafana_foundation_sdk", "grafana_client", "yaml", "openpyxl",
        "cryptography", "numpy", "confluent_kafka", "pydantic", "pydantic_core",
        "pydantic_settings",
    }
)  # fmt: skip
NEEDS_SERVER = "the platform's server packages: pip install 'qilu-telemetry[server]'"


def server_package_missing(exc: ModuleNotFoundError) -> bool:
    return (exc.name or "").split(".")[0] in SERVER_EXTRA


class _Parser(argparse.ArgumentParser):
    """Names the extra when a command is unknown because its module could not be loaded."""

    unavailable: tuple[str, ...] = ()

    def error(self, message: str) -> NoReturn:
        if self.unavailable and "invalid choice" in message:
            message += (
                f"; this install has no server commands ({', '.join(self.unavailable)}): "
                f"they need {NEEDS_SERVER}"
            )
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="qilu",
        description=(
            "Qilu Telemetry: edge agents -> Kafka -> PostgreSQL/TimescaleDB -> coverage API. "
            "Settings come from QILU_* environment variables (see README)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"qilu {__version__}")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (default INFO)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    unavailable = []
    for module in COMMAND_MODULES:
        try:
            importlib.import_module(module).register(sub)
        except ModuleNotFoundError as exc:
            if not server_package_missing(exc):
                raise
            unavailable.append(module)
    if unavailable:
        parser.unavailable = tuple(unavailable)
        parser.epilog = (
            f"Not in this install (edge only): the commands of {', '.join(unavailable)}; "
            f"they need {NEEDS_SERVER}."
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:  # noqa: PLR0911 - an exit code per error kind
    parser = build_parser()
    args = parser.parse_args(argv)
    agent_handler: AgentHandler | None = getattr(args, "agent_handler", None)
    if agent_handler is not None:
        log.setup(args.log_level or "INFO")
        run: Callable[[], int] = partial(agent_handler, args)
    else:
        try:
            from qilu.settings import load

            settings = load()
        except ConfigError as exc:
            print(f"qilu: configuration error: {exc}", file=sys.stderr)  # noqa: T201
            return 2
        except ModuleNotFoundError as exc:  # an edge install: no pydantic-settings
            if not server_package_missing(exc):
                raise
            print(f"qilu {args.command} needs {NEEDS_SERVER} ({exc})", file=sys.stderr)  # noqa: T201
            return 2
        log.setup(args.log_level or settings.log_level)
        handler: Handler = args.handler
        run = partial(handler, args, settings)
    try:
        return run()
    except ConfigError as exc:
        logger.error("configuration error: %s", exc)  # noqa: TRY400 - the message is the whole story
        return 2
    except ServiceError as exc:
        logger.error("%s", exc)  # noqa: TRY400
        return 3
    except QiluError as exc:
        logger.error("%s", exc)  # noqa: TRY400
        return 1
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as exc:
        if not server_package_missing(exc):
            raise
        logger.error("qilu %s needs %s (%s)", args.command, NEEDS_SERVER, exc)  # noqa: TRY400
        return 2


if __name__ == "__main__":
    sys.exit(main())
