"""``/v1/admin/operators``: charging operators over T/CEC 102 (admin scope).

The same operations as ``qilu operators`` (interconnect/tcec102/operators.py), audited with
the caller's key as the actor. Adding and rotating answer the operator's inbound keys once;
they are stored sealed, never in clear, and no other answer carries them
(docs/adr/0015-tcec102.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, Field

from api.deps import PROBLEMS, Admin, Ctx, database
from api.schemas import Problem
from interconnect.tcec102 import operators as ops
from interconnect.tcec102.exchange import KeySet
from qilu.errors import ConfigError
from storage import agents as agent_store
from storage import operators as store

router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    responses={
        **PROBLEMS,
        409: {"model": Problem, "description": "The operator exists already, or is revoked"},
    },
)
OperatorId = Annotated[str, Path(pattern=r"^[0-9A-Za-z]{9}$")]
Printable = r"^[^\x00-\x1f]*$"  # no control characters (PostgreSQL text takes no NUL)
SiteId = Annotated[str, Field(min_length=1, max_length=64, pattern=Printable)]


class KeysIn(BaseModel):
    """A key set in the standard's names (what the operator gave us for calling it)."""

    OperatorSecret: str = Field(min_length=1, max_length=64, pattern=Printable)
    DataSecret: str = Field(min_length=16, max_length=16, pattern=r"^[\x20-\x7e]{16}$")
    DataSecretIV: str = Field(min_length=16, max_length=16, pattern=r"^[\x20-\x7e]{16}$")
    SigSecret: str = Field(min_length=1, max_length=64, pattern=Printable)

    def keyset(self) -> KeySet:
        return KeySet(self.OperatorSecret, self.DataSecret, self.DataSecretIV, self.SigSecret)


class OperatorIn(BaseModel):
    operator_id: str = Field(pattern=r"^[0-9A-Za-z]{9}$")
    name: str = Field(default="", max_length=200, pattern=Printable)
    endpoint_url: str = Field(default="", max_length=500, pattern=r"^(https?://[\x21-\x7e]+)?$")
    sites: list[SiteId] = Field(default_factory=list, max_length=100_000)
    cities: list[Annotated[str, Field(pattern=r"^[0-9]{6}$")]] = Field(
        default_factory=list, max_length=16
    )
    outbound_keys: KeysIn | None = None
    pull_interval_s: int = Field(default=300, ge=10, le=86_400)


class RotateIn(BaseModel):
    outbound_keys: KeysIn | None = None


class LinkOut(BaseModel):
    last_push: datetime | None
    last_pull: datetime | None
    last_token: datetime | None
    token_expires_at: datetime | None
    failures: int
    last_failure: datetime | None
    last_failure_reason: str


class OperatorOut(BaseModel):
    operator_id: str
    name: str
    endpoint_url: str
    agent_id: str
    key_no: int
    pull_interval_s: int
    created_at: datetime
    rotated_at: datetime | None
    revoked_at: datetime | None
    link: LinkOut | None


class KeysOut(BaseModel):
    """Shown once: give these to the operator, then forget them."""

    operator: OperatorOut
    endpoint: str
    OperatorSecret: str
    DataSecret: str
    DataSecretIV: str
    SigSecret: str


def _out(row: store.OperatorRow, link: store.LinkRow | None) -> OperatorOut:
    return OperatorOut(
        operator_id=row.operator_id,
        name=row.name,
        endpoint_url=row.endpoint_url,
        agent_id=row.agent_id,
        key_no=row.key_no,
        pull_interval_s=row.pull_interval_s,
        created_at=row.created_at,
        rotated_at=row.rotated_at,
        revoked_at=row.revoked_at,
        link=None if link is None else LinkOut(**link.as_json()),
    )


def _keys(shown: ops.Shown) -> KeysOut:
    k = shown.inbound
    return KeysOut(
        operator=_out(shown.row, None),
        endpoint=shown.base_url,
        OperatorSecret=k.operator_secret,
        DataSecret=k.data_secret,
        DataSecretIV=k.data_secret_iv,
        SigSecret=k.sig_secret,
    )


def _refused(exc: Exception) -> HTTPException:
    text = str(exc)
    return HTTPException(404 if text.startswith("no operator") else 409, text)


@router.get(
    "/operators", response_model=list[OperatorOut], summary="T/CEC 102 operators (never keys)"
)
def list_operators(
    ctx: Ctx,
    who: Admin,
    include_revoked: Annotated[bool, Query(description="also list revoked operators")] = False,
) -> list[OperatorOut]:
    del who
    with database(ctx) as conn:
        rows = store.list_operators(conn, include_revoked=include_revoked)
        return [_out(r, store.link(conn, r.operator_id)) for r in rows]


@router.get("/operators/{operator_id}", response_model=OperatorOut, summary="One operator")
def show_operator(ctx: Ctx, who: Admin, operator_id: OperatorId) -> OperatorOut:
    del who
    with database(ctx) as conn:
        row = store.get(conn, operator_id)
        if row is None:
            raise HTTPException(404, f"no operator {operator_id!r}")
        return _out(row, store.link(conn, operator_id))


@router.post(
    "/operators",
    response_model=KeysOut,
    status_code=201,
    summary="Add an operator: its agent identity and its keys (shown once)",
)
def add_operator(ctx: Ctx, who: Admin, body: OperatorIn) -> KeysOut:
    try:
        shown = ops.add(
            ctx.settings,
            body.operator_id,
            name=body.name,
            endpoint_url=body.endpoint_url,
            site_ids=body.sites,
            cities=body.cities,
            outbound=body.outbound_keys.keyset() if body.outbound_keys else None,
            actor=f"api:{who.subject}",
            pull_interval_s=body.pull_interval_s,
        )
    except (store.OperatorError, agent_store.AgentError) as exc:
        raise _refused(exc) from exc
    except ConfigError as exc:
        raise HTTPException(422, str(exc)) from exc
    return _keys(shown)


@router.post(
    "/operators/{operator_id}/rotate",
    response_model=KeysOut,
    summary="New keys for an operator; its tokens are refused (keys shown once)",
)
def rotate_operator(
    ctx: Ctx, who: Admin, operator_id: OperatorId, body: RotateIn | None = None
) -> KeysOut:
    outbound = body.outbound_keys.keyset() if body and body.outbound_keys else None
    try:
        shown = ops.rotate(ctx.settings, operator_id, outbound=outbound, actor=f"api:{who.subject}")
    except store.OperatorError as exc:
        raise _refused(exc) from exc
    except ConfigError as exc:
        raise HTTPException(422, str(exc)) from exc
    return _keys(shown)


@router.post(
    "/operators/{operator_id}/revoke", response_model=OperatorOut, summary="Revoke an operator"
)
def revoke_operator(ctx: Ctx, who: Admin, operator_id: OperatorId) -> OperatorOut:
    try:
        row = ops.revoke(ctx.settings, operator_id, actor=f"api:{who.subject}")
    except (store.OperatorError, agent_store.AgentError) as exc:
        raise _refused(exc) from exc
    return _out(row, None)
