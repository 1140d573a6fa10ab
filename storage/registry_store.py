"""The registry in the database: bulk upsert of sites and devices, and the ingest's lookup index."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone

import psycopg
from psycopg.rows import TupleRow

from qilu.registry import Registry

logger = logging.getLogger(__name__)
# the province's calendar (as storage.coverage.PROVINCE_TZ; not imported: coverage imports more)
PROVINCE_TZ = timezone(timedelta(hours=8), "UTC+08:00")

SITE_COLS = (  # the columns of ``sites`` the registry writes (one list)
    "site_id",
    "sector",
    "city_code",
    "name",
    "public",
    "networked",
    "voltage_kv",
    "gis",
    "one_key_control",
    "smart",
    "agri_base",
)


def load_registry(conn: psycopg.Connection[TupleRow], reg: Registry) -> tuple[int, int]:
    """Upsert every site and device of ``reg`` in one transaction; returns (sites, devices)."""
    cols = ", ".join(SITE_COLS)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in SITE_COLS[1:])
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE _sites (LIKE sites INCLUDING DEFAULTS) ON COMMIT DROP;"
            "CREATE TEMP TABLE _devices (device_id text, site_id text, kind text) ON COMMIT DROP"
        )
        with cur.copy(f"COPY _sites ({cols}) FROM STDIN") as copy:
            for s in reg.sites:
                copy.write_row(
                    (
                        s.site_id,
                        s.sector.value,
                        s.city_code,
                        s.name,
                        s.public,
                        s.networked,
                        s.voltage_kv,
                        s.gis,
                        s.one_key_control,
                        s.smart,
                        s.agri_base,
                    )
                )
        with cur.copy("COPY _devices (device_id, site_id, kind) FROM STDIN") as copy:
            for d in reg.devices:
                copy.write_row((d.device_id, d.site_id, d.kind))
        cur.execute(
            f"INSERT INTO sites ({cols}) SELECT {cols} FROM _sites"  # noqa: S608 - fixed names
            f" ON CONFLICT (site_id) DO UPDATE SET {updates}"
        )
        cur.execute(
            "INSERT INTO devices (device_id, site_id, kind)"
            " SELECT device_id, site_id, kind FROM _devices"
            " ON CONFLICT (device_id) DO UPDATE SET site_id = EXCLUDED.site_id,"
            " kind = EXCLUDED.kind"
        )
    logger.info("registry loaded: %d sites, %d devices", len(reg.sites), len(reg.devices))
    return len(reg.sites), len(reg.devices)


@dataclass(frozen=True, slots=True)
class DeviceIndex:
    """What ingest needs to validate and store a reading without a query per record."""

    devices: dict[str, tuple[int, str]]  # device_id -> (device_pk, kind)
    metrics: dict[str, int]  # metric key -> metric_id
    # decommissioned device_id -> first instant (µs since the epoch) whose readings are refused:
    # the start of the decommissioning's effective day in the province (docs/registry.md)
    retired_us: dict[str, int] = field(default_factory=dict)
    sites: dict[str, str] = field(default_factory=dict)  # device_id -> site_id (foreign_site)


def load_device_index(conn: psycopg.Connection[TupleRow]) -> DeviceIndex:
    devices: dict[str, tuple[int, str]] = {}
    sites: dict[str, str] = {}
    for device_id, pk, kind, site_id in conn.execute(
        "SELECT device_id, device_pk, kind, site_id FROM devices"
    ):
        devices[device_id] = (pk, kind)
        sites[device_id] = site_id
    metrics: dict[str, int] = dict(conn.execute("SELECT key, metric_id FROM metrics").fetchall())
    retired = {
        r[0]: _day_start_us(r[1])
        for r in conn.execute(
            "SELECT d.device_id, v.valid_from FROM devices d JOIN device_versions v"
            " ON v.device_pk = d.device_pk AND v.valid_to IS NULL"
            " WHERE d.status = 'decommissioned'"
        )
    }
    return DeviceIndex(devices, metrics, retired, sites)


def _day_start_us(day: date) -> int:
    """Midnight of ``day`` in the province (UTC+8), in µs since the epoch."""
    start = datetime.combine(day, time.min, tzinfo=PROVINCE_TZ)
    return int(start.timestamp()) * 1_000_000
