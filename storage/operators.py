"""Charging operators connected over T/CEC 102: rows, connectors, link health (migration 056).

Every change runs in the caller's transaction together with its audit row
(:func:`storage.audit.record`, entity ``operator``). Secrets arrive here already sealed
(:mod:`interconnect.tcec102.secrets`): this module never sees them in plain text, and the
audit rows carry the key number, never a key. An operator reports through its own agent
identity (``tcec102-<OperatorID>``), provisioned and revoked with it through
:mod:`storage.agents`. Design: docs/adr/0015-tcec102.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from qilu.errors import QiluError
from storage import agents, audit
from storage.coverage import OPERATOR_LINK_HEALTHY

Conn = psycopg.Connection[TupleRow]
AGENT_PREFIX = "tcec102-"


class OperatorError(QiluError):
    """An operator operation refused: unknown or revoked operator, duplicate id."""


def agent_id_of(operator_id: str) -> str:
    return f"{AGENT_PREFIX}{operator_id}"


@dataclass(frozen=True, slots=True)
class OperatorRow:
    operator_id: str
    name: str
    endpoint_url: str
    agent_id: str
    key_no: int
    sealed: bytes
    pull_interval_s: int
    created_at: datetime
    rotated_at: datetime | None
    revoked_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        """The audit log's and the admin API's picture (never a secret)."""
        return {
            "operator_id": self.operator_id,
            "name": self.name,
            "endpoint_url": self.endpoint_url,
            "agent_id": self.agent_id,
            "key_no": self.key_no,
            "pull_interval_s": self.pull_interval_s,
            "created_at": self.created_at.isoformat(),
            "rotated_at": self.rotated_at.isoformat() if self.rotated_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


_COLUMNS = (
    "operator_id, name, endpoint_url, agent_id, key_no, secrets, pull_interval_s,"
    " created_at, rotated_at, revoked_at"
)


def _row(r: Sequence[Any]) -> OperatorRow:
    return OperatorRow(r[0], r[1], r[2], r[3], int(r[4]), bytes(r[5]), int(r[6]), r[7], r[8], r[9])


def get(conn: Conn, operator_id: str) -> OperatorRow | None:
    r = conn.execute(
        f"SELECT {_COLUMNS} FROM operators WHERE operator_id = %s",  # noqa: S608 - constant
        (operator_id,),
    ).fetchone()
    return None if r is None else _row(r)


def list_operators(conn: Conn, *, include_revoked: bool = False) -> list[OperatorRow]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM operators"  # noqa: S608 - constant columns
        " WHERE %s OR revoked_at IS NULL ORDER BY operator_id",
        (include_revoked,),
    ).fetchall()
    return [_row(r) for r in rows]


def _require(conn: Conn, operator_id: str) -> OperatorRow:
    conn.execute("SELECT 1 FROM operators WHERE operator_id = %s FOR UPDATE", (operator_id,))
    row = get(conn, operator_id)
    if row is None:
        raise OperatorError(f"no operator {operator_id!r}; add it first")
    if row.revoked_at is not None:
        raise OperatorError(f"operator {operator_id!r} was revoked at {row.revoked_at.isoformat()}")
    return row


def _audited(
    conn: Conn,
    cur: psycopg.Cursor[TupleRow],
    action: str,
    operator_id: str,
    actor: str,
    before: OperatorRow | None,
) -> OperatorRow:
    after = get(conn, operator_id)
    if after is None:  # cannot happen: locked or inserted by this transaction
        raise OperatorError(f"no operator {operator_id!r}")
    audit.record(
        cur,
        actor=actor,
        action=f"operator.{action}",
        entity="operator",
        entity_id=operator_id,
        before=None if before is None else before.as_json(),
        after=after.as_json(),
    )
    return after


# ------------------------------------------------------------------------------ changes


def add(
    conn: Conn,
    operator_id: str,
    *,
    name: str,
    endpoint_url: str,
    sites: Sequence[str],
    agent_public_key: bytes,
    sealed: bytes,
    actor: str,
    pull_interval_s: int = 300,
) -> OperatorRow:
    """Create the operator and its platform-side agent (key 1, ``sites``), in the caller's
    transaction, both audited."""
    if get(conn, operator_id) is not None:
        raise OperatorError(
            f"operator {operator_id!r} exists already; `qilu operators rotate` gives it new "
            "keys (a revoked id is never reused)"
        )
    agent = agents.provision(
        conn,
        agent_id_of(operator_id),
        sites,
        agent_public_key,
        actor=actor,
        note=f"T/CEC 102 operator {operator_id} (platform side)",
        allow_no_sites=bool(endpoint_url),  # its pulls bring its stations
    )
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO operators (operator_id, name, endpoint_url, agent_id, secrets,"
            " pull_interval_s) VALUES (%s, %s, %s, %s, %s, %s)",
            (operator_id, name, endpoint_url, agent.agent_id, sealed, pull_interval_s),
        )
        cur.execute("INSERT INTO operator_links (operator_id) VALUES (%s)", (operator_id,))
        return _audited(conn, cur, "add", operator_id, actor, None)


def set_endpoint(conn: Conn, operator_id: str, endpoint_url: str, *, actor: str) -> OperatorRow:
    """Change where we call the operator (audited as ``operator.endpoint``)."""
    before = _require(conn, operator_id)
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE operators SET endpoint_url = %s WHERE operator_id = %s",
            (endpoint_url, operator_id),
        )
        return _audited(conn, cur, "endpoint", operator_id, actor, before)


def rotate(conn: Conn, operator_id: str, *, sealed: bytes, actor: str) -> OperatorRow:
    """Replace the operator's sealed secrets; key_no + 1 retires every token issued before."""
    before = _require(conn, operator_id)
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE operators SET secrets = %s, key_no = key_no + 1, rotated_at = now()"
            " WHERE operator_id = %s",
            (sealed, operator_id),
        )
        return _audited(conn, cur, "rotate", operator_id, actor, before)


def revoke(conn: Conn, operator_id: str, *, actor: str) -> OperatorRow:
    """Revoke the operator and its agent: its requests and its records are refused."""
    before = _require(conn, operator_id)
    agents.revoke(conn, before.agent_id, actor=actor)
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE operators SET revoked_at = now() WHERE operator_id = %s", (operator_id,)
        )
        return _audited(conn, cur, "revoke", operator_id, actor, before)


# ------------------------------------------------------------------------------ connectors


@dataclass(frozen=True, slots=True)
class ConnectorLink:
    connector_id: str
    equipment_id: str
    station_id: str
    device_id: str


def link_connectors(conn: Conn, operator_id: str, links: Iterable[ConnectorLink]) -> int:
    """Record which registry device each connector belongs to (upsert; last_seen = now).
    Devices must exist in the registry: unknown ones raise OperatorError, nothing changes."""
    items = list(links)
    if not items:
        return 0
    devices = sorted({c.device_id for c in items})
    known = {
        r[0]
        for r in conn.execute("SELECT device_id FROM devices WHERE device_id = ANY(%s)", (devices,))
    }
    missing = [d for d in devices if d not in known]
    if missing:
        raise OperatorError(f"devices not in the registry: {', '.join(missing[:10])}")
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO operator_connectors"
            " (operator_id, connector_id, equipment_id, station_id, device_id)"
            " SELECT %s, * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[])"
            " ON CONFLICT (operator_id, connector_id) DO UPDATE SET"
            "  equipment_id = EXCLUDED.equipment_id, station_id = EXCLUDED.station_id,"
            "  device_id = EXCLUDED.device_id, last_seen = now()",
            (
                operator_id,
                [c.connector_id for c in items],
                [c.equipment_id for c in items],
                [c.station_id for c in items],
                [c.device_id for c in items],
            ),
        )
        return cur.rowcount


def link_by_hand(
    conn: Conn, operator_id: str, links: Iterable[ConnectorLink], *, actor: str
) -> int:
    """``qilu operators link``: :func:`link_connectors` for an active operator, and the sites
    of the linked devices given to the operator's agent (audited as ``agent.sites`` when
    that changes) in the caller's transaction, so the ingest accepts the pushes for a pile
    registered otherwise (an inventory, an OCPP agent) instead of refusing them as
    ``foreign_site``. Returns the number of connectors linked."""
    row = _require(conn, operator_id)
    items = list(links)
    n = link_connectors(conn, operator_id, items)
    sites = [
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT site_id FROM devices WHERE device_id = ANY(%s) ORDER BY 1",
            (sorted({c.device_id for c in items}),),
        )
    ]
    if sites:
        agents.change_sites(conn, row.agent_id, add=sites, actor=actor)
    return n


@dataclass(frozen=True, slots=True)
class ConnectorState:
    """One connector as the endpoint needs it: its pile and its last known status."""

    device_id: str
    status: int | None  # None: no status known yet
    status_at: datetime | None


def connector_states(conn: Conn) -> dict[str, dict[str, ConnectorState]]:
    """operator id -> connector id -> its pile and last known status, of active operators."""
    out: dict[str, dict[str, ConnectorState]] = {}
    # fetchall: the API's endpoint reloads this every tcec102.refresh_s, and a row at a time
    # through the cursor's iterator cost twice the CPU (5,000 connectors: 4.4 -> 2.1 ms)
    for op, cid, dev, status, at in conn.execute(
        "SELECT c.operator_id, c.connector_id, c.device_id, c.status, c.status_at"
        " FROM operator_connectors c JOIN operators o USING (operator_id)"
        " WHERE o.revoked_at IS NULL"
    ).fetchall():
        out.setdefault(op, {})[cid] = ConnectorState(dev, status, at)
    return out


def record_statuses(
    conn: Conn, operator_id: str, statuses: Mapping[str, tuple[int, datetime]]
) -> None:
    """Keep each connector's status (connector id -> (status, when reported)), replacing
    only an older one: a push and a pull arriving out of order keep the newer."""
    if not statuses:
        return
    cids = sorted(statuses)
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE operator_connectors c SET status = n.status, status_at = n.at"
            " FROM unnest(%s::text[], %s::smallint[], %s::timestamptz[]) AS n(cid, status, at)"
            " WHERE c.operator_id = %s AND c.connector_id = n.cid"
            " AND (c.status_at IS NULL OR c.status_at <= n.at)",
            (
                cids,
                [statuses[c][0] for c in cids],
                [statuses[c][1] for c in cids],
                operator_id,
            ),
        )


def pile_statuses(conn: Conn, operator_id: str, devices: Iterable[str]) -> dict[str, list[int]]:
    """device id -> the last known status of each of its connectors (unknown ones left out)."""
    out: dict[str, list[int]] = {}
    for dev, status in conn.execute(
        "SELECT device_id, status FROM operator_connectors WHERE operator_id = %s"
        " AND device_id = ANY(%s) AND status IS NOT NULL ORDER BY device_id, connector_id",
        (operator_id, sorted(set(devices))),
    ):
        out.setdefault(dev, []).append(int(status))
    return out


def connectors(conn: Conn) -> dict[str, dict[str, str]]:
    """operator id -> connector id -> device id, of active operators."""
    out: dict[str, dict[str, str]] = {}
    for op, cid, dev in conn.execute(
        "SELECT c.operator_id, c.connector_id, c.device_id FROM operator_connectors c"
        " JOIN operators o USING (operator_id) WHERE o.revoked_at IS NULL"
    ):
        out.setdefault(op, {})[cid] = dev
    return out


# ------------------------------------------------------------------------------ link health


@dataclass(slots=True)
class LinkDelta:
    """What happened on one link since the last flush (kept in memory by the endpoint)."""

    last_push: datetime | None = None
    last_pull: datetime | None = None
    last_token: datetime | None = None
    token_expires_at: datetime | None = None
    failures: int = 0
    last_failure: datetime | None = None
    last_failure_reason: str = ""
    # connector id -> (status, when) of accepted pushes (kept by :func:`record_statuses`)
    statuses: dict[str, tuple[int, datetime]] = field(default_factory=dict)


def record_links(conn: Conn, deltas: Mapping[str, LinkDelta]) -> None:
    """Fold the endpoint's in-memory link events into operator_links (one statement each)
    and the connectors' statuses into operator_connectors."""
    with conn.cursor() as cur:
        for op, d in deltas.items():
            record_statuses(conn, op, d.statuses)
            cur.execute(
                "UPDATE operator_links SET"
                " last_push = greatest(last_push, %(push)s),"
                " last_pull = greatest(last_pull, %(pull)s),"
                " last_token = greatest(last_token, %(token)s),"
                " token_expires_at = greatest(token_expires_at, %(expires)s),"
                " failures = failures + %(failures)s,"
                " last_failure = greatest(last_failure, %(failure)s),"
                " last_failure_reason = CASE WHEN %(failure)s::timestamptz IS NULL"
                "   THEN last_failure_reason ELSE %(reason)s END"
                " WHERE operator_id = %(op)s",
                {
                    "op": op,
                    "push": d.last_push,
                    "pull": d.last_pull,
                    "token": d.last_token,
                    "expires": d.token_expires_at,
                    "failures": d.failures,
                    "failure": d.last_failure,
                    "reason": d.last_failure_reason,
                },
            )


@dataclass(frozen=True, slots=True)
class LinkRow:
    operator_id: str
    last_push: datetime | None
    last_pull: datetime | None
    last_token: datetime | None
    token_expires_at: datetime | None
    failures: int
    last_failure: datetime | None
    last_failure_reason: str

    def as_json(self) -> dict[str, Any]:
        def iso(v: datetime | None) -> str | None:
            return v.isoformat() if v else None

        return {
            "last_push": iso(self.last_push),
            "last_pull": iso(self.last_pull),
            "last_token": iso(self.last_token),
            "token_expires_at": iso(self.token_expires_at),
            "failures": self.failures,
            "last_failure": iso(self.last_failure),
            "last_failure_reason": self.last_failure_reason,
        }


def link(conn: Conn, operator_id: str) -> LinkRow | None:
    r = conn.execute(
        "SELECT operator_id, last_push, last_pull, last_token, token_expires_at, failures,"
        " last_failure, last_failure_reason FROM operator_links WHERE operator_id = %s",
        (operator_id,),
    ).fetchone()
    return None if r is None else LinkRow(r[0], r[1], r[2], r[3], r[4], int(r[5]), r[6], r[7])


@dataclass(frozen=True, slots=True)
class OperatorHealth:
    """One active operator's link as the status page shows it."""

    operator_id: str
    name: str
    connectors: int
    last_push: datetime | None
    last_pull: datetime | None
    token_expires_at: datetime | None
    failures: int
    last_failure: datetime | None
    last_failure_reason: str
    healthy: bool  # the coverage rule: a push or a pull within twice the pull interval


def health(conn: Conn, now: datetime) -> list[OperatorHealth]:
    """Every active operator's link health as of ``now`` (storage/coverage.py's rule)."""
    rows = conn.execute(
        "SELECT o.operator_id, o.name,"  # noqa: S608 - constant text (the coverage rule)
        " (SELECT count(*) FROM operator_connectors c WHERE c.operator_id = o.operator_id),"
        " l.last_push, l.last_pull, l.token_expires_at, coalesce(l.failures, 0),"
        " l.last_failure, coalesce(l.last_failure_reason, ''),"
        " coalesce({}, false)"
        " FROM operators o LEFT JOIN operator_links l USING (operator_id)"
        " WHERE o.revoked_at IS NULL ORDER BY o.operator_id".format(
            OPERATOR_LINK_HEALTHY.format(l="l", o="o", now="%s")
        ),
        (now,),
    ).fetchall()
    return [
        OperatorHealth(r[0], r[1], int(r[2]), r[3], r[4], r[5], int(r[6]), r[7], r[8], bool(r[9]))
        for r in rows
    ]
