"""``qilu deadletters``: what the ingest refused, for an operator: ``summary`` from the table
the ingest writes, ``tail`` and ``show`` from the dead-letter topic, ``prune``. The commands
and why two sources: :data:`DESCRIPTION` (the ``--help`` text), docs/adr/0012-dead-letters.md.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from qilu.errors import ConfigError
from qilu.settings import Settings
from storage import deadletters as store
from storage.db import connect
from stream.deadletter import describe
from stream.deadletter_read import fetch, tail
from stream.topics import deadletter_topic

# `qilu deadletters --help`, plain text
DESCRIPTION = """\
What the ingest refused, for an operator:

  qilu deadletters summary [--since 24h] [--by reason,agent,device] [--reason R] [--agent A]
  qilu deadletters tail [-n 20] [--reason R] [--agent A]     the newest dead-letter records
  qilu deadletters show PARTITION/OFFSET                     one record, decoded
  qilu deadletters prune --older-than 90d                    drop old summary minutes

summary reads the table the ingest writes in each batch's transaction (counted exactly once;
the storage maintenance deletes minutes older than storage.deadletter_retention_days, 30 by
default). tail and show read the dead-letter topic itself: the original bytes and the
reasons, within the topic's retention. Why both: docs/adr/0012-dead-letters.md.
"""

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``24h``, ``7d`` -> timedelta (argparse type)."""
    m = _DURATION.match(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 15m, 24h or 7d")
    return timedelta(seconds=float(m[1]) * _UNIT_S[m[2]])


def dimensions(text: str) -> list[store.Dimension]:
    """``reason,agent`` -> dimensions (argparse type)."""
    try:
        return [store.Dimension(x.strip()) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r}: group by any of {', '.join(d.value for d in store.Dimension)}"
        ) from exc


def location(text: str) -> tuple[int, int]:
    """``PARTITION/OFFSET`` -> (partition, offset) (argparse type)."""
    part, _, off = text.partition("/")
    if not (part.isdigit() and off.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not PARTITION/OFFSET, e.g. 0/42")
    return int(part), int(off)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "deadletters",
        help="what the ingest refused: summary by reason, agent, device; tail; show one",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmds = p.add_subparsers(dest="deadletters_command", metavar="SUBCOMMAND", required=True)

    s = cmds.add_parser(
        "summary",
        help="refusals in a time window, grouped (from the summary table)",
        description="Refused records and readings in a time window, grouped by reason, agent "
        "and/or device, most readings first. Whole-envelope refusals (undecodable bytes, "
        "unsigned or unknown agent...) have no device; readings refused one by one have the "
        "reading's reason (unknown_device, value_out_of_range...).",
    )
    s.add_argument(
        "--since", type=duration, default=timedelta(hours=24), help="window length (default 24h)"
    )
    s.add_argument(
        "--until",
        type=datetime.fromisoformat,
        default=None,
        help="window end, ISO 8601 with an offset (default now)",
    )
    s.add_argument(
        "--by",
        type=dimensions,
        default=[store.Dimension.REASON, store.Dimension.AGENT],
        help="comma-separated dimensions among reason, agent, device (default reason,agent)",
    )
    s.add_argument("--reason", default=None, help="only this reason")
    s.add_argument("--agent", default=None, help="only this agent id")
    s.add_argument("--device", default=None, help="only this device id")
    s.add_argument("--limit", type=int, default=50, help="at most this many rows (default 50)")
    s.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    s.set_defaults(handler=_summary)

    t = cmds.add_parser(
        "tail",
        help="the newest dead-letter records (from the dead-letter topic)",
        description="The newest records of the dead-letter topic, oldest first, with their "
        "PARTITION/OFFSET for `qilu deadletters show`.",
    )
    t.add_argument("-n", type=int, default=20, help="how many records (default 20)")
    t.add_argument("--reason", default=None, help="only this dead-letter reason")
    t.add_argument("--agent", default=None, help="only records of this agent")
    t.add_argument(
        "--scan",
        type=int,
        default=10_000,
        help="records read back per partition to find matches (default 10000)",
    )
    t.add_argument("--json", action="store_true", help="JSON lines instead of text")
    t.set_defaults(handler=_tail)

    w = cmds.add_parser(
        "show",
        help="one dead-letter record decoded (JSON)",
        description="One record of the dead-letter topic: its reason and detail, where the "
        "original came from, and the envelope decoded with each refused reading marked.",
    )
    w.add_argument("where", type=location, help="PARTITION/OFFSET in the dead-letter topic")
    w.set_defaults(handler=_show)

    r = cmds.add_parser(
        "prune",
        help="delete summary minutes older than a duration",
        description="Deletes the summary's minutes older than --older-than now (the storage "
        "maintenance does the same by itself for minutes older than "
        "storage.deadletter_retention_days). The dead-letter topic keeps its records by its "
        "own retention; counting stays exact after a prune.",
    )
    r.add_argument(
        "--older-than",
        type=duration,
        required=True,
        help="delete minutes older than this, e.g. 90d",
    )
    r.set_defaults(handler=_prune)


# -- handlers -----------------------------------------------------------------------------------
def _summary(args: argparse.Namespace, settings: Settings) -> int:
    end: datetime = args.until or datetime.now(UTC)
    if end.tzinfo is None:
        raise ConfigError("--until", "needs a UTC offset, e.g. 2026-12-06T08:00:00+00:00")
    with connect(settings.db) as conn:
        rows = store.summary(
            conn,
            start=end - args.since,
            end=end,
            by=args.by,
            reason=args.reason,
            agent_id=args.agent,
            device_id=args.device,
            limit=args.limit,
        )
    dims = [d for d in store.Dimension if d in args.by]
    if args.json:
        for r in rows:
            _line(
                {
                    **{d.value: _dim(r, d) for d in dims},
                    "records": r.records,
                    "readings": r.readings,
                    "first": r.first.isoformat(),
                    "last": r.last.isoformat(),
                    "example_source": r.example_source,
                    "example_detail": r.example_detail,
                }
            )
        return 0
    if not rows:
        _out(f"no dead letters between {end - args.since:%Y-%m-%d %H:%M} and {end:%H:%M} UTC")
        return 0
    table = [
        [*(d.value for d in dims), "records", "readings", "last (UTC)", "example"],
        *(
            [
                *(_dim(r, d) or "-" for d in dims),
                str(r.records),
                str(r.readings),
                f"{r.last:%m-%d %H:%M}",
                f"{r.example_detail[:60]} @ {r.example_source}",
            ]
            for r in rows
        ),
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        _out("  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]]))
    return 0


def _dim(r: store.SummaryRow, d: store.Dimension) -> str | None:
    return {
        store.Dimension.REASON: r.reason,
        store.Dimension.AGENT: r.agent_id,
        store.Dimension.DEVICE: r.device_id,
    }[d]


def _tail(args: argparse.Namespace, settings: Settings) -> int:
    letters = tail(settings.kafka, args.n, reason=args.reason, agent=args.agent, scan=args.scan)
    for x in letters:
        when = datetime.fromtimestamp(x.timestamp_ms / 1000, UTC)
        if args.json:
            _line(
                {
                    "dead_letter": f"{x.partition}/{x.offset}",
                    "refused_at": when.isoformat(),
                    "reason": x.reason,
                    "agent_id": x.agent_id,
                    "detail": x.headers.get("qilu.detail", ""),
                    "source": x.headers.get("qilu.source", ""),
                }
            )
        else:
            _out(
                f"{when:%Y-%m-%d %H:%M:%S}  {x.partition}/{x.offset}  {x.reason}"
                f"  agent={x.agent_id or '-'}  {x.headers.get('qilu.detail', '')}"
                f"  (from {x.headers.get('qilu.source', '?')})"
            )
    return 0


def _show(args: argparse.Namespace, settings: Settings) -> int:
    partition, offset = args.where
    letter = fetch(settings.kafka, partition, offset)
    if letter is None:
        sys.stderr.write(
            f"qilu: no record {partition}/{offset} in {deadletter_topic(settings.kafka)}"
            " (beyond its end, or past its retention)\n"
        )
        return 1
    _out(json.dumps(describe(letter), ensure_ascii=False, indent=2))
    return 0


def _prune(args: argparse.Namespace, settings: Settings) -> int:
    before = datetime.now(UTC) - args.older_than
    with connect(settings.db) as conn:
        n = store.prune(conn, before)
        conn.commit()
    _out(f"deleted {n} summary row(s) before {before:%Y-%m-%d %H:%M} UTC")
    return 0


def _line(obj: dict[str, object]) -> None:
    _out(json.dumps(obj, ensure_ascii=False))


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
