"""The audit log: who changed what, when, with the state before and after.

Every change made through the CLI or the admin API calls :func:`record` on the cursor of the
transaction that makes the change, so a change and its audit row commit (or roll back)
together. Actors are ``cli:<os user>`` for the command line and ``api:<key id>`` for the API.
"""

from __future__ import annotations

import getpass
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb

Entity = Literal["site", "device", "agent", "api_key", "import", "operator", "reported_figure"]


def cli_actor() -> str:
    """The actor name of a change made from the command line on this machine."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (containers)
        user = "unknown"
    return f"cli:{user}"


def record(
    cur: psycopg.Cursor[TupleRow],
    *,
    actor: str,
    action: str,
    entity: Entity,
    entity_id: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
) -> None:
    """Append one audit row in the caller's transaction. ``before``/``after`` must be JSON-able
    (dates as ISO strings); None means the entity did not exist before / no longer exists."""
    cur.execute(
        "INSERT INTO audit_log (actor, action, entity, entity_id, before, after)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (
            actor,
            action,
            entity,
            entity_id,
            None if before is None else Jsonb(dict(before)),
            None if after is None else Jsonb(dict(after)),
        ),
    )


def record_many(
    cur: psycopg.Cursor[TupleRow],
    rows: Sequence[tuple[str, str, Entity, str, str | None, str | None]],
) -> None:
    """Append many audit rows in the caller's transaction with one COPY (bulk changes such as
    an inventory import): (actor, action, entity, entity_id, before JSON, after JSON) each,
    the JSON already serialised (None for no state)."""
    if not rows:
        return
    with cur.copy(
        "COPY audit_log (actor, action, entity, entity_id, before, after) FROM STDIN"
    ) as copy:
        for row in rows:
            copy.write_row(row)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    audit_id: int
    at: datetime
    actor: str
    action: str
    entity: str
    entity_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


def query(
    conn: psycopg.Connection[TupleRow],
    *,
    entity: str | None = None,
    entity_id: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """Audit rows matching every given filter, oldest first, after ``after_id`` (a cursor)."""
    rows = conn.execute(
        "SELECT audit_id, at, actor, action, entity, entity_id, before, after FROM audit_log"
        " WHERE (%(entity)s::text IS NULL OR entity = %(entity)s)"
        "   AND (%(entity_id)s::text IS NULL OR entity_id = %(entity_id)s)"
        "   AND (%(actor)s::text IS NULL OR actor = %(actor)s)"
        "   AND (%(since)s::timestamptz IS NULL OR at >= %(since)s)"
        "   AND audit_id > coalesce(%(after_id)s::bigint, 0)"
        " ORDER BY audit_id LIMIT %(limit)s",
        {
            "entity": entity,
            "entity_id": entity_id,
            "actor": actor,
            "since": since,
            "after_id": after_id,
            "limit": limit,
        },
    ).fetchall()
    return [AuditEntry(*r) for r in rows]
