"""Named restore points: marks in the WAL that ``qilu restore --point NAME`` can go back to.

The platform creates one before applying migrations (storage/migrate.py) and before every
registry import (storage/registry_admin.py), named ``qilu-<what>-<UTC time>``; an operator
adds their own with ``qilu backup point NAME`` (docs/operations.md).
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

import psycopg

from qilu.errors import ConfigError

logger = logging.getLogger(__name__)
RESTORE_POINT = re.compile(r"^[A-Za-z0-9_.:-]{1,63}$")


def create_restore_point(conn: psycopg.Connection[Any], name: str) -> str | None:
    """``pg_create_restore_point(name)`` when the server can (WAL level replica or more,
    a role allowed to, not a standby, not the TimescaleDB test engine): the WAL position,
    else None. Runs in its own savepoint, so a refusal leaves the caller's transaction as
    it was."""
    if not RESTORE_POINT.match(name):
        raise ConfigError("restore point", f"not a restore point name: {name!r}")
    try:
        with conn.transaction():
            row = conn.execute("SELECT pg_create_restore_point(%s)::text", (name,)).fetchone()
    except (
        psycopg.errors.InsufficientPrivilege,
        psycopg.errors.ObjectNotInPrerequisiteState,
        psycopg.errors.UndefinedFunction,
        psycopg.errors.FeatureNotSupported,
    ) as exc:
        logger.debug("no restore point %s: %s", name, str(exc).strip())
        return None
    return str(row[0]) if row else None


def restore_point_name(what: str, now: datetime) -> str:
    """``qilu-<what>-<UTC time>``, the names the platform gives its restore points."""
    return f"qilu-{what}-{now.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}"
