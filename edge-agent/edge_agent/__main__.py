"""``python -m edge_agent run --config FILE`` | ``check-config FILE`` | ``requeue-quarantine
--config FILE``: the agent on a Pi.

The same agent as ``qilu agent run``, started without the platform's command line (which
loads the server-side settings and costs several MB of RSS). Exit codes: 0 ok, 1 error,
2 configuration error (the message names the key).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

logger = logging.getLogger("edge_agent")


def unit_command(argv: Sequence[str]) -> SimpleNamespace | None:
    """The systemd unit's command line, ``[--log-level LEVEL] run --config FILE`` in exactly
    that form, read without argparse: argparse and its gettext stay out of a running agent
    (~0.3 MB of RSS; bench/results/edge_footprint.json). None for any other command line:
    argparse parses it (help, errors, other spellings) as before."""
    args = list(argv)
    level = "INFO"
    if len(args) >= 2 and args[0] == "--log-level" and not args[1].startswith("-"):
        level, args = args[1], args[2:]
    if len(args) == 3 and args[:2] == ["run", "--config"] and args[2][:1] not in ("", "-"):
        return SimpleNamespace(log_level=level, command="run", config=Path(args[2]))
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = unit_command(argv) or parse(argv)

    from edge_agent import lean

    # before anything imports them: kafka-python's, prometheus_client's and crc32c's package
    # __init__ load what an agent does not use (edge_agent/lean.py)
    lean.defer_all()
    from qilu import log
    from qilu.errors import ConfigError, QiluError

    log.setup(args.log_level)
    from edge_agent import config, runtime

    try:
        cfg = config.load(args.config)
        if args.command == "check-config":
            collectors = runtime.build_collectors(cfg)
            lines = runtime.describe(cfg, collectors)
            if args.online:
                lines += runtime.check_online(cfg, collectors)
            sys.stdout.write("\n".join(lines) + "\n")
            return 0
        if args.command == "requeue-quarantine":
            from qilu.contract import Sector

            sectors = [Sector(s) for s in args.sector] if args.sector else None
            sys.stdout.write("\n".join(runtime.requeue(cfg, sectors)) + "\n")
            return 0
        return runtime.run(cfg)
    except ConfigError as exc:
        logger.error("configuration error: %s", exc)  # noqa: TRY400 - the message is the story
        return 2
    except QiluError as exc:
        logger.error("%s", exc)  # noqa: TRY400
        return 1
    except KeyboardInterrupt:
        return 130


def parse(argv: Sequence[str]) -> Any:
    """The command line by argparse (every command, ``--help``)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m edge_agent",
        description="Qilu edge agent: collectors -> durable buffer -> Kafka.",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    r = sub.add_parser("run", help="run the agent of a configuration file")
    r.add_argument("--config", required=True, type=Path, help="the agent's TOML configuration")
    c = sub.add_parser(
        "check-config",
        help="validate a configuration file and print a summary (no network without --online)",
        description="Validates the file and the QILU_EDGE__* environment overrides without "
        "network and prints a summary (exit 2 on a bad key, the message names it). Plain "
        "check-config does not contact the platform, the broker or any device; --online "
        "also asks the platform's API ([platform] url) about the configured devices.",
    )
    c.add_argument("config", type=Path, help="the agent's TOML configuration")
    c.add_argument(
        "--online",
        action="store_true",
        help="also ask the platform ([platform] url) whether every configured device is "
        "registered and at the agent's sites (a request signed with the agent's key)",
    )
    q = sub.add_parser(
        "requeue-quarantine",
        help="send the envelopes the broker refused (not authorised) again from the next start",
    )
    q.add_argument("--config", required=True, type=Path, help="the agent's TOML configuration")
    q.add_argument(
        "--sector",
        action="append",
        choices=["charging", "substation", "ranch"],
        default=None,
        help="only this sector's quarantine (repeatable; default all)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
