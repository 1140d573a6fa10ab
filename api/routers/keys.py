"""``/v1/keys``: the API keys (admin scope). Keys are created and revoked with the CLI."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import PROBLEMS, Admin, Ctx, database
from api.schemas import ApiKeyOut
from storage import queries_api as q

router = APIRouter(prefix="/v1", tags=["admin"], responses=PROBLEMS)


@router.get("/keys", response_model=list[ApiKeyOut], summary="API keys (never their secrets)")
def list_keys(
    ctx: Ctx,
    who: Admin,
    include_revoked: Annotated[bool, Query(description="also list revoked keys")] = False,
) -> list[ApiKeyOut]:
    del who
    with database(ctx) as conn:
        rows = q.list_api_keys(conn, include_revoked=include_revoked)
    return [
        ApiKeyOut(
            key_id=r.key_id,
            name=r.name,
            scopes=list(r.scopes),
            cities=list(r.cities),
            sectors=list(r.sectors),
            rate_per_s=r.rate_per_s,
            created_at=r.created_at,
            expires_at=r.expires_at,
            revoked_at=r.revoked_at,
        )
        for r in rows
    ]
