"""Which storage mode a database runs in: ``timescale`` or ``postgres``.

The mode is chosen once, when a database is first migrated, and recorded in ``storage_meta``;
later runs read it back. ``auto`` picks timescale when the ``timescaledb`` extension is
installed in the database or can be created there, otherwise postgres. ``QILU_DB__MODE``
forces a mode: forcing timescale where the extension is unavailable, or a mode other than the
one recorded, refuses with a message naming the key.

The two modes expose the same logical relations (docs/adr/0002-logical-storage-relations.md);
how they are built differs (docs/adr/0003-storage-modes.md).
"""

from __future__ import annotations

import logging

import psycopg
from psycopg.rows import TupleRow

from qilu.errors import ConfigError
from qilu.settings import StorageMode

logger = logging.getLogger(__name__)

META_TABLE = "storage_meta"


def recorded(conn: psycopg.Connection[TupleRow]) -> StorageMode | None:
    """The mode this database was migrated in, or None before the first migration."""
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (META_TABLE,)).fetchone()
    if not row or not row[0]:
        return None
    got = conn.execute(f"SELECT mode FROM {META_TABLE}").fetchone()  # noqa: S608 - constant
    return StorageMode(got[0]) if got else None


def record(conn: psycopg.Connection[TupleRow], mode: StorageMode) -> None:
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {META_TABLE} ("
        " mode text NOT NULL CHECK (mode IN ('timescale', 'postgres')),"
        " singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton))"
    )
    conn.execute(
        f"INSERT INTO {META_TABLE} (mode) VALUES (%s)"  # noqa: S608 - constant name
        " ON CONFLICT (singleton) DO NOTHING",
        (mode.value,),
    )


def timescale_installed(conn: psycopg.Connection[TupleRow]) -> bool:
    row = conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    return bool(row and row[0])


def timescale_available(conn: psycopg.Connection[TupleRow]) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    return bool(row and row[0])


def _try_create_extension(conn: psycopg.Connection[TupleRow]) -> str | None:
    """Create the extension in a savepoint; returns None on success or the server's reason."""
    try:
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def resolve(conn: psycopg.Connection[TupleRow], configured: StorageMode) -> StorageMode:
    """Decide the mode of this database (creating the extension when timescale is chosen).

    Call inside the migration transaction. Raises ConfigError (key ``db.mode``) when the
    configuration cannot be honoured.
    """
    was = recorded(conn)
    if configured is StorageMode.AUTO:
        if was is not None:
            mode = was
        elif timescale_installed(conn):
            mode = StorageMode.TIMESCALE
        elif timescale_available(conn):
            reason = _try_create_extension(conn)
            if reason is None:
                mode = StorageMode.TIMESCALE
            else:
                logger.warning(
                    "timescaledb is available but cannot be created (%s); using postgres mode",
                    reason,
                )
                mode = StorageMode.POSTGRES
        else:
            mode = StorageMode.POSTGRES
    else:
        if was is not None and was is not configured:
            raise ConfigError(
                "db.mode",
                f"this database was migrated in {was.value} mode; it cannot switch to "
                f"{configured.value} (unset QILU_DB__MODE or use a new database)",
            )
        mode = configured
    if mode is StorageMode.TIMESCALE:
        if not timescale_installed(conn):
            reason = _try_create_extension(conn)
            if reason is not None:
                raise ConfigError(
                    "db.mode",
                    f"timescale mode needs the timescaledb extension, which this server "
                    f"cannot create: {reason}",
                )
        ensure_timescale_features(conn)
    return mode


def ensure_timescale_features(conn: psycopg.Connection[TupleRow]) -> None:
    """Refuse timescale mode when compression, continuous aggregates and policies are off.

    They live in TimescaleDB's community-licensed module, which the server loads when
    ``timescaledb.license = 'timescale'`` (the default of the official images). The test
    engine loads it only when the extension is created in the running process (see
    docs/storage.md); after a restart on an existing data directory it answers like an
    Apache-only build, and this check says so instead of failing half-way through a migration.
    """
    reason = probe_features(conn)
    if reason is not None:
        raise ConfigError(
            "db.mode",
            "timescale mode needs TimescaleDB's community features (compression, continuous "
            f"aggregates, policies), which this server refuses: {reason}. Set "
            "timescaledb.license = 'timescale' in the server configuration",
        )


def probe_features(conn: psycopg.Connection[TupleRow]) -> str | None:
    """None when community features work; the server's message otherwise."""
    try:
        with conn.transaction():
            # a community-licensed function on a table that is not a hypertable: with the
            # module loaded this fails with "not a hypertable", without it with "license"
            conn.execute(
                "SELECT remove_retention_policy('pg_catalog.pg_class'::regclass, if_exists => true)"
            )
    except psycopg.errors.FeatureNotSupported as exc:
        return str(exc).strip().splitlines()[0]
    except psycopg.Error:
        return None
    return None


def current(conn: psycopg.Connection[TupleRow]) -> StorageMode:
    """The mode of a migrated database (postgres if it predates mode recording)."""
    return recorded(conn) or StorageMode.POSTGRES
