"""``qilu agents``: provision, rotate, revoke, list and show edge agents.

    qilu agents provision AGENT_ID --sites S1,S2        or  --city 370200 --sector charging
    qilu agents update AGENT_ID --add-site S3 --remove-sector ranch   its sites and sectors
    qilu agents rotate AGENT_ID [--grace 3600]           new key + Kafka password
    qilu agents revoke AGENT_ID                          refused from the next check on
    qilu agents list [--all]                             active agents (--all: revoked too)
    qilu agents show AGENT_ID                            sites, keys, audit trail
    qilu agents targets [--out FILE]                     Prometheus file_sd of the agents

Provisioning creates the agent's identity, its Ed25519 signing key (only the public half is
stored) and its Kafka SCRAM-SHA-512 user with ACLs for the topics of its sectors, records the
change in the audit log and prints a ready-to-copy agent configuration with both secrets.
They are shown once: keep the output safe (``--out FILE`` writes it with mode 0600). The
configuration also holds the agent's metrics endpoint: a port that no other active agent on
the same host holds (``--metrics-host``/``--metrics-port`` to choose).

An agent's rights are its sites; the sectors of its sites are the topics its Kafka user may
write. ``update`` adds and removes sites (one by one or a sector at a time, ``--city``
narrowing the sectors), audited, with the broker's ACLs and the ingest's site check following
within seconds. Design: docs/adr/0010-agent-authentication.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from qilu.cliutil import audit_json, csv_list, emit_secret, needs_migration
from qilu.errors import QiluError
from qilu.settings import Settings


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
    v.add_argument("--sites", type=csv_list, default=[], help="comma-separated site ids")
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
    v.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="the agent's machine as Prometheus reaches it (behind NAT: the router's address): "
        "the scrape target; the configuration written binds it when it is a loopback address, "
        "otherwise every interface on the same port (default 127.0.0.1: an agent on the "
        "platform's machine)",
    )
    v.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="its metrics port (default: the lowest above QILU_AGENT__METRICS_PORT that no "
        "other active agent on that host holds)",
    )
    v.add_argument("--out", type=Path, default=None, help="write the configuration here (0600)")
    v.set_defaults(handler=_provision)

    u = cmds.add_parser(
        "update",
        help="add or remove an agent's sites or sectors (broker ACLs and ingest follow)",
        description="Changes which sites, and so which sectors' topics, an agent may report "
        "for. The change is audited (agent.sites, with who and when, in the same transaction "
        "as the sites); the broker's WRITE ACLs are set to the sectors of the resulting "
        "sites before the command returns (when kafka.manage_agent_credentials is on); the "
        "ingest accepts or refuses the sites' readings from its next registry check, within "
        "ingest.agents_refresh_s (QILU_INGEST__AGENTS_REFRESH_S, 2 s by default). Running the "
        "same change again is harmless and repairs the ACLs after a failed commit. Envelopes "
        "the broker refused before the change wait in the agent's quarantine: re-send them "
        "with `python -m edge_agent requeue-quarantine --config FILE` on the agent.",
    )
    u.add_argument("agent_id", help="the agent to change")
    u.add_argument(
        "--add-site",
        type=csv_list,
        action="extend",
        default=[],
        help="comma-separated site ids it may report for from now on (repeatable)",
    )
    u.add_argument(
        "--remove-site",
        type=csv_list,
        action="extend",
        default=[],
        help="comma-separated site ids it may no longer report for (repeatable)",
    )
    u.add_argument(
        "--add-sector",
        action="append",
        default=[],
        choices=["charging", "substation", "ranch"],
        help="every site of this sector (of the --city codes when given; repeatable)",
    )
    u.add_argument(
        "--remove-sector",
        action="append",
        default=[],
        choices=["charging", "substation", "ranch"],
        help="every site of the agent in this sector (of the --city codes when given; repeatable)",
    )
    u.add_argument(
        "--city",
        action="append",
        default=[],
        help="narrows --add-sector/--remove-sector to this city code (repeatable)",
    )
    u.set_defaults(handler=_update)

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

    t = cmds.add_parser(
        "targets",
        help="the agents' metrics endpoints as Prometheus file_sd JSON",
        description="One target group per active provisioned agent, plus the simulated "
        "province's endpoint (QILU_AGENT__METRICS_HOST/PORT) while simulated agents are "
        "active. Prometheus re-reads the file when it changes.",
    )
    t.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write it here, atomically (default: standard output); the local Prometheus "
        "reads <state dir>/prometheus/targets/agents.json",
    )
    t.set_defaults(handler=_targets)


# a database without the agent tables (or columns): say what to do, not a traceback
_needs_migration = needs_migration("migrations 045, 053")


def _emit(args: argparse.Namespace, text: str) -> None:
    emit_secret(args.out, text, "configuration")


@_needs_migration
def _provision(args: argparse.Namespace, settings: Settings) -> int:
    from storage.audit import cli_actor
    from stream import provisioning

    if args.metrics_port is not None and not 1 <= args.metrics_port <= 65535:
        raise QiluError(f"--metrics-port: {args.metrics_port} is not a port (1-65535)")
    row, creds = provisioning.provision(
        settings,
        args.agent_id,
        sites=args.sites,
        cities=args.city,
        sectors=args.sector,
        actor=cli_actor(),
        note=args.note,
        metrics_host=args.metrics_host,
        metrics_port=args.metrics_port,
    )
    sys.stderr.write(
        f"agent {row.agent_id} provisioned for {len(row.sites)} sites, metrics at "
        f"{row.metrics_host}:{row.metrics_port}; the secrets below are shown once\n"
    )
    _emit(args, provisioning.agent_toml(settings, creds))
    return 0


@_needs_migration
def _update(args: argparse.Namespace, settings: Settings) -> int:
    from storage.audit import cli_actor
    from stream import provisioning

    before, after = provisioning.update_sites(
        settings,
        args.agent_id,
        add_sites=args.add_site,
        remove_sites=args.remove_site,
        add_sectors=args.add_sector,
        remove_sectors=args.remove_sector,
        cities=args.city,
        actor=cli_actor(),
    )
    added = sorted(set(after.sites) - set(before.sites))
    removed = sorted(set(before.sites) - set(after.sites))
    sys.stdout.write(
        f"agent {after.agent_id}: {len(after.sites)} sites (+{len(added)} -{len(removed)})\n"
    )
    for label, ids in (("added", added), ("removed", removed)):
        if ids:
            more = f" (+{len(ids) - 20} more)" if len(ids) > 20 else ""
            sys.stdout.write(f"  {label}: {', '.join(ids[:20])}{more}\n")
    if added or removed:
        sys.stdout.write("  the agent's collectors list the sites it reads: update them too\n")
    return 0


@_needs_migration
def _targets(args: argparse.Namespace, settings: Settings) -> int:
    from stream import provisioning

    if args.out is None:
        sys.stdout.write(json.dumps(provisioning.targets(settings), indent=2) + "\n")
        return 0
    n = provisioning.write_targets(settings, args.out)
    sys.stderr.write(f"{n} target groups written to {args.out}\n")
    return 0


@_needs_migration
def _rotate(args: argparse.Namespace, settings: Settings) -> int:
    from storage.audit import cli_actor
    from stream import provisioning

    _, creds = provisioning.rotate(
        settings, args.agent_id, actor=cli_actor(), grace=timedelta(seconds=args.grace)
    )
    sys.stderr.write(
        f"agent {args.agent_id}: key {creds.key_no}; older keys accepted for {args.grace:g} s\n"
    )
    _emit(args, provisioning.agent_toml(settings, creds))
    return 0


@_needs_migration
def _revoke(args: argparse.Namespace, settings: Settings) -> int:
    from storage.audit import cli_actor
    from stream import provisioning

    row = provisioning.revoke(settings, args.agent_id, actor=cli_actor())
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
    sys.stdout.write(f"{'agent':<40} {'sites':>6} {'key':>4}  {'metrics':<22} state\n")
    for r in rows:
        state = f"revoked {r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "active"
        key = str(r.active_key or "-")
        metrics = f"{r.metrics_host}:{r.metrics_port}" if r.metrics_port else "-"
        sys.stdout.write(f"{r.agent_id:<40} {len(r.sites):>6} {key:>4}  {metrics:<22} {state}\n")
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
    out["audit"] = audit_json(trail)
    sys.stdout.write(json.dumps(out, ensure_ascii=False, indent=2) + "\n")
    return 0
