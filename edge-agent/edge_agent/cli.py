"""``qilu agent``: run an edge agent from its TOML file, check a file, or simulate a province.

    qilu agent run --config agent.toml      one agent: its collectors, its durable buffer
    qilu agent check-config agent.toml      validate without starting anything (exit 2 if bad)
    qilu agent requeue-quarantine --config agent.toml
                                            re-send envelopes the broker refused (not authorised)
    qilu agent province --scale 0.02        one simulated agent per (sector, city), for demos

On a Pi the systemd unit runs ``python -m edge_agent run --config ...`` instead: the same
agent without the platform's server-side imports (smaller RSS).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import signal
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from qilu.contract import Sector
from qilu.errors import ConfigError

if TYPE_CHECKING:  # the platform's settings (pydantic): only `qilu agent province` builds them
    from qilu.settings import Settings

logger = logging.getLogger(__name__)
N = TypeVar("N", int, float)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "agent",
        help="edge agent: run from a TOML file, check a file, or simulate a province",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmds = p.add_subparsers(dest="agent_command", metavar="SUBCOMMAND", required=True)

    r = cmds.add_parser(
        "run",
        help="run one agent from its configuration file",
        description=(
            "Runs the collectors of the file, keeps every reading in the durable buffer until "
            "Kafka acknowledged it, and serves Prometheus metrics. Environment variables "
            "QILU_EDGE__<SECTION>__<KEY> override the file. Sample: edge-agent/agent.sample.toml."
        ),
    )
    r.add_argument("--config", required=True, type=Path, help="the agent's TOML file")
    r.set_defaults(agent_handler=_run)

    c = cmds.add_parser(
        "check-config",
        help="validate a configuration file (and environment overrides) and print a summary",
        description="Validates the file and the QILU_EDGE__* environment overrides without "
        "network and prints a summary (exit 2 on a bad key, the message names it). Plain "
        "check-config does not contact the platform, the broker or any device; --online "
        "also asks the platform's API ([platform] url) about the configured devices.",
    )
    c.add_argument("config", type=Path, help="the agent's TOML file")
    c.add_argument(
        "--online",
        action="store_true",
        help="also ask the platform ([platform] url) whether every configured device is "
        "registered and at the agent's sites (a request signed with the agent's key)",
    )
    c.set_defaults(agent_handler=_check)

    q = cmds.add_parser(
        "requeue-quarantine",
        help="send the envelopes the broker refused (not authorised) again from the next start",
        description=(
            "Envelopes of a topic the agent may not write are kept in its buffer's quarantine. "
            "Once the agent's rights changed (`qilu agents update`), this clears the quarantine "
            "so the agent sends them again, unchanged, from its next start."
        ),
    )
    q.add_argument("--config", required=True, type=Path, help="the agent's TOML file")
    q.add_argument(
        "--sector",
        action="append",
        choices=[s.value for s in Sector],
        default=None,
        help="only this sector's quarantine (repeatable; default all)",
    )
    q.set_defaults(agent_handler=_requeue)

    v = cmds.add_parser(
        "province",
        help="run simulated agents, one per sector and city (the demo's data source)",
        description=(
            "Runs one edge agent per (sector, city) over the registry generated from --seed and "
            "--scale (load the same registry into the database with `qilu registry generate`). "
            "Each agent has its own durable buffer under --state-dir."
        ),
    )
    v.add_argument("--seed", type=int, default=1, help="registry and simulation seed (default 1)")
    v.add_argument("--scale", type=float, default=0.02, help="registry scale (default 0.02)")
    v.add_argument(
        "--sector",
        action="append",
        choices=[s.value for s in Sector],
        default=None,
        help="only these sectors (repeatable; default all)",
    )
    v.add_argument(
        "--city",
        action="append",
        default=None,
        help="only these city codes, e.g. 370200 (repeatable; default all 16)",
    )
    v.add_argument(
        "--silence",
        choices=["random", "none"],
        default="random",
        help="simulate devices that never report or go silent (default random)",
    )
    v.add_argument(
        "--iec104-city",
        action="append",
        default=None,
        help="substation agents of these city codes read their substations over IEC 104, "
        "through simulated stations (repeatable; default 370100, Jinan; 'none': no city)",
    )
    v.add_argument("--metrics-port", type=int, default=None, help="Prometheus port (default 9102)")
    v.add_argument(
        "--tick-s",
        type=_positive(float),
        default=None,
        help="each simulated feed hands its due readings over (one buffer commit) every this "
        "many seconds; the readings do not depend on it (default 2)",
    )
    v.add_argument(
        "--envelope-readings",
        type=_positive(int),
        default=None,
        help="readings per envelope at most, i.e. per signature and Kafka record (default "
        "2000; a real agent's delivery.batch_max_readings is 500)",
    )
    v.add_argument(
        "--envelope-delay-s",
        type=_positive(float),
        default=None,
        help="a live envelope that is not full is sent this many seconds after its first "
        "reading was buffered (default 2)",
    )
    v.add_argument(
        "--no-provision",
        action="store_true",
        help="do not register the simulated agents and their signing keys in the database "
        "(their envelopes are then unsigned: an authenticating ingest dead-letters them)",
    )
    v.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where the agents keep their buffers (default agent.province_dir, else "
        "<services state dir>/agents)",
    )
    v.set_defaults(handler=_province)


def _positive(kind: Callable[[str], N]) -> Callable[[str], N]:
    """An argparse type: a finite number above zero (argparse names the option on error)."""

    def parse(text: str) -> N:
        value = kind(text)
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"must be a number above 0, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse says "invalid float value" for a non-number
    return parse


def province_delivery(args: argparse.Namespace) -> dict[str, Any]:
    """The province's hand-over and envelope options that were given (the others keep
    edge_agent.province's defaults)."""
    given = {
        "tick_s": args.tick_s,
        "envelope_readings": args.envelope_readings,
        "envelope_delay_s": args.envelope_delay_s,
    }
    return {k: v for k, v in given.items() if v is not None}


def _run(args: argparse.Namespace) -> int:
    from edge_agent import config, runtime

    return runtime.run(config.load(args.config))


def _check(args: argparse.Namespace) -> int:
    from edge_agent import config, runtime

    cfg = config.load(args.config)
    collectors = runtime.build_collectors(cfg)
    lines = runtime.describe(cfg, collectors)
    if args.online:
        lines += runtime.check_online(cfg, collectors)
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _requeue(args: argparse.Namespace) -> int:
    from edge_agent import config, runtime

    cfg = config.load(args.config)
    sectors = [Sector(s) for s in args.sector] if args.sector else None
    sys.stdout.write("\n".join(runtime.requeue(cfg, sectors)) + "\n")
    return 0


def _province(args: argparse.Namespace, settings: Settings) -> int:
    from edge_agent import metrics
    from edge_agent.agent import SharedProducer, new_producer
    from edge_agent.province import build_agents, plan_agents, run_agents
    from qilu.registry import generate

    reg = generate(args.seed, args.scale)
    known = {s.city_code for s in reg.sites}
    for c in args.city or []:
        if c not in known:
            raise ConfigError("--city", f"{c!r} is not one of Shandong's 16 city codes")
    plan = plan_agents(reg, sectors=[Sector(s) for s in args.sector or []], cities=args.city)
    port = args.metrics_port if args.metrics_port is not None else settings.agent.metrics_port
    if port:
        key = "--metrics-port" if args.metrics_port is not None else "agent.metrics_port"
        metrics.serve(settings.agent.metrics_host, port, key=key)
    state = args.state_dir or settings.agent.province_dir or settings.services.state_dir / "agents"
    signers = None
    if args.no_provision:  # the named opt-out, as auth.unsigned for one agent
        logger.warning(
            "--no-provision: the simulated agents send unsigned envelopes; only an ingest that "
            "does not authenticate accepts them"
        )
    else:
        from stream.provisioning import provision_province

        signers = provision_province(settings, plan, actor="cli:province")
    producer = SharedProducer(
        partial(new_producer, settings.kafka.bootstrap, f"{settings.kafka.client_id}-agents")
    )
    agents = build_agents(
        reg,
        plan,
        producer,
        settings.kafka.topic_prefix,
        state_dir=state,
        seed=args.seed,
        silence=args.silence,
        signers=signers,
        iec104_cities=[c for c in args.iec104_city or ["370100"] if c != "none"],
        **province_delivery(args),
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_agents(agents, stop)

    try:
        asyncio.run(main())
    finally:
        producer.close(10.0)
    return 0
