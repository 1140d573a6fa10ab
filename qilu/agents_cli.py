"""``qilu agents``: provision, rotate, revoke, list and show edge agents.

    qilu agents provision AGENT_ID --sites S1,S2        or  --city 370200 --sector charging
    qilu agents rotate AGENT_ID [--grace 3600]           new key + Kafka password
    qilu agents revoke AGENT_ID                          refused from the next check on
    qilu agents list [--all]                             active agents (--all: revoked too)
    qilu agents show AGENT_ID                            sites, keys, audit trail

Provisioning creates the agent's identity, its Ed25519 signing key (only the public half is
stored) and its Kafka SCRAM-SHA-512 user with ACLs for the topics of its sectors, records the
change in the audit log and prints a ready-to-copy agent configuration with both secrets.
They are shown once: keep the output safe (``--out FILE`` writes it with mode 0600).
Design: docs/adr/0010-agent-authentication.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from qilu.errors import QiluError
from qilu.settings import Settings

Handler = Callable[[argparse.Namespace, Settings], int]


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "agents",
        help="edge agents: provision, rotate and revoke credentials; list and show",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmds = p.add_subparsers(dest="agents_command", metavar="SUBCOMMAND", required=True)

    v = cmds.add_parser(
        "provision",
        help="create an agent and print its configuration with its secrets (shown once)",
    )
    v.add_argument("agent_id", help="unique id, 1-128 of A-Z a-z 0-9 . _ - (never reused)")
    v.add_argument("--sites", type=_csv, default=[], help="comma-separated site ids")
    v.add_argument(
        "--city", action="append", default=[], help="every site of this city code (repeatable)"
    )
    v.add_argument(
        "--sector",
        action="append",
        default=[],
        choices=["charging", "substation", "ranch"],
        help="every site of this sector (repeatable; combined with --city: both must match)",
    )
    v.add_argument("--note", default="", help="free text, e.g. where the gateway is installed")
    v.add_argument("--out", type=Path, default=None, help="write the configuration here (0600)")
    v.set_defaults(handler=_provision)

    r = cmds.add_parser("rotate", help="new signing key and Kafka password for an agent")
    r.add_argument("agent_id", help="the agent to rotate")
    r.add_argument(
        "--grace",
        type=float,
        default=3600.0,
        help="seconds the older keys stay accepted (default 3600; 0 after a compromise)",
    )
    r.add_argument("--out", type=Path, default=None, help="write the configuration here (0600)")
    r.set_defaults(handler=_rotate)

    k = cmds.add_parser("revoke", help="revoke an agent: its records and connections are refused")
    k.add_argument("agent_id", help="the agent to revoke")
    k.set_defaults(handler=_revoke)

    ls = cmds.add_parser("list", help="agents with their site and key counts")
    ls.add_argument("--all", action="store_true", help="include revoked agents")
    ls.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    ls.set_defaults(handler=_list)

    s = cmds.add_parser("show", help="one agent: sites, keys and its audit trail")
    s.add_argument("agent_id", help="the agent to show")
    s.set_defaults(handler=_show)


def _needs_migration(handler: Handler) -> Handler:
    """A database without the agent tables: say what to do instead of a traceback."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace, settings: Settings) -> int:
        import psycopg

        try:
            return handler(args, settings)
        except psycopg.errors.UndefinedTable as exc:
            raise QiluError(
                f"{exc.diag.message_primary}: run `qilu migrate` first (migration 045)"
            ) from exc

    return run


def _emit(args: argparse.Namespace, text: str) -> None:
    if args.out is None:
        sys.stdout.write(text)
        return
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    sys.stderr.write(f"configuration written to {args.out} (mode 0600)\n")


@_needs_migration
def _provision(args: argparse.Namespace, settings: Settings) -> int:
    from qilu import agents
    from storage.audit import cli_actor

    row, creds = agents.provision(
        settings,
        args.agent_id,
        sites=args.sites,
        cities=args.city,
        sectors=args.sector,
        actor=cli_actor(),
        note=args.note,
    )
    sys.stderr.write(
        f"agent {row.agent_id} provisioned for {len(row.sites)} sites; the secrets below are "
        "shown once\n"
    )
    _emit(args, agents.agent_toml(settings, creds))
    return 0


@_needs_migration
def _rotate(args: argparse.Namespace, settings: Settings) -> int:
    from qilu import agents
    from storage.audit import cli_actor

    _, creds = agents.rotate(
        settings, args.agent_id, actor=cli_actor(), grace=timedelta(seconds=args.grace)
    )
    sys.stderr.write(
        f"agent {args.agent_id}: key {creds.key_no}; older keys accepted for {args.grace:g} s\n"
    )
    _emit(args, agents.agent_toml(settings, creds))
    return 0


@_needs_migration
def _revoke(args: argparse.Namespace, settings: Settings) -> int:
    from qilu import agents
    from storage.audit import cli_actor

    row = agents.revoke(settings, args.agent_id, actor=cli_actor())
    sys.stdout.write(f"agent {row.agent_id} revoked at {row.revoked_at.isoformat()}\n")
    return 0


@_needs_migration
def _list(args: argparse.Namespace, settings: Settings) -> int:
    from storage import agents
    from storage.db import connect

    with connect(settings.db) as conn:
        rows = agents.list_agents(conn, include_revoked=args.all)
    if args.json:
        for r in rows:
            sys.stdout.write(json.dumps(r.as_json(), ensure_ascii=False) + "\n")
        return 0
    sys.stdout.write(f"{'agent':<40} {'sites':>6} {'key':>4}  state\n")
    for r in rows:
        state = f"revoked {r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "active"
        key = str(r.active_key or "-")
        sys.stdout.write(f"{r.agent_id:<40} {len(r.sites):>6} {key:>4}  {state}\n")
    return 0


@_needs_migration
def _show(args: argparse.Namespace, settings: Settings) -> int:
    from storage import agents, audit
    from storage.db import connect

    with connect(settings.db) as conn:
        row = agents.get(conn, args.agent_id)
        if row is None:
            raise agents.AgentError(f"no agent {args.agent_id!r}")
        trail = audit.query(conn, entity="agent", entity_id=args.agent_id)
    out = row.as_json()
    out["audit"] = [{"at": e.at.isoformat(), "actor": e.actor, "action": e.action} for e in trail]
    sys.stdout.write(json.dumps(out, ensure_ascii=False, indent=2) + "\n")
    return 0
