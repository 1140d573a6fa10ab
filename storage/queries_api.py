"""The API's reads and its key store: every SQL statement the HTTP layer runs lives here.

Readers use only the logical relations of ADR 0002 (``sites``, ``devices``, ``device_kinds``,
``metrics``, ``readings``, ``readings_1m``, ``readings_1h``, ``device_liveness``,
``coverage_daily``) plus ``agent_gaps`` and ``api_keys``. A relation that a storage mode has
not created yet raises :class:`RelationMissingError` naming it, so the API can answer 503 with the
name instead of a stack trace.

Lists use keyset pagination: each function takes the last key of the previous page (``after``)
and returns at most ``limit`` rows in key order; the caller asks for ``limit + 1`` to know
whether another page exists.

Scope limits (an API key restricted to some cities or sectors) arrive as ``Area``: ``None``
members mean "no limit". They are applied in SQL, so a row outside the caller's area is never
read, let alone returned.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from storage.coverage import SEEN_WITHIN

SCOPES = ("coverage:read", "telemetry:read", "admin")


class RelationMissingError(LookupError):
    """A relation the query needs does not exist in this database (yet)."""

    def __init__(self, relation: str) -> None:
        super().__init__(f"relation {relation!r} does not exist in this database")
        self.relation = relation


class Resolution(enum.StrEnum):
    RAW = "raw"
    MINUTE = "1m"
    HOUR = "1h"


class DeviceState(enum.StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    NEVER_SEEN = "never_seen"


@dataclass(frozen=True, slots=True)
class Area:
    """Which cities and sectors a caller may see; ``None`` = all."""

    cities: frozenset[str] | None = None
    sectors: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class AssetFilter:
    sector: str | None = None
    city: str | None = None
    kind: str | None = None
    state: DeviceState | None = None
    site_id: str | None = None


def _missing(exc: psycopg.errors.UndefinedTable) -> RelationMissingError:
    text = str(exc)
    name = text.split('"')[1] if text.count('"') >= 2 else text
    return RelationMissingError(name)


def _area_where(area: Area, params: dict[str, Any], alias: str = "s") -> list[sql.Composable]:
    parts: list[sql.Composable] = []
    if area.cities is not None:
        params["area_cities"] = sorted(area.cities)
        parts.append(sql.SQL("{}.city_code = ANY(%(area_cities)s)").format(sql.Identifier(alias)))
    if area.sectors is not None:
        params["area_sectors"] = sorted(area.sectors)
        parts.append(sql.SQL("{}.sector = ANY(%(area_sectors)s)").format(sql.Identifier(alias)))
    return parts


def _and(parts: Sequence[sql.Composable]) -> sql.Composable:
    return sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")


# the liveness rule of migration 066 (qilu_seen_within, storage.coverage.SEEN_WITHIN), at the
# request's ``now``: the one definition coverage, dashboards and alert rules use too
_ONLINE = SEEN_WITHIN.format(now="%(now)s")
_STATE = sql.SQL(
    "CASE WHEN l.last_seen IS NULL THEN 'never_seen' WHEN {} THEN 'online' ELSE 'offline' END"
).format(sql.SQL(_ONLINE))


# -- devices --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DeviceRow:
    device_id: str
    site_id: str
    kind: str
    sector: str
    city_code: str
    state: DeviceState
    last_seen: datetime | None
    expected_interval_s: float


def list_devices(
    conn: psycopg.Connection[TupleRow],
    now: datetime,
    area: Area,
    flt: AssetFilter,
    *,
    after: str | None,
    limit: int,
    device_id: str | None = None,
) -> list[DeviceRow]:
    """Devices with their liveness, ordered by device_id, starting after ``after``."""
    params: dict[str, Any] = {"now": now, "limit": limit}
    where = _area_where(area, params)
    for col, value in (
        ("s.sector", flt.sector),
        ("s.city_code", flt.city),
        ("d.kind", flt.kind),
        ("d.site_id", flt.site_id),
        ("d.device_id", device_id),
    ):
        if value is not None:
            key = col.replace(".", "_")
            params[key] = value
            where.append(sql.SQL(col + " = ") + sql.Placeholder(key))
    if after is not None:
        params["after"] = after
        where.append(sql.SQL("d.device_id > %(after)s"))
    if flt.state is not None:
        params["state"] = flt.state.value
        where.append(sql.SQL("({}) = %(state)s").format(_STATE))
    query = sql.SQL(
        "SELECT d.device_id, d.site_id, d.kind, s.sector, s.city_code, {state}, l.last_seen,"
        " extract(epoch FROM k.expected_interval)::float8"
        " FROM devices d JOIN sites s ON s.site_id = d.site_id"
        " JOIN device_kinds k ON k.kind = d.kind"
        " LEFT JOIN device_liveness l ON l.device_pk = d.device_pk"
        " WHERE {where} ORDER BY d.device_id LIMIT %(limit)s"
    ).format(state=_STATE, where=_and(where))
    rows = conn.execute(query, params).fetchall()
    return [DeviceRow(r[0], r[1], r[2], r[3], r[4], DeviceState(r[5]), r[6], r[7]) for r in rows]


@dataclass(frozen=True, slots=True)
class DeviceKey:
    device_pk: int
    device_id: str
    kind: str


def find_device(conn: psycopg.Connection[TupleRow], area: Area, device_id: str) -> DeviceKey | None:
    """The device's integer key, or None when unknown or outside ``area``."""
    params: dict[str, Any] = {"device_id": device_id}
    where = [sql.SQL("d.device_id = %(device_id)s"), *_area_where(area, params)]
    row = conn.execute(
        sql.SQL(
            "SELECT d.device_pk, d.device_id, d.kind FROM devices d"
            " JOIN sites s ON s.site_id = d.site_id WHERE {}"
        ).format(_and(where)),
        params,
    ).fetchone()
    return DeviceKey(row[0], row[1], row[2]) if row else None


# -- sites ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SiteRow:
    site_id: str
    name: str
    sector: str
    city_code: str
    attributes: dict[str, bool | int]
    devices: int
    online: int
    offline: int
    never_seen: int
    last_seen: datetime | None

    @property
    def state(self) -> DeviceState:
        """online: a device is online; offline: seen before, none online now; else never seen."""
        if self.online:
            return DeviceState.ONLINE
        if self.offline:
            return DeviceState.OFFLINE
        return DeviceState.NEVER_SEEN


_SITE_ATTRS = ("public", "networked", "voltage_kv", "gis", "one_key_control", "smart", "agri_base")


def list_sites(
    conn: psycopg.Connection[TupleRow],
    now: datetime,
    area: Area,
    flt: AssetFilter,
    *,
    after: str | None,
    limit: int,
    site_id: str | None = None,
) -> list[SiteRow]:
    """Sites with a liveness summary of their devices (only devices of ``flt.kind`` if set)."""
    params: dict[str, Any] = {"now": now, "limit": limit}
    where = _area_where(area, params)
    for col, value in (
        ("s.sector", flt.sector),
        ("s.city_code", flt.city),
        ("s.site_id", site_id or flt.site_id),
    ):
        if value is not None:
            key = col.replace(".", "_")
            params[key] = value
            where.append(sql.SQL(col + " = ") + sql.Placeholder(key))
    kind = sql.SQL("true")
    if flt.kind is not None:
        params["kind"] = flt.kind
        kind = sql.SQL("d.kind = %(kind)s")
        where.append(
            sql.SQL("EXISTS (SELECT 1 FROM devices d WHERE d.site_id = s.site_id AND {})").format(
                kind
            )
        )
    if after is not None:
        params["after"] = after
        where.append(sql.SQL("s.site_id > %(after)s"))
    state = {
        None: sql.SQL("true"),
        DeviceState.ONLINE: sql.SQL("a.online > 0"),
        DeviceState.OFFLINE: sql.SQL("a.online = 0 AND a.offline > 0"),
        DeviceState.NEVER_SEEN: sql.SQL("a.online = 0 AND a.offline = 0"),
    }[flt.state]
    attrs = sql.SQL(", ").join(sql.SQL("s.") + sql.Identifier(a) for a in _SITE_ATTRS)
    query = sql.SQL(
        "SELECT s.site_id, s.name, s.sector, s.city_code, {attrs},"
        " a.devices, a.online, a.offline, a.never_seen, a.last_seen"
        " FROM sites s CROSS JOIN LATERAL ("
        "  SELECT count(d.device_pk) AS devices,"
        "   count(*) FILTER (WHERE {online}) AS online,"
        "   count(*) FILTER (WHERE NOT {online}) AS offline,"
        "   count(d.device_pk) FILTER (WHERE l.last_seen IS NULL) AS never_seen,"
        "   max(l.last_seen) AS last_seen"
        "  FROM devices d JOIN device_kinds k ON k.kind = d.kind"
        "  LEFT JOIN device_liveness l ON l.device_pk = d.device_pk"
        "  WHERE d.site_id = s.site_id AND {kind}) a"
        " WHERE {where} AND {state} ORDER BY s.site_id LIMIT %(limit)s"
    ).format(attrs=attrs, kind=kind, where=_and(where), state=state, online=sql.SQL(_ONLINE))
    out = []
    for r in conn.execute(query, params):
        n = len(_SITE_ATTRS)
        out.append(
            SiteRow(
                r[0],
                r[1],
                r[2],
                r[3],
                dict(zip(_SITE_ATTRS, r[4 : 4 + n], strict=True)),
                *r[4 + n :],
            )
        )
    return out


# -- readings at three resolutions ----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Point:
    ts: datetime
    metric: str
    n: int
    min: float
    max: float
    avg: float
    last: float
    quality: int | None


def metric_ids(conn: psycopg.Connection[TupleRow]) -> dict[str, int]:
    return dict(conn.execute("SELECT key, metric_id FROM metrics").fetchall())


def device_readings(
    conn: psycopg.Connection[TupleRow],
    device_pk: int,
    resolution: Resolution,
    start: datetime,
    end: datetime,
    *,
    metric_id: int | None,
    after: tuple[datetime, int] | None,
    limit: int,
) -> list[Point]:
    """Readings of one device in [start, end), ordered by (time, metric), from the rollup
    matching ``resolution`` (raw readings for ``raw``).

    Rollups are read through ``qilu_readings_1m(start, end)`` / ``qilu_readings_1h(...)``
    (migration 007): the rows of the views ``readings_1m`` / ``readings_1h`` in that range,
    with the range known when the statement is planned, so only that range's partitions are
    planned and read (the views compare with the refresh watermark at run time and plan every
    partition)."""
    params: dict[str, Any] = {"pk": device_pk, "start": start, "end": end, "limit": limit}
    rel: sql.Composable
    if resolution is Resolution.RAW:
        rel, ts = sql.Identifier("readings"), sql.Identifier("ts")
        cols = sql.SQL("1::bigint, r.value, r.value, r.value, r.value, r.quality")
    else:
        fn = "qilu_readings_1m" if resolution is Resolution.MINUTE else "qilu_readings_1h"
        rel = sql.SQL("{}(%(start)s, %(end)s)").format(sql.Identifier(fn))
        ts = sql.Identifier("bucket")
        cols = sql.SQL("r.n, r.min, r.max, r.avg, r.last, NULL::smallint")
    where = [
        sql.SQL("r.device_pk = %(pk)s"),
        sql.SQL("r.{ts} >= %(start)s AND r.{ts} < %(end)s").format(ts=ts),
    ]
    if metric_id is not None:
        params["metric"] = metric_id
        where.append(sql.SQL("r.metric_id = %(metric)s"))
    if after is not None:
        params["after_ts"], params["after_metric"] = after
        where.append(
            sql.SQL("(r.{ts}, r.metric_id) > (%(after_ts)s, %(after_metric)s)").format(ts=ts)
        )
    query = sql.SQL(
        "SELECT r.{ts}, m.key, {cols}, r.metric_id FROM {rel} r"
        " JOIN metrics m ON m.metric_id = r.metric_id"
        " WHERE {where} ORDER BY r.{ts}, r.metric_id LIMIT %(limit)s"
    ).format(ts=ts, cols=cols, rel=rel, where=_and(where))
    try:
        # binary results: a page of 1,000 points parses in a third of the time text takes
        # (timestamps and floats), which is most of a series answer's time on the API side
        rows = conn.execute(query, params, binary=True).fetchall()
    except psycopg.errors.UndefinedTable as exc:
        raise _missing(exc) from exc
    except psycopg.errors.UndefinedFunction as exc:  # a database migrated before 007
        raise RelationMissingError(
            "qilu_readings_1m" if resolution is Resolution.MINUTE else "qilu_readings_1h"
        ) from exc
    return [Point(r[0], r[1], int(r[2]), r[3], r[4], r[5], r[6], r[7]) for r in rows]


def point_key(conn_rows: Sequence[Point], ids: dict[str, int]) -> tuple[datetime, int]:
    """The keyset position after the last point of a page."""
    last = conn_rows[-1]
    return last.ts, ids[last.metric]


# -- coverage history -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DailyValue:
    day: date
    numerator: int
    denominator: int
    value: float | None


def coverage_series(
    conn: psycopg.Connection[TupleRow], target_id: str, city_code: str, start: date, end: date
) -> list[DailyValue]:
    """One target's daily values for one area (``370000`` = province), days in [start, end]."""
    try:
        rows = conn.execute(
            "SELECT day, numerator, denominator, value FROM coverage_daily"
            " WHERE target_id = %s AND city_code = %s AND day BETWEEN %s AND %s ORDER BY day",
            (target_id, city_code, start, end),
        ).fetchall()
    except psycopg.errors.UndefinedTable as exc:
        raise _missing(exc) from exc
    return [DailyValue(r[0], int(r[1]), int(r[2]), r[3]) for r in rows]


def first_observations(
    conn: psycopg.Connection[TupleRow],
) -> dict[tuple[str, str], tuple[date, float]]:
    """The first day with a value per (target, city): the baseline of each trajectory."""
    try:
        rows = conn.execute(
            "SELECT DISTINCT ON (target_id, city_code) target_id, city_code, day, value"
            " FROM coverage_daily WHERE value IS NOT NULL"
            " ORDER BY target_id, city_code, day"
        ).fetchall()
    except psycopg.errors.UndefinedTable as exc:
        raise _missing(exc) from exc
    return {(r[0], r[1]): (r[2], float(r[3])) for r in rows}


# -- pipeline health ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Liveness:
    newest_reading: datetime | None
    devices: int
    online: int
    never_seen: int


def liveness_summary(conn: psycopg.Connection[TupleRow], now: datetime) -> Liveness:
    row = conn.execute(
        sql.SQL(
            "SELECT max(l.last_seen), count(*),"
            " count(*) FILTER (WHERE {}),"
            " count(*) FILTER (WHERE l.last_seen IS NULL)"
            " FROM devices d JOIN device_kinds k ON k.kind = d.kind"
            " LEFT JOIN device_liveness l ON l.device_pk = d.device_pk"
            " WHERE d.status <> 'decommissioned'"  # gone for good: neither silent nor unseen
        ).format(sql.SQL(_ONLINE)),
        {"now": now},
    ).fetchone()
    assert row is not None  # noqa: S101 - an aggregate always returns one row
    return Liveness(row[0], int(row[1]), int(row[2]), int(row[3]))


# -- gaps reported by agents ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class GapRow:
    agent_id: str
    boot_id: str
    gap_no: int | None
    device_id: str | None
    city_code: str | None
    sector: str | None
    start_ts: datetime
    end_ts: datetime
    dropped_readings: int
    reason: str
    received_at: datetime


GapKey = tuple[datetime, str, str, int]


def list_gaps(
    conn: psycopg.Connection[TupleRow],
    area: Area,
    *,
    start: datetime,
    end: datetime,
    agent_id: str | None,
    device_id: str | None,
    city: str | None,
    sector: str | None,
    after: GapKey | None,
    limit: int,
) -> list[GapRow]:
    """Gaps overlapping [start, end), ordered by (start_ts, agent_id, boot_id, gap_no).

    A gap without a device cannot be placed in a city or sector: callers limited to some
    cities or sectors, or filtering by one, do not see it."""
    params: dict[str, Any] = {"start": start, "end": end, "limit": limit}
    where: list[sql.Composable] = [
        sql.SQL("g.start_ts < %(end)s AND g.end_ts > %(start)s"),
        *_area_where(area, params),
    ]
    for col, value in (
        ("g.agent_id", agent_id),
        ("g.device_id", device_id),
        ("s.city_code", city),
        ("s.sector", sector),
    ):
        if value is not None:
            key = col.replace(".", "_")
            params[key] = value
            where.append(sql.SQL(col + " = ") + sql.Placeholder(key))
    if after is not None:
        params["a_ts"], params["a_agent"], params["a_boot"], params["a_no"] = after
        where.append(
            sql.SQL(
                "(g.start_ts, g.agent_id, g.boot_id::text, coalesce(g.gap_no, -1))"
                " > (%(a_ts)s, %(a_agent)s, %(a_boot)s, %(a_no)s)"
            )
        )
    query = sql.SQL(
        "SELECT g.agent_id, g.boot_id::text, g.gap_no, g.device_id, s.city_code, s.sector,"
        " g.start_ts,"
        " g.end_ts, g.dropped_readings, g.reason, g.received_at"
        " FROM agent_gaps g LEFT JOIN devices d ON d.device_id = g.device_id"
        " LEFT JOIN sites s ON s.site_id = d.site_id"
        " WHERE {where}"
        " ORDER BY g.start_ts, g.agent_id, g.boot_id::text, coalesce(g.gap_no, -1)"
        " LIMIT %(limit)s"
    ).format(where=_and(where))
    try:
        rows = conn.execute(query, params).fetchall()
    except psycopg.errors.UndefinedTable as exc:
        raise _missing(exc) from exc
    return [
        GapRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], int(r[8]), r[9], r[10]) for r in rows
    ]


# -- bulk export ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ExportFilter:
    start: datetime
    end: datetime
    city: str | None = None
    sector: str | None = None
    kind: str | None = None
    device_id: str | None = None
    metric: str | None = None


EXPORT_COLUMNS = ("ts", "device_id", "site_id", "city_code", "kind", "metric", "value", "quality")


def export_readings(
    conn: psycopg.Connection[TupleRow], area: Area, flt: ExportFilter, batch_rows: int
) -> Iterator[list[tuple[Any, ...]]]:
    """Raw readings in [start, end) with their device's site, city and kind, in batches of
    ``batch_rows``, read through a server-side cursor in one read-only snapshot."""
    params: dict[str, Any] = {"start": flt.start, "end": flt.end}
    where: list[sql.Composable] = [
        sql.SQL("r.ts >= %(start)s AND r.ts < %(end)s"),
        *_area_where(area, params),
    ]
    for col, value in (
        ("s.city_code", flt.city),
        ("s.sector", flt.sector),
        ("d.kind", flt.kind),
        ("d.device_id", flt.device_id),
        ("m.key", flt.metric),
    ):
        if value is not None:
            key = col.replace(".", "_")
            params[key] = value
            where.append(sql.SQL(col + " = ") + sql.Placeholder(key))
    query = sql.SQL(
        "SELECT r.ts, d.device_id, d.site_id, s.city_code, d.kind, m.key, r.value, r.quality"
        " FROM readings r JOIN devices d ON d.device_pk = r.device_pk"
        " JOIN sites s ON s.site_id = d.site_id JOIN metrics m ON m.metric_id = r.metric_id"
        " WHERE {where} ORDER BY r.ts, r.device_pk, r.metric_id"
    ).format(where=_and(where))
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        with conn.cursor(name="qilu_export") as cur:
            cur.itersize = batch_rows
            cur.execute(query, params)
            while batch := cur.fetchmany(batch_rows):
                yield batch


# -- API keys -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ApiKeyRow:
    key_id: str
    name: str
    secret_sha256: bytes
    scopes: tuple[str, ...]
    cities: tuple[str, ...]
    sectors: tuple[str, ...]
    rate_per_s: float | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None = field(default=None)


_KEY_COLS = (
    "key_id, name, secret_sha256, scopes, cities, sectors, rate_per_s, created_at, expires_at,"
    " revoked_at"
)


def _key_row(r: Sequence[Any]) -> ApiKeyRow:
    return ApiKeyRow(
        r[0], r[1], bytes(r[2]), tuple(r[3]), tuple(r[4]), tuple(r[5]), r[6], r[7], r[8], r[9]
    )


def insert_api_key(conn: psycopg.Connection[TupleRow], key: ApiKeyRow) -> None:
    with conn.transaction():
        conn.execute(
            "INSERT INTO api_keys (key_id, name, secret_sha256, scopes, cities, sectors,"
            " rate_per_s, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                key.key_id,
                key.name,
                key.secret_sha256,
                list(key.scopes),
                list(key.cities),
                list(key.sectors),
                key.rate_per_s,
                key.expires_at,
            ),
        )


def get_api_key(conn: psycopg.Connection[TupleRow], key_id: str) -> ApiKeyRow | None:
    row = conn.execute(
        f"SELECT {_KEY_COLS} FROM api_keys WHERE key_id = %s",  # noqa: S608 - fixed columns
        (key_id,),
    ).fetchone()
    return _key_row(row) if row else None


def list_api_keys(conn: psycopg.Connection[TupleRow], *, include_revoked: bool) -> list[ApiKeyRow]:
    where = "true" if include_revoked else "revoked_at IS NULL"
    rows = conn.execute(
        f"SELECT {_KEY_COLS} FROM api_keys WHERE {where} ORDER BY created_at, key_id"  # noqa: S608
    ).fetchall()
    return [_key_row(r) for r in rows]


def revoke_api_key(conn: psycopg.Connection[TupleRow], key_id: str, now: datetime) -> bool:
    """Mark a key revoked; False when there is no such key (revoking twice is harmless)."""
    with conn.transaction():
        cur = conn.execute(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, %s) WHERE key_id = %s",
            (now, key_id),
        )
        return cur.rowcount == 1
