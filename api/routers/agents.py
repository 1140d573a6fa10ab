"""``/v1/admin/agents``: provision, change sites, rotate, revoke, list and show edge agents
(admin scope).

The same operations as ``qilu agents`` (stream/provisioning.py), audited with the caller's
key as the actor. Provisioning and rotation answer the agent's secrets and configuration once;
nothing of them is stored in clear (docs/adr/0010-agent-authentication.md).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, Field

from api.deps import PROBLEMS, Admin, Ctx, database
from api.schemas import Problem
from qilu.errors import ServiceError
from storage import agents as store
from stream import provisioning

router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    responses={
        **PROBLEMS,
        409: {"model": Problem, "description": "The agent exists already, or is revoked"},
    },
)
AgentId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]


class AgentKeyOut(BaseModel):
    key_no: int
    created_at: datetime
    revoked_at: datetime | None


class AgentOut(BaseModel):
    agent_id: str
    note: str
    simulated: bool
    created_at: datetime
    revoked_at: datetime | None
    sites: list[str]
    keys: list[AgentKeyOut]
    metrics_host: str | None = Field(description="where Prometheus scrapes the agent")
    metrics_port: int | None


Sectors = list[Literal["charging", "substation", "ranch"]]


class AgentIn(BaseModel):
    agent_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    sites: list[str] = Field(default_factory=list, max_length=100_000)
    cities: list[str] = Field(default_factory=list, max_length=16)
    sectors: list[str] = Field(default_factory=list, max_length=3)
    note: str = Field(default="", max_length=500)
    metrics_host: str = Field(
        default="127.0.0.1",
        min_length=1,
        max_length=253,
        pattern=r"^[A-Za-z0-9.:_-]+$",
        description="the agent's machine as Prometheus reaches it",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="default: the lowest above agent.metrics_port free on that host",
    )


class AgentSitesIn(BaseModel):
    """A change of the agent's sites: ids, or every site of a sector (of ``cities`` if given)."""

    add_sites: list[str] = Field(default_factory=list, max_length=100_000)
    remove_sites: list[str] = Field(default_factory=list, max_length=100_000)
    add_sectors: Sectors = Field(default_factory=list, max_length=3)
    remove_sectors: Sectors = Field(default_factory=list, max_length=3)
    cities: list[str] = Field(default_factory=list, max_length=16)


class RotateIn(BaseModel):
    grace_s: float = Field(default=3600.0, ge=0, le=30 * 86_400)


class CredentialsOut(BaseModel):
    """Shown once: store the configuration on the agent, then forget it."""

    agent: AgentOut
    key_no: int
    signing_key: str
    kafka_password: str | None
    config_toml: str


def _out(row: Any) -> AgentOut:
    return AgentOut(
        agent_id=row.agent_id,
        note=row.note,
        simulated=row.simulated,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        sites=list(row.sites),
        metrics_host=row.metrics_host,
        metrics_port=row.metrics_port,
        keys=[
            AgentKeyOut(key_no=k.key_no, created_at=k.created_at, revoked_at=k.revoked_at)
            for k in row.keys
        ],
    )


def _refused(exc: store.AgentError) -> HTTPException:
    text = str(exc)
    return HTTPException(404 if text.startswith("no agent") else 409, text)


@router.get("/agents", response_model=list[AgentOut], summary="Edge agents (never secrets)")
def list_agents(
    ctx: Ctx,
    who: Admin,
    include_revoked: Annotated[bool, Query(description="also list revoked agents")] = False,
) -> list[AgentOut]:
    del who
    with database(ctx) as conn:
        rows = store.list_agents(conn, include_revoked=include_revoked)
    return [_out(r) for r in rows]


@router.get("/agents/{agent_id}", response_model=AgentOut, summary="One edge agent")
def show_agent(ctx: Ctx, who: Admin, agent_id: AgentId) -> AgentOut:
    del who
    with database(ctx) as conn:
        row = store.get(conn, agent_id)
    if row is None:
        raise HTTPException(404, f"no agent {agent_id!r}")
    return _out(row)


@router.post(
    "/agents",
    response_model=CredentialsOut,
    status_code=201,
    summary="Provision an agent: identity, sites, signing key, Kafka user (secrets shown once)",
)
def provision_agent(ctx: Ctx, who: Admin, body: AgentIn) -> CredentialsOut:
    try:
        row, creds = provisioning.provision(
            ctx.settings,
            body.agent_id,
            sites=body.sites,
            cities=body.cities,
            sectors=body.sectors,
            actor=f"api:{who.subject}",
            note=body.note,
            metrics_host=body.metrics_host,
            metrics_port=body.metrics_port,
        )
    except store.AgentError as exc:
        raise _refused(exc) from exc
    except ServiceError as exc:
        raise HTTPException(503, str(exc)) from exc
    return _credentials(ctx, row, creds)


@router.patch(
    "/agents/{agent_id}",
    response_model=AgentOut,
    summary="Add or remove the agent's sites or sectors (broker ACLs and ingest follow)",
)
def update_agent_sites(ctx: Ctx, who: Admin, agent_id: AgentId, body: AgentSitesIn) -> AgentOut:
    try:
        _, row = provisioning.update_sites(
            ctx.settings,
            agent_id,
            add_sites=body.add_sites,
            remove_sites=body.remove_sites,
            add_sectors=body.add_sectors,
            remove_sectors=body.remove_sectors,
            cities=body.cities,
            actor=f"api:{who.subject}",
        )
    except store.AgentError as exc:
        raise _refused(exc) from exc
    except ServiceError as exc:
        raise HTTPException(503, str(exc)) from exc
    return _out(row)


@router.post(
    "/agents/{agent_id}/rotate",
    response_model=CredentialsOut,
    summary="New signing key and Kafka password (secrets shown once)",
)
def rotate_agent(
    ctx: Ctx, who: Admin, agent_id: AgentId, body: RotateIn | None = None
) -> CredentialsOut:
    grace = timedelta(seconds=(body or RotateIn()).grace_s)
    try:
        row, creds = provisioning.rotate(
            ctx.settings, agent_id, actor=f"api:{who.subject}", grace=grace
        )
    except store.AgentError as exc:
        raise _refused(exc) from exc
    except ServiceError as exc:
        raise HTTPException(503, str(exc)) from exc
    return _credentials(ctx, row, creds)


@router.post("/agents/{agent_id}/revoke", response_model=AgentOut, summary="Revoke an agent")
def revoke_agent(ctx: Ctx, who: Admin, agent_id: AgentId) -> AgentOut:
    try:
        row = provisioning.revoke(ctx.settings, agent_id, actor=f"api:{who.subject}")
    except store.AgentError as exc:
        raise _refused(exc) from exc
    except ServiceError as exc:
        raise HTTPException(503, str(exc)) from exc
    return _out(row)


def _credentials(ctx: Ctx, row: Any, creds: provisioning.Credentials) -> CredentialsOut:
    return CredentialsOut(
        agent=_out(row),
        key_no=creds.key_no,
        signing_key=creds.signing_key,
        kafka_password=creds.kafka_password,
        config_toml=provisioning.agent_toml(ctx.settings, creds),
    )
