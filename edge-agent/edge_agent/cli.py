"""``qilu agent``: run edge agents with simulated collectors."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Any

from prometheus_client import start_http_server

from edge_agent.agent import new_producer
from edge_agent.province import build_agents, plan_agents, run_agents
from qilu.contract import Sector
from qilu.errors import ConfigError
from qilu.registry import generate
from qilu.settings import Settings

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "agent",
        help="run simulated edge agents (one per sector and city) that send to Kafka",
        description=(
            "Runs one edge agent per (sector, city) over the registry generated from --seed and "
            "--scale (load the same registry into the database with `qilu registry generate`)."
        ),
    )
    p.add_argument("--seed", type=int, default=1, help="registry and simulation seed (default 1)")
    p.add_argument("--scale", type=float, default=0.02, help="registry scale (default 0.02)")
    p.add_argument(
        "--sector",
        action="append",
        choices=[s.value for s in Sector],
        default=None,
        help="only these sectors (repeatable; default all)",
    )
    p.add_argument(
        "--city",
        action="append",
        default=None,
        help="only these city codes, e.g. 370200 (repeatable; default all 16)",
    )
    p.add_argument(
        "--silence",
        choices=["random", "none"],
        default="random",
        help="simulate devices that never report or go silent (default random)",
    )
    p.add_argument("--metrics-port", type=int, default=None, help="Prometheus port (default 9102)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    reg = generate(args.seed, args.scale)
    known = {s.city_code for s in reg.sites}
    for c in args.city or []:
        if c not in known:
            raise ConfigError("--city", f"{c!r} is not one of Shandong's 16 city codes")
    plan = plan_agents(reg, sectors=[Sector(s) for s in args.sector or []], cities=args.city)
    port = args.metrics_port if args.metrics_port is not None else settings.agent.metrics_port
    if port:
        start_http_server(port, addr="127.0.0.1")
    producer = new_producer(settings.kafka, f"{settings.kafka.client_id}-agents")
    agents = build_agents(
        reg, plan, producer, settings.kafka, settings.agent, seed=args.seed, silence=args.silence
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
        producer.close(timeout=10)
    return 0
