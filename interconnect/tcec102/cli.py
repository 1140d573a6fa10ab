"""``qilu operators``: charging operators connected over T/CEC 102.

The subcommands and what they do are in :data:`DESCRIPTION` (the command's help, plain text).
Design: docs/adr/0015-tcec102.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

from qilu.cliutil import audit_json, csv_list, emit_secret, needs_migration
from qilu.errors import QiluError
from qilu.settings import Settings

DESCRIPTION = """\
Charging operators connected over T/CEC 102.

    qilu operators add OPERATOR_ID --sites S1,S2 | --city 370100   keys shown once
    qilu operators rotate OPERATOR_ID [--outbound-keys FILE]       new keys; old tokens retired
    qilu operators revoke OPERATOR_ID                              refused from the next refresh
    qilu operators list [--all]                                    operators and link health
    qilu operators show OPERATOR_ID                                one operator, its audit trail
    qilu operators link OPERATOR_ID --file CONNECTORS.csv          connectors -> registry piles
    qilu operators pull [--once] [--operator ID]                   scheduled pulls (a service)
    qilu operators simulate [--per-city 2] [--stations 20]         simulated operators (demo)

add creates the operator, its platform-side agent (the identity its readings carry) and the
key set the operator presents to us (OperatorSecret, DataSecret, DataSecretIV, SigSecret),
printed once as JSON (--out FILE writes it with mode 0600). The keys we present when we call
the operator are the ones it gave us: --outbound-keys FILE, a JSON object with the same four
names. Secrets are stored sealed (AES-GCM under QILU_TCEC102__SECRET_KEY), never in plain
text; every change is in the audit log. link also gives the operator's agent the sites of
the linked piles. pull without --once runs until stopped, pulling each operator every
pull_interval_s: run exactly one. Design: docs/adr/0015-tcec102.md.
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "operators",
        help="charging operators over T/CEC 102: add, rotate, revoke, list, show, link",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmds = p.add_subparsers(dest="operators_command", metavar="SUBCOMMAND", required=True)

    a = cmds.add_parser("add", help="add an operator and print its keys (shown once)")
    a.add_argument("operator_id", help="its OperatorID: 9 letters or digits (organisation code)")
    a.add_argument("--name", default="", help="the operator's name, e.g. 国网山东电动汽车服务")
    a.add_argument(
        "--endpoint-url",
        default="",
        help="base URL of the operator's platform, where we call query_station_status "
        "(default: none, we only receive its pushes)",
    )
    a.add_argument(
        "--sites",
        type=csv_list,
        default=[],
        help="comma-separated charging site ids it reports for",
    )
    a.add_argument(
        "--city",
        action="append",
        default=[],
        help="every charging site of this city code (repeatable)",
    )
    a.add_argument(
        "--outbound-keys",
        type=Path,
        default=None,
        help="JSON file with the keys the operator gave us for calling it (OperatorSecret, "
        "DataSecret, DataSecretIV, SigSecret)",
    )
    a.add_argument(
        "--pull-interval",
        type=int,
        default=300,
        help="seconds between pulls of its station status (default 300)",
    )
    a.add_argument("--out", type=Path, default=None, help="write the keys here (mode 0600)")
    a.set_defaults(handler=_add)

    r = cmds.add_parser("rotate", help="new inbound keys; tokens issued before are refused")
    r.add_argument("operator_id", help="the operator to rotate")
    r.add_argument(
        "--outbound-keys",
        type=Path,
        default=None,
        help="JSON file with new keys for calling the operator (default: keep them)",
    )
    r.add_argument("--out", type=Path, default=None, help="write the keys here (mode 0600)")
    r.set_defaults(handler=_rotate)

    k = cmds.add_parser("revoke", help="revoke an operator and its agent identity")
    k.add_argument("operator_id", help="the operator to revoke")
    k.set_defaults(handler=_revoke)

    ls = cmds.add_parser("list", help="operators with their link health")
    ls.add_argument("--all", action="store_true", help="include revoked operators")
    ls.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    ls.set_defaults(handler=_list)

    s = cmds.add_parser("show", help="one operator: link health and audit trail (no secrets)")
    s.add_argument("operator_id", help="the operator to show")
    s.set_defaults(handler=_show)

    n = cmds.add_parser(
        "link",
        help="record which registry pile each of an operator's connectors belongs to",
        description="Links each connector to a registry pile and, in the same transaction, "
        "gives the operator's agent the sites of those piles (audited as agent.sites), so "
        "its pushes for a pile registered otherwise (an inventory, an OCPP agent) are "
        "stored, not refused as foreign_site. Later pulls keep such links.",
    )
    n.add_argument("operator_id", help="the operator")
    n.add_argument(
        "--file",
        type=Path,
        required=True,
        help="CSV with a header: connector_id, equipment_id, station_id, device_id (the "
        "device must exist in the registry; default device id tcec102.<operator>.<equipment>)",
    )
    n.set_defaults(handler=_link)

    pl = cmds.add_parser(
        "pull",
        help="pull stations (into the registry) and statuses (into Kafka) from the operators",
        description="Every operator with an endpoint URL and outbound keys, every "
        "pull_interval_s: query_stations_info (full, then incremental) and "
        "query_station_status, with a circuit breaker per operator (docs/adr/0015).",
    )
    pl.add_argument("--once", action="store_true", help="one pull of every operator, then exit")
    pl.add_argument("--operator", default=None, help="only this OperatorID")
    pl.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for an answer (default 10)"
    )
    pl.add_argument(
        "--page-size", type=int, default=500, help="stations per page asked (default 500)"
    )
    pl.set_defaults(handler=_pull)

    sm = cmds.add_parser(
        "simulate",
        help="simulated operator platforms per city, pushing to the API and pulled from",
        description="Starts --per-city simulated operator platforms in every city (each an "
        "HTTP server of --stations generated stations), adds them as operators (or points "
        "existing ones at the new servers with new keys), pulls them every 60 s and pushes "
        "random status changes to the API's T/CEC 102 endpoint (QILU_API__HOST/PORT), all "
        "over the real protocol. Runs until interrupted.",
    )
    sm.add_argument("--per-city", type=int, default=2, help="operators per city (default 2)")
    sm.add_argument("--stations", type=int, default=20, help="stations per operator (default 20)")
    sm.add_argument(
        "--pushes-per-s", type=float, default=5.0, help="status pushes per second in all"
    )
    sm.add_argument("--seed", type=int, default=1, help="random seed of the stations")
    sm.add_argument(
        "--api-url",
        default=None,
        help="base URL of the endpoint (default http://QILU_API__HOST:PORT + path prefix)",
    )
    sm.set_defaults(handler=_simulate)


_needs_migration = needs_migration("migration 056")


def _outbound(path: Path | None) -> Any:
    if path is None:
        return None
    from interconnect.tcec102.secrets import keyset

    try:
        obj = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise QiluError(f"--outbound-keys {path}: {exc}") from exc
    if not isinstance(obj, dict):
        raise QiluError(f"--outbound-keys {path}: not a JSON object")
    return keyset(obj)


def _emit(args: argparse.Namespace, shown: Any) -> None:
    text = json.dumps(shown.as_json(), ensure_ascii=False, indent=2) + "\n"
    emit_secret(args.out, text, "keys")


@_needs_migration
def _add(args: argparse.Namespace, settings: Settings) -> int:
    from interconnect.tcec102 import operators
    from storage.audit import cli_actor

    shown = operators.add(
        settings,
        args.operator_id,
        name=args.name,
        endpoint_url=args.endpoint_url,
        site_ids=args.sites,
        cities=args.city,
        outbound=_outbound(args.outbound_keys),
        actor=cli_actor(),
        pull_interval_s=args.pull_interval,
    )
    sys.stderr.write(
        f"operator {shown.row.operator_id} added (agent {shown.row.agent_id}); "
        "the keys below are shown once\n"
    )
    _emit(args, shown)
    return 0


@_needs_migration
def _rotate(args: argparse.Namespace, settings: Settings) -> int:
    from interconnect.tcec102 import operators
    from storage.audit import cli_actor

    shown = operators.rotate(
        settings, args.operator_id, outbound=_outbound(args.outbound_keys), actor=cli_actor()
    )
    sys.stderr.write(
        f"operator {args.operator_id}: key {shown.row.key_no}; tokens issued before are "
        "refused from the endpoint's next refresh\n"
    )
    _emit(args, shown)
    return 0


@_needs_migration
def _revoke(args: argparse.Namespace, settings: Settings) -> int:
    from interconnect.tcec102 import operators
    from storage.audit import cli_actor

    row = operators.revoke(settings, args.operator_id, actor=cli_actor())
    when = row.revoked_at.isoformat() if row.revoked_at else "now"
    sys.stdout.write(f"operator {row.operator_id} revoked at {when}\n")
    return 0


@_needs_migration
def _list(args: argparse.Namespace, settings: Settings) -> int:
    from storage import operators
    from storage.db import connect

    with connect(settings.db) as conn:
        rows = operators.list_operators(conn, include_revoked=args.all)
        links = {r.operator_id: operators.link(conn, r.operator_id) for r in rows}
    if args.json:
        for r in rows:
            lk = links[r.operator_id]
            out = {**r.as_json(), "link": lk.as_json() if lk else None}
            sys.stdout.write(json.dumps(out, ensure_ascii=False) + "\n")
        return 0
    sys.stdout.write(f"{'operator':<10} {'key':>3} {'last push':<20} {'failures':>8}  state\n")
    for r in rows:
        lk = links[r.operator_id]
        push = f"{lk.last_push:%Y-%m-%d %H:%M:%S}" if lk and lk.last_push else "-"
        state = f"revoked {r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "active"
        fails = lk.failures if lk else 0
        sys.stdout.write(f"{r.operator_id:<10} {r.key_no:>3} {push:<20} {fails:>8}  {state}\n")
    return 0


@_needs_migration
def _show(args: argparse.Namespace, settings: Settings) -> int:
    from storage import audit, operators
    from storage.db import connect

    with connect(settings.db) as conn:
        row = operators.get(conn, args.operator_id)
        if row is None:
            raise operators.OperatorError(f"no operator {args.operator_id!r}")
        lk = operators.link(conn, args.operator_id)
        trail = audit.query(conn, entity="operator", entity_id=args.operator_id)
        n = conn.execute(
            "SELECT count(*) FROM operator_connectors WHERE operator_id = %s",
            (args.operator_id,),
        ).fetchone()
    out = row.as_json()
    out["connectors"] = int(n[0]) if n else 0
    out["link"] = lk.as_json() if lk else None
    out["audit"] = audit_json(trail)
    sys.stdout.write(json.dumps(out, ensure_ascii=False, indent=2) + "\n")
    return 0


@_needs_migration
def _link(args: argparse.Namespace, settings: Settings) -> int:
    from interconnect.tcec102.mapping import device_id
    from storage import operators
    from storage.audit import cli_actor
    from storage.db import connect

    try:
        with args.file.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise QiluError(f"--file {args.file}: {exc}") from exc
    links = []
    for i, r in enumerate(rows, start=2):
        cid, eid = (r.get("connector_id") or "").strip(), (r.get("equipment_id") or "").strip()
        if not cid or not eid:
            raise QiluError(f"{args.file} line {i}: connector_id and equipment_id are required")
        dev = (r.get("device_id") or "").strip() or device_id(args.operator_id, eid)
        links.append(operators.ConnectorLink(cid, eid, (r.get("station_id") or "").strip(), dev))
    with connect(settings.db) as conn, conn.transaction():
        n = operators.link_by_hand(conn, args.operator_id, links, actor=cli_actor())
    sys.stdout.write(
        f"operator {args.operator_id}: {n} connectors linked, their piles' sites given to its"
        " agent\n"
    )
    return 0


@_needs_migration
def _pull(args: argparse.Namespace, settings: Settings) -> int:
    import signal
    import threading

    from interconnect.tcec102.pull import KafkaOut, Puller

    out = KafkaOut(settings)
    puller = Puller(
        settings, out.produce, out.dead_letter, timeout_s=args.timeout, page_size=args.page_size
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    failed = 0
    try:
        while True:
            for r in puller.cycle(args.operator, force=args.once):
                failed += r.error is not None
                sys.stdout.write(
                    f"{r.operator_id}: {'full' if r.full else 'incremental'} "
                    f"{r.stations} stations (+{r.sites_added} sites, +{r.devices_added} "
                    f"piles), {r.statuses} statuses, {len(r.refused)} refused"
                    + (f", failed: {r.error}" if r.error else "")
                    + "\n"
                )
            if args.once or stop.wait(1.0):
                break
    finally:
        out.close()
    return 1 if args.once and failed else 0


@_needs_migration
def _simulate(args: argparse.Namespace, settings: Settings) -> int:
    import signal
    import threading
    import time

    from interconnect.tcec102.pull import KafkaOut, Puller
    from interconnect.tcec102.simulated import Province
    from qilu.catalog import load_catalog

    url = args.api_url or (
        f"http://{settings.api.host}:{settings.api.port}{settings.tcec102.path_prefix}"
    )
    province = Province(
        settings, list(load_catalog().city_codes), args.per_city, args.stations, url, args.seed
    )
    province.connect()
    sys.stderr.write(f"{len(province.operators)} simulated operators pushing to {url}\n")
    out = KafkaOut(settings)
    puller = Puller(settings, out.produce, out.dead_letter)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # push only once the API answers and its endpoint has reloaded the operators added above
    # (every tcec102.refresh_s): earlier pushes would be refused as unknown operators
    ready_url = url.removesuffix(settings.tcec102.path_prefix) + "/readyz"
    push_from: float | None = None
    try:
        while not stop.is_set():
            started = time.monotonic()
            puller.cycle()
            if push_from is None and _answers(ready_url):
                push_from = started + 2 * settings.tcec102.refresh_s
            if push_from is not None and started >= push_from:
                province.push_some(max(1, round(args.pushes_per_s)))
            stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))
    finally:
        province.stop()
        out.close()
    return 0


def _answers(url: str) -> bool:
    import urllib.request

    if not url.startswith(("http://", "https://")):
        return False
    try:
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - scheme checked
            return int(r.status) == 200
    except OSError:
        return False
