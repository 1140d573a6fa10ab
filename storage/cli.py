"""Commands of the storage stage: ``qilu migrate``, ``qilu registry``, ``qilu coverage``."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from qilu.registry import generate
from qilu.settings import Settings
from storage import migrate
from storage.db import connect
from storage.registry_store import load_registry

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
    p = sub.add_parser("migrate", help="apply database migrations (safe to run again)")
    p.set_defaults(handler=_migrate)

    p = sub.add_parser("registry", help="load the asset registry into the database")
    rsub = p.add_subparsers(dest="registry_command", required=True, metavar="ACTION")
    g = rsub.add_parser(
        "generate",
        help="generate a simulated province registry and load it",
        description="Deterministic for a seed: the same --seed and --scale give the same assets.",
    )
    g.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    g.add_argument(
        "--scale", type=float, default=0.02, help="1.0 = province size (~240k piles); default 0.02"
    )
    g.set_defaults(handler=_registry_generate)


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    del args
    with connect(settings.db) as conn:
        applied = migrate.apply(conn)
    logger.info("migrations: %s", f"applied {applied}" if applied else "up to date")
    return 0


def _registry_generate(args: argparse.Namespace, settings: Settings) -> int:
    reg = generate(args.seed, args.scale)
    with connect(settings.db) as conn:
        load_registry(conn, reg)
    return 0
