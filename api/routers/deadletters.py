"""``/v1/admin/deadletters``: what the ingest refused, the same answers as ``qilu deadletters``.

The summary comes from the table the ingest writes with each batch (exactly once); the records
from the dead-letter topic itself, within its retention (docs/adr/0012-dead-letters.md).
Refusals are not tied to a city or sector (an undecodable record names none), so these
endpoints need an admin key without city or sector limits.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, HTTPException, Path, Query
from kafka.errors import KafkaError
from pydantic import BaseModel, Field

from api.auth import Principal
from api.deps import PROBLEMS, Admin, Ctx, database, unavailable
from storage import deadletters as store
from stream.deadletter import describe
from stream.deadletter_read import fetch, tail

router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=PROBLEMS)


class DeadLetterGroupOut(BaseModel):
    """One group of refusals; the dimensions not grouped by are null."""

    reason: str | None
    agent_id: str | None = Field(description="'' when the record did not say")
    device_id: str | None = Field(description="'' for a refusal of the whole envelope")
    records: int = Field(description="dead-letter records (envelopes) of the group")
    readings: int = Field(description="readings refused (a whole refused envelope: all of its)")
    first: datetime = Field(description="first minute with a refusal of the group")
    last: datetime
    example_source: str = Field(description="<topic>/<partition>/<offset> of a recent original")
    example_detail: str


class DeadLetterRecordOut(BaseModel):
    dead_letter: str = Field(description="PARTITION/OFFSET in the dead-letter topic")
    refused_at: datetime
    reason: str
    agent_id: str
    detail: str
    source: str


def _whole_province(who: Principal) -> None:
    if not who.whole_province or who.area.sectors is not None:
        raise HTTPException(403, "dead letters need an admin key without city/sector limits")


@router.get(
    "/deadletters",
    response_model=list[DeadLetterGroupOut],
    summary="Refused records and readings in a time window, grouped",
)
def deadletter_summary(
    ctx: Ctx,
    who: Admin,
    start: Annotated[datetime | None, Query(description="default: end - 24 hours")] = None,
    end: Annotated[datetime | None, Query(description="default: now")] = None,
    by: Annotated[
        list[store.Dimension] | None,
        Query(description="group by these (repeatable); default reason and agent"),
    ] = None,
    reason: Annotated[str | None, Query(max_length=64)] = None,
    agent_id: Annotated[str | None, Query(max_length=256)] = None,
    device_id: Annotated[str | None, Query(max_length=256)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeadLetterGroupOut]:
    """What the ingest refused in [start, end), by the minute it refused it, most readings
    first: whole envelopes (malformed, unsigned, unknown_agent...; no device) and single
    readings (unknown_device, value_out_of_range...; with the device)."""
    _whole_province(who)
    last = end or datetime.now(UTC)
    try:
        first = start or last - timedelta(hours=24)
    except OverflowError as exc:
        raise HTTPException(422, "query.end: too early for a 24-hour window") from exc
    for name, ts in (("start", first), ("end", last)):
        if ts.tzinfo is None:
            raise HTTPException(422, f"query.{name}: a UTC offset is required (e.g. ...Z)")
    if first >= last:
        raise HTTPException(400, "start must be before end")
    dims = by or [store.Dimension.REASON, store.Dimension.AGENT]
    with database(ctx) as conn:
        rows = store.summary(
            conn,
            start=first,
            end=last,
            by=dims,
            reason=reason,
            agent_id=agent_id,
            device_id=device_id,
            limit=limit,
        )
    return [
        DeadLetterGroupOut(
            reason=r.reason,
            agent_id=r.agent_id,
            device_id=r.device_id,
            records=r.records,
            readings=r.readings,
            first=r.first,
            last=r.last,
            example_source=r.example_source,
            example_detail=r.example_detail,
        )
        for r in rows
    ]


@router.get(
    "/deadletters/records",
    response_model=list[DeadLetterRecordOut],
    summary="The newest dead-letter records (from the topic)",
)
async def deadletter_tail(
    ctx: Ctx,
    who: Admin,
    n: Annotated[int, Query(ge=1, le=500, description="how many")] = 20,
    reason: Annotated[str | None, Query(max_length=64)] = None,
    agent_id: Annotated[str | None, Query(max_length=256)] = None,
) -> list[DeadLetterRecordOut]:
    """The newest ``n`` records of the dead-letter topic (among the last 10,000 of each
    partition), oldest first; ``dead_letter`` is what ``.../records/{partition}/{offset}``
    takes."""
    _whole_province(who)
    try:
        letters = await anyio.to_thread.run_sync(
            lambda: tail(ctx.settings.kafka, n, reason=reason, agent=agent_id)
        )
    except KafkaError as exc:
        raise unavailable(f"the broker is not reachable: {exc}", 5) from exc
    return [
        DeadLetterRecordOut(
            dead_letter=f"{x.partition}/{x.offset}",
            refused_at=datetime.fromtimestamp(x.timestamp_ms / 1000, UTC),
            reason=x.reason,
            agent_id=x.agent_id,
            detail=x.headers.get("qilu.detail", ""),
            source=x.headers.get("qilu.source", ""),
        )
        for x in letters
    ]


@router.get(
    "/deadletters/records/{partition}/{offset}",
    summary="One dead-letter record, decoded",
)
async def deadletter_record(
    ctx: Ctx,
    who: Admin,
    partition: Annotated[int, Path(ge=0)],
    offset: Annotated[int, Path(ge=0)],
) -> dict[str, object]:
    """Its reason and detail, where the original came from, and the envelope decoded with each
    refused reading marked (``refused``, ``why``); undecodable bytes as hex."""
    _whole_province(who)
    try:
        letter = await anyio.to_thread.run_sync(
            lambda: fetch(ctx.settings.kafka, partition, offset)
        )
    except KafkaError as exc:
        raise unavailable(f"the broker is not reachable: {exc}", 5) from exc
    if letter is None:
        raise HTTPException(404, f"no dead-letter record {partition}/{offset} (or past retention)")
    return describe(letter)
