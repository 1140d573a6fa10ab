"""``/v1/admin/audit``: the audit log (admin scope): who changed what, when, before and after.

Oldest first, keyset-paginated by the audit id (an opaque cursor), filtered by entity, entity
id, actor and time. Rows are written by the registry, agent and key administration in the
transaction of each change (storage/audit.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api import pagination
from api.deps import PROBLEMS, Admin, Ctx, database
from api.schemas import PageOut
from storage import audit

router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=PROBLEMS)


class AuditOut(BaseModel):
    audit_id: int
    at: datetime
    actor: str = Field(examples=["cli:alice", "api:3f9a0c1b7d2e"])
    action: str = Field(examples=["device.decommission", "registry.import"])
    entity: str = Field(examples=["device"])
    entity_id: str = Field(examples=["CS370200-0001-01"])
    before: dict[str, Any] | None = Field(description="null: the entity did not exist before")
    after: dict[str, Any] | None = Field(description="with 'effective': the day it took effect")


@router.get("/audit", response_model=PageOut[AuditOut], summary="The audit log, oldest first")
def list_audit(
    ctx: Ctx,
    who: Admin,
    entity: Literal["site", "device", "agent", "api_key", "import", "operator", "reported_figure"]
    | None = None,
    entity_id: str | None = None,
    actor: Annotated[str | None, Query(examples=["cli:alice"])] = None,
    since: Annotated[datetime | None, Query(description="at or after this instant")] = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> PageOut[AuditOut]:
    del who
    after_id = pagination.decode(cursor, (int,))[0] if cursor else None
    with database(ctx) as conn:
        rows = audit.query(
            conn,
            entity=entity,
            entity_id=entity_id,
            actor=actor,
            since=since,
            after_id=after_id,
            limit=limit + 1,
        )
    page = rows[:limit]
    items = [
        AuditOut(
            audit_id=r.audit_id,
            at=r.at,
            actor=r.actor,
            action=r.action,
            entity=r.entity,
            entity_id=r.entity_id,
            before=r.before,
            after=r.after,
        )
        for r in page
    ]
    more = len(rows) > limit
    return PageOut[AuditOut](
        items=items, next_cursor=pagination.encode([page[-1].audit_id]) if more else None
    )
