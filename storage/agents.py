"""The agent registry in the database: provisioning, rotation, revocation, the ingest's snapshot.

Every change runs in the caller's transaction together with its audit row
(:func:`storage.audit.record`), so a change and its record commit or roll back together.
Only public keys are stored (docs/adr/0010-agent-authentication.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from qilu.errors import QiluError
from storage import audit


class AgentError(QiluError):
    """An agent operation refused: unknown or revoked agent, duplicate id, unknown sites."""


@dataclass(frozen=True, slots=True)
class AgentKeyRow:
    key_no: int
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class AgentRow:
    agent_id: str
    note: str
    simulated: bool
    created_at: datetime
    revoked_at: datetime | None
    sites: tuple[str, ...]
    keys: tuple[AgentKeyRow, ...]
    metrics_host: str | None = None  # where Prometheus scrapes it (None: not recorded)
    metrics_port: int | None = None

    @property
    def active_key(self) -> int | None:
        live = [k.key_no for k in self.keys if k.revoked_at is None]
        return max(live) if live else None

    def as_json(self) -> dict[str, Any]:
        """The audit log's before/after picture (never a secret)."""
        return {
            "agent_id": self.agent_id,
            "note": self.note,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "sites": list(self.sites),
            "metrics_host": self.metrics_host,
            "metrics_port": self.metrics_port,
            "keys": [
                {
                    "key_no": k.key_no,
                    "created_at": k.created_at.isoformat(),
                    "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
                }
                for k in self.keys
            ],
        }


Conn = psycopg.Connection[TupleRow]


# ------------------------------------------------------------------------------ reads


def get(conn: Conn, agent_id: str) -> AgentRow | None:
    rows = list_agents(conn, agent_ids=[agent_id], include_revoked=True)
    return rows[0] if rows else None


def list_agents(
    conn: Conn,
    *,
    agent_ids: Sequence[str] | None = None,
    include_revoked: bool = False,
    include_simulated: bool = True,
) -> list[AgentRow]:
    """Agents with their sites and keys, by id."""
    rows = conn.execute(
        "SELECT a.agent_id, a.note, a.simulated, a.created_at, a.revoked_at,"
        "  coalesce((SELECT array_agg(s.site_id ORDER BY s.site_id) FROM agent_sites s"
        "            WHERE s.agent_id = a.agent_id), '{}'),"
        "  coalesce((SELECT array_agg(k.key_no ORDER BY k.key_no) FROM agent_keys k"
        "            WHERE k.agent_id = a.agent_id), '{}'),"
        "  coalesce((SELECT array_agg(k.created_at ORDER BY k.key_no) FROM agent_keys k"
        "            WHERE k.agent_id = a.agent_id), '{}'),"
        "  coalesce((SELECT array_agg(k.revoked_at ORDER BY k.key_no) FROM agent_keys k"
        "            WHERE k.agent_id = a.agent_id), '{}'),"
        "  a.metrics_host, a.metrics_port"
        " FROM agents a"
        " WHERE (%(ids)s::text[] IS NULL OR a.agent_id = ANY(%(ids)s))"
        "   AND (%(revoked)s OR a.revoked_at IS NULL)"
        "   AND (%(simulated)s OR NOT a.simulated)"
        " ORDER BY a.agent_id",
        {
            "ids": list(agent_ids) if agent_ids is not None else None,
            "revoked": include_revoked,
            "simulated": include_simulated,
        },
    ).fetchall()
    return [
        AgentRow(
            agent_id=r[0],
            note=r[1],
            simulated=r[2],
            created_at=r[3],
            revoked_at=r[4],
            sites=tuple(r[5]),
            keys=tuple(AgentKeyRow(n, c, v) for n, c, v in zip(r[6], r[7], r[8], strict=True)),
            metrics_host=r[9],
            metrics_port=r[10],
        )
        for r in rows
    ]


def sites_matching(
    conn: Conn,
    *,
    site_ids: Sequence[str] = (),
    cities: Sequence[str] = (),
    sectors: Sequence[str] = (),
) -> list[str]:
    """Site ids selected by explicit ids and/or city/sector filters; unknown ids -> AgentError."""
    out: set[str] = set()
    if site_ids:
        found = {
            r[0]
            for r in conn.execute(
                "SELECT site_id FROM sites WHERE site_id = ANY(%s)", (list(site_ids),)
            )
        }
        missing = sorted(set(site_ids) - found)
        if missing:
            raise AgentError(f"unknown site ids: {', '.join(missing[:10])}")
        out |= found
    if cities or sectors:
        out |= {
            r[0]
            for r in conn.execute(
                "SELECT site_id FROM sites"
                " WHERE (cardinality(%(c)s::text[]) = 0 OR city_code = ANY(%(c)s))"
                "   AND (cardinality(%(s)s::text[]) = 0 OR sector = ANY(%(s)s))",
                {"c": list(cities), "s": list(sectors)},
            )
        }
    return sorted(out)


def sectors_of(conn: Conn, site_ids: Sequence[str]) -> list[str]:
    """The sectors of these sites (an agent's Kafka topics)."""
    return [
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT sector FROM sites WHERE site_id = ANY(%s) ORDER BY sector",
            (list(site_ids),),
        )
    ]


def free_metrics_port(conn: Conn, host: str, first: int, reserved: Iterable[int] = ()) -> int:
    """The lowest port from ``first`` up that no active agent on ``host`` serves its metrics
    at (and not in ``reserved``). Takes a transaction-scoped lock on the host, so two
    provisionings for one host in parallel get different ports: call it in the transaction
    that stores the port."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('qilu.agent_metrics:' || %s))", (host,))
    row = conn.execute(
        "SELECT min(p) FROM generate_series(%s::int, 65535) AS p"
        " WHERE p <> ALL(%s::int[]) AND NOT EXISTS (SELECT 1 FROM agents a"
        "   WHERE a.metrics_host = %s AND a.metrics_port = p AND a.revoked_at IS NULL)",
        (first, list(reserved), host),
    ).fetchone()
    if row is None or row[0] is None:
        raise AgentError(f"no free metrics port on {host} from {first} up")
    return int(row[0])


@dataclass(frozen=True, slots=True)
class MetricsEndpoints:
    """What Prometheus scrapes of the agents: each provisioned agent's endpoint, and whether
    simulated agents are active (they share the province process's endpoint)."""

    agents: list[tuple[str, str, int]]  # (agent id, host, port), active agents by id
    simulated: bool


def metrics_endpoints(conn: Conn) -> MetricsEndpoints:
    rows = conn.execute(
        "SELECT agent_id, metrics_host, metrics_port FROM agents"
        " WHERE revoked_at IS NULL AND metrics_port IS NOT NULL AND NOT simulated"
        " ORDER BY agent_id"
    ).fetchall()
    sim = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM agents WHERE simulated AND revoked_at IS NULL)"
    ).fetchone()
    return MetricsEndpoints([(r[0], r[1], int(r[2])) for r in rows], bool(sim and sim[0]))


# ------------------------------------------------------------------------------ changes


def _require(conn: Conn, agent_id: str, *, for_update: bool = True) -> AgentRow:
    if for_update:
        conn.execute("SELECT 1 FROM agents WHERE agent_id = %s FOR UPDATE", (agent_id,))
    row = get(conn, agent_id)
    if row is None:
        raise AgentError(f"no agent {agent_id!r}; provision it first")
    if row.revoked_at is not None:
        raise AgentError(f"agent {agent_id!r} was revoked at {row.revoked_at.isoformat()}")
    return row


def _audited(
    conn: Conn,
    cur: psycopg.Cursor[TupleRow],
    action: str,
    agent_id: str,
    actor: str,
    before: AgentRow | None,
) -> AgentRow:
    """The agent as the change left it, recorded in the audit log with its state before, in
    the change's transaction."""
    after = get(conn, agent_id)
    if after is None:  # cannot happen: the row is locked or was inserted by this transaction
        raise AgentError(f"no agent {agent_id!r}")
    audit.record(
        cur,
        actor=actor,
        action=f"agent.{action}",
        entity="agent",
        entity_id=agent_id,
        before=None if before is None else before.as_json(),
        after=after.as_json(),
    )
    return after


def provision(
    conn: Conn,
    agent_id: str,
    sites: Sequence[str],
    public_key: bytes,
    *,
    actor: str,
    note: str = "",
    metrics: tuple[str, int] | None = None,
    allow_no_sites: bool = False,
) -> AgentRow:
    """Create an agent with key 1 and its sites, serving its metrics at ``metrics`` (host,
    port; see :func:`free_metrics_port`). Run inside the caller's transaction.

    ``allow_no_sites``: for an agent whose sites arrive later (a T/CEC 102 operator whose
    stations its first pull brings, storage/operators.py); an edge agent needs one."""
    if not sites and not allow_no_sites:
        raise AgentError("an agent needs at least one site to report for")
    host, port = metrics if metrics is not None else (None, None)
    with conn.cursor() as cur:
        try:
            with conn.transaction():  # a savepoint: the error below leaves the caller's usable
                cur.execute(
                    "INSERT INTO agents (agent_id, note, metrics_host, metrics_port)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT (agent_id) DO NOTHING",
                    (agent_id, note, host, port),
                )
        except psycopg.errors.UniqueViolation as exc:  # agents_metrics_endpoint_active
            raise AgentError(
                f"metrics endpoint {host}:{port} is held by another active agent; choose "
                "another port (or leave it out: provisioning picks a free one)"
            ) from exc
        if cur.rowcount != 1:
            raise AgentError(
                f"agent {agent_id!r} exists already; `qilu agents rotate` gives it new "
                "credentials (a revoked id is never reused)"
            )
        cur.execute(
            "INSERT INTO agent_keys (agent_id, key_no, public_key) VALUES (%s, 1, %s)",
            (agent_id, public_key),
        )
        _insert_sites(cur, agent_id, sites)
        return _audited(conn, cur, "provision", agent_id, actor, None)


def rotate(
    conn: Conn, agent_id: str, public_key: bytes, *, actor: str, grace: timedelta
) -> tuple[AgentRow, int]:
    """Add the next key; older keys stop being accepted after ``grace``. Returns the new number."""
    before = _require(conn, agent_id)
    key_no = max((k.key_no for k in before.keys), default=0) + 1
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE agent_keys SET revoked_at = now() + %s"
            " WHERE agent_id = %s AND (revoked_at IS NULL OR revoked_at > now() + %s)",
            (grace, agent_id, grace),
        )
        cur.execute(
            "INSERT INTO agent_keys (agent_id, key_no, public_key) VALUES (%s, %s, %s)",
            (agent_id, key_no, public_key),
        )
        after = _audited(conn, cur, "rotate", agent_id, actor, before)
    return after, key_no


def change_sites(
    conn: Conn,
    agent_id: str,
    *,
    add: Sequence[str] = (),
    remove: Sequence[str] = (),
    actor: str,
) -> tuple[AgentRow, AgentRow]:
    """Give the agent the sites ``add`` and take ``remove`` from it (both already checked to
    exist); audited as ``agent.sites`` when the list changed. Returns (before, after).

    Removing a site the agent does not report for is refused (a typo must not pass as done);
    adding one it has is not, so the same command can run again to repair the broker's ACLs
    after a failed commit. An agent keeps at least one site (revoke it instead)."""
    before = _require(conn, agent_id)
    have = set(before.sites)
    not_held = sorted(set(remove) - have)
    if not_held:
        raise AgentError(
            f"agent {agent_id!r} does not report for {', '.join(not_held[:10])}"
            + (f" (+{len(not_held) - 10} more)" if len(not_held) > 10 else "")
        )
    both = sorted(set(add) & set(remove))
    if both:
        raise AgentError(f"sites both added and removed: {', '.join(both[:10])}")
    new_sites = sorted((have | set(add)) - set(remove))
    if not new_sites:
        raise AgentError(
            f"agent {agent_id!r} would have no site left; `qilu agents revoke` retires an agent"
        )
    if new_sites == sorted(have):
        return before, before
    with conn.cursor() as cur:
        cur.execute(
            "DELETE FROM agent_sites WHERE agent_id = %s AND site_id = ANY(%s)",
            (agent_id, sorted(set(remove))),
        )
        _insert_sites(cur, agent_id, sorted(set(add) - have))
        return before, _audited(conn, cur, "sites", agent_id, actor, before)


def revoke(conn: Conn, agent_id: str, *, actor: str) -> AgentRow:
    """Revoke the agent and all its keys now. Its id is never reused."""
    before = _require(conn, agent_id)
    with conn.cursor() as cur:
        cur.execute("UPDATE agents SET revoked_at = now() WHERE agent_id = %s", (agent_id,))
        cur.execute(
            "UPDATE agent_keys SET revoked_at = now()"
            " WHERE agent_id = %s AND (revoked_at IS NULL OR revoked_at > now())",
            (agent_id,),
        )
        return _audited(conn, cur, "revoke", agent_id, actor, before)


def provision_simulated(
    conn: Conn,
    plan: Mapping[str, Sequence[str]],
    public_keys: Mapping[str, bytes],
    *,
    actor: str,
) -> dict[str, int]:
    """Bulk provisioning for a simulated province (a few set-based statements, whatever the
    number of agents): create missing agents, replace their sites, add a new key and retire
    the older ones (after a day). Revoked agents stay revoked.

    Returns agent id -> the new key number."""
    ids = sorted(plan)
    site_agents = [a for a in ids for _ in plan[a]]
    site_ids = [s for a in ids for s in plan[a]]
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO agents (agent_id, note, simulated)"
            " SELECT unnest(%s::text[]), 'simulated province', true ON CONFLICT DO NOTHING",
            (ids,),
        )
        cur.execute("DELETE FROM agent_sites WHERE agent_id = ANY(%s)", (ids,))
        cur.execute(
            "INSERT INTO agent_sites (agent_id, site_id)"
            " SELECT * FROM unnest(%s::text[], %s::text[])",
            (site_agents, site_ids),
        )
        # the keys of earlier runs stay valid for a day: records they signed may still wait
        # in Kafka on topics without LogAppendTime
        cur.execute(
            "UPDATE agent_keys SET revoked_at = now() + interval '1 day'"
            " WHERE agent_id = ANY(%s) AND revoked_at IS NULL",
            (ids,),
        )
        rows = cur.execute(
            "INSERT INTO agent_keys (agent_id, key_no, public_key)"
            " SELECT n.agent_id, coalesce(max(k.key_no), 0) + 1, n.public_key"
            " FROM unnest(%s::text[], %s::bytea[]) AS n (agent_id, public_key)"
            " LEFT JOIN agent_keys k ON k.agent_id = n.agent_id"
            " GROUP BY n.agent_id, n.public_key"
            " RETURNING agent_id, key_no",
            (ids, [public_keys[a] for a in ids]),
        ).fetchall()
        cur.execute(
            "INSERT INTO audit_log (actor, action, entity, entity_id, before, after)"
            " SELECT %s, 'agent.provision_simulated', 'agent', a, NULL,"
            "  jsonb_build_object('sites', n, 'key_no', k)"
            " FROM unnest(%s::text[], %s::int[], %s::int[]) AS t (a, n, k)",
            (
                actor,
                [r[0] for r in rows],
                [len(plan[r[0]]) for r in rows],
                [r[1] for r in rows],
            ),
        )
    return {r[0]: int(r[1]) for r in rows}


# ------------------------------------------------------------------------------ ingest snapshot


@dataclass(frozen=True, slots=True)
class RegistrySnapshot:
    """Everything the ingest needs to authenticate records, as plain data."""

    version: int
    # agent id -> (revoked_at, {key_no: (public key, revoked_at)}, site ids)
    agents: dict[str, tuple[datetime | None, dict[int, tuple[bytes, datetime | None]], set[str]]]


def registry_version(conn: Conn) -> int:
    row = conn.execute("SELECT v FROM agent_registry_version").fetchone()
    return int(row[0]) if row else 0


def load_snapshot(conn: Conn) -> RegistrySnapshot:
    """The whole agent registry: its version, then agents, keys and sites in ONE statement.

    One statement sees one snapshot. Separate reads do not, even in one transaction, under
    PostgreSQL's default READ COMMITTED: an agent provisioned between the read of ``agents``
    and that of ``agent_keys`` came back as keys of an agent the snapshot did not hold, and
    the ingest stopped on it (``qilu run`` adds the simulated operators' agents just as the
    ingest's first early refresh runs). The version is read first: what follows is at least
    that new, and a change committed in between moves it, so the next check reloads."""
    version = registry_version(conn)
    rows = conn.execute(
        "SELECT a.agent_id, a.revoked_at,"
        "  coalesce(k.nos, '{}'), coalesce(k.pubs, '{}'), coalesce(k.revoked, '{}'),"
        "  coalesce((SELECT array_agg(s.site_id) FROM agent_sites s"
        "            WHERE s.agent_id = a.agent_id), '{}')"
        " FROM agents a LEFT JOIN LATERAL ("
        "  SELECT array_agg(key_no ORDER BY key_no) AS nos,"
        "   array_agg(public_key ORDER BY key_no) AS pubs,"
        "   array_agg(revoked_at ORDER BY key_no) AS revoked"
        "  FROM agent_keys WHERE agent_id = a.agent_id) k ON true"
    ).fetchall()
    return RegistrySnapshot(
        version,
        {
            agent_id: (
                revoked_at,
                {n: (bytes(p), r) for n, p, r in zip(nos, pubs, revoked, strict=True)},
                set(sites),
            )
            for agent_id, revoked_at, nos, pubs, revoked, sites in rows
        },
    )


def device_sites(conn: Conn, device_ids: Iterable[str] | None = None) -> dict[str, str]:
    """device id -> site id (all devices, or these)."""
    if device_ids is None:
        return dict(conn.execute("SELECT device_id, site_id FROM devices").fetchall())
    return dict(
        conn.execute(
            "SELECT device_id, site_id FROM devices WHERE device_id = ANY(%s)", (list(device_ids),)
        ).fetchall()
    )


def _insert_sites(cur: psycopg.Cursor[TupleRow], agent_id: str, sites: Iterable[str]) -> None:
    cur.execute(
        "INSERT INTO agent_sites (agent_id, site_id) SELECT %s, unnest(%s::text[])",
        (agent_id, list(sites)),
    )


# ------------------------------------------------------------------------------ agent self-check


@dataclass(frozen=True, slots=True)
class RequestKey:
    """What the API needs to authenticate an agent's signed request."""

    public_key: bytes
    key_revoked_at: datetime | None
    agent_revoked_at: datetime | None


def request_key(conn: Conn, agent_id: str, key_no: int) -> RequestKey | None:
    """The agent's key of that number (None: no such agent or key)."""
    row = conn.execute(
        "SELECT k.public_key, k.revoked_at, a.revoked_at FROM agent_keys k"
        " JOIN agents a USING (agent_id) WHERE k.agent_id = %s AND k.key_no = %s",
        (agent_id, key_no),
    ).fetchone()
    return None if row is None else RequestKey(bytes(row[0]), row[1], row[2])


@dataclass(frozen=True, slots=True)
class DeviceCheck:
    """An agent's sites and sectors, and where each asked-for device is registered."""

    sites: tuple[str, ...]
    sectors: tuple[str, ...]
    devices: dict[str, tuple[str, str]]  # device id -> (site id, sector); absent: unknown


def device_check(conn: Conn, agent_id: str, device_ids: Sequence[str]) -> DeviceCheck:
    """Which of ``device_ids`` exist, at which site and in which sector, and the agent's own
    sites and sectors (one transaction: consistent)."""
    sites = tuple(
        r[0]
        for r in conn.execute(
            "SELECT site_id FROM agent_sites WHERE agent_id = %s ORDER BY site_id", (agent_id,)
        )
    )
    devices = {
        r[0]: (r[1], r[2])
        for r in conn.execute(
            "SELECT d.device_id, d.site_id, s.sector FROM devices d JOIN sites s USING (site_id)"
            " WHERE d.device_id = ANY(%s)",
            (list(device_ids),),
        )
    }
    return DeviceCheck(sites, tuple(sectors_of(conn, sites)), devices)
