"""``/v1/agent``: what an edge agent may ask the platform about itself, signed with its key.

No API key here: the agent authenticates each request with its Ed25519 signing key (the one
that signs its envelopes; the platform holds the public half), see
:func:`qilu.signing.request_headers`. A request is accepted within ``REQUEST_WINDOW_S`` of the
server's clock and each nonce once per process, so a captured request cannot be replayed; a
revoked agent or key is refused (docs/adr/0010-agent-authentication.md).

``POST /v1/agent/devices/check`` answers, for the device ids an agent is configured with,
whether each is registered, at which site and in which sector, and whether that site and
sector are the agent's own: ``check-config --online`` and the agent's check at start.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from api.deps import PROBLEMS, ApiContext, Ctx, database
from qilu import signing
from storage import agents as store

router = APIRouter(prefix="/v1/agent", tags=["agent"], responses=PROBLEMS)
CHECK_PATH = "/v1/agent/devices/check"
MAX_DEVICES = 50_000


class DeviceCheckIn(BaseModel):
    device_ids: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        max_length=MAX_DEVICES
    )


class DeviceOut(BaseModel):
    device_id: str
    known: bool  # registered on the platform
    site_id: str | None
    sector: str | None
    own_site: bool  # the site is one of the agent's: its readings are accepted
    own_sector: bool  # the agent may write the sector's topic


class DeviceCheckOut(BaseModel):
    agent_id: str
    sites: list[str]
    sectors: list[str]
    devices: list[DeviceOut]


def _refused(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "QiluAgentSignature"})


def _us(t: datetime | None) -> int | None:
    return None if t is None else int(t.timestamp() * 1_000_000)


def _nonces(request: Request) -> signing.NonceCache:
    cache: signing.NonceCache | None = getattr(request.app.state, "agent_nonces", None)
    if cache is None:  # one per application (process)
        cache = signing.NonceCache()
        request.app.state.agent_nonces = cache
    return cache


def _check(ctx: ApiContext, req: signing.SignedRequest, body: bytes, now: float) -> DeviceCheckOut:
    with database(ctx) as conn:
        row = store.request_key(conn, req.agent_id, req.key_no)
        if row is not None and row.agent_revoked_at is not None:
            raise _refused(f"agent {req.agent_id!r} is revoked")
        key = None if row is None else signing.agent_key(row.public_key, _us(row.key_revoked_at))
        reason = signing.verify_request(req, key, "POST", CHECK_PATH, body, now_s=now)
        if reason is not None:
            raise _refused(f"signed request refused: {reason}")
        try:
            asked = DeviceCheckIn.model_validate(json.loads(body))
        except (ValueError, ValidationError) as exc:
            raise HTTPException(422, f"body: {str(exc).splitlines()[0]}") from exc
        found = store.device_check(conn, req.agent_id, asked.device_ids)
    sites, sectors = set(found.sites), set(found.sectors)
    devices = []
    for device_id in dict.fromkeys(asked.device_ids):  # each once, in the order asked
        site, sector = found.devices.get(device_id, (None, None))
        devices.append(
            DeviceOut(
                device_id=device_id,
                known=site is not None,
                site_id=site,
                sector=sector,
                own_site=site in sites,
                own_sector=sector in sectors,
            )
        )
    return DeviceCheckOut(
        agent_id=req.agent_id, sites=list(found.sites), sectors=list(found.sectors), devices=devices
    )


@router.post(
    "/devices/check",
    response_model=DeviceCheckOut,
    summary="An agent asks whether its configured devices exist and are its own (signed)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": DeviceCheckIn.model_json_schema()}},
        }
    },
)
async def check_devices(request: Request, ctx: Ctx) -> DeviceCheckOut:
    """Authenticated by the agent's signature headers (``X-Qilu-Agent``, ``X-Qilu-Key``,
    ``X-Qilu-Time``, ``X-Qilu-Nonce``, ``X-Qilu-Signature``) over the method, path, time,
    nonce and body; ``401`` names what was wrong (``unsigned``, ``stale``, ``replayed``,
    ``unknown_key``, ``revoked_key``, ``bad_signature``, or a revoked agent)."""
    body = await request.body()
    now = time.time()
    req = signing.parse_request(request.headers)
    if req is None:
        raise _refused("signed request refused: unsigned (signature headers missing or malformed)")
    if abs(now - req.ts) > signing.REQUEST_WINDOW_S:
        raise _refused("signed request refused: stale (check the agent's clock)")
    answer = await run_in_threadpool(_check, ctx, req, body, now)
    # the nonce is spent only by an authentic request: nobody can burn an agent's nonces
    if not _nonces(request).first_use(req.agent_id, req.nonce, now_s=now):
        raise _refused("signed request refused: replayed")
    return answer
