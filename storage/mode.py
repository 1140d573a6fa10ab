"""Which storage mode a database runs in: ``timescale`` or ``postgres``.

The mode is chosen once, when a database is first migrated, and recorded in ``storage_meta``;
later runs read it back. ``auto`` picks timescale when the ``timescaledb`` extension is
installed in the database or can be created there, otherwise postgres. ``QILU_DB__MODE``
forces a mode: forcing timescale where the extension is unavailable, or a mode other than the
one recorded, refuses with a message naming the key.

Detection never breaks the migration's connection: ``shared_preload_libraries`` is read first
(creating the extension while it is not preloaded makes the server close the connection), and
whether the extension can be created is tried on a connection of its own, rolled back. The
decision itself is :func:`plan`, pure.

Detection needs no privilege beyond owning the database: a database that already has a mode is
never asked about TimescaleDB again, and ``shared_preload_libraries`` is read only by a role
allowed to (a superuser or a member of ``pg_read_all_settings``). For any other role whether
the library is preloaded is unknown, and the probe on its own connection answers it.

The two modes expose the same logical relations (docs/adr/0002-logical-storage-relations.md);
how they are built differs (docs/adr/0003-storage-modes.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class TimescaleFacts:
    """What the server says about TimescaleDB, read with one query that cannot fail."""

    installed: bool  # created in this database (pg_extension)
    available: bool  # the package is on the server (pg_available_extensions)
    # named in shared_preload_libraries, which it must be to be created; None when this role
    # may not read that setting (then the probe on its own connection finds out)
    preloaded: bool | None


def read_facts(conn: psycopg.Connection[TupleRow]) -> TimescaleFacts:
    # The setting is read only under the CASE: for a role without pg_read_all_settings (a
    # database owner on managed PostgreSQL) current_setting() would raise.
    row = conn.execute(
        "SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'timescaledb'),"
        " EXISTS (SELECT FROM pg_available_extensions WHERE name = 'timescaledb'),"
        " CASE WHEN pg_has_role(current_user, 'pg_read_all_settings', 'USAGE')"
        "  THEN 'timescaledb' = ANY (string_to_array("
        "   replace(current_setting('shared_preload_libraries'), ' ', ''), ',')) END"
    ).fetchone()
    if not row:
        return TimescaleFacts(False, False, False)
    return TimescaleFacts(bool(row[0]), bool(row[1]), None if row[2] is None else bool(row[2]))


def timescale_installed(conn: psycopg.Connection[TupleRow]) -> bool:
    return read_facts(conn).installed


ENABLE_HINT = (
    "To use TimescaleDB, add it to shared_preload_libraries in postgresql.conf "
    "(shared_preload_libraries = 'timescaledb', or run timescaledb-tune), restart the server "
    "and migrate a new database"
)


@dataclass(frozen=True, slots=True)
class Plan:
    """What :func:`plan` decided: the mode, whether the extension must be created first (the
    caller probes that on a connection of its own), and a note for the operator."""

    mode: StorageMode
    create: bool = False
    note: str | None = None


def plan(facts: TimescaleFacts, configured: StorageMode, was: StorageMode | None) -> Plan:
    """The storage mode of a database from the facts, without I/O.

    Raises ConfigError (key ``db.mode``) when the configuration cannot be honoured. Creating
    the extension while it is not preloaded makes the server close the connection, so that
    case never gets as far as an attempt."""
    if was is not None and configured is not StorageMode.AUTO and was is not configured:
        raise ConfigError(
            "db.mode",
            f"this database was migrated in {was.value} mode; it cannot switch to "
            f"{configured.value} (unset QILU_DB__MODE or use a new database)",
        )
    if was is not None:
        return Plan(was)
    if configured is StorageMode.POSTGRES:
        return Plan(StorageMode.POSTGRES)
    if facts.installed:
        return Plan(StorageMode.TIMESCALE)
    forced = configured is StorageMode.TIMESCALE
    if not facts.available:
        if forced:
            raise ConfigError(
                "db.mode",
                "timescale mode needs the timescaledb extension, which this server does not "
                "have (install the TimescaleDB package for this PostgreSQL version)",
            )
        return Plan(StorageMode.POSTGRES)
    if facts.preloaded is False:
        why = "the timescaledb package is installed but not in shared_preload_libraries"
        if forced:
            raise ConfigError("db.mode", f"timescale mode: {why}. {ENABLE_HINT}")
        return Plan(StorageMode.POSTGRES, note=f"{why}; using postgres mode. {ENABLE_HINT}")
    return Plan(StorageMode.TIMESCALE, create=True)


CREATE_EXTENSION = "CREATE EXTENSION IF NOT EXISTS timescaledb"


def probe_on_own_connection(
    conn: psycopg.Connection[TupleRow], statement: str = CREATE_EXTENSION
) -> str | None:
    """Run ``statement`` in a transaction that is rolled back, on a new connection to the same
    server and database as ``conn``: None if it worked, the reason otherwise. Whatever the
    server does to that connection (an error, or closing it), ``conn`` is untouched."""
    try:
        with (
            psycopg.connect(
                conn.info.dsn, password=conn.info.password, prepare_threshold=None
            ) as probe,
            probe.transaction(force_rollback=True),
        ):
            probe.execute(statement)
    except psycopg.Error as exc:
        text = str(exc).strip()
        return text.splitlines()[0] if text else type(exc).__name__
    return None


def resolve(
    conn: psycopg.Connection[TupleRow],
    configured: StorageMode,
    *,
    facts: TimescaleFacts | None = None,
    probe: Callable[[psycopg.Connection[TupleRow]], str | None] = probe_on_own_connection,
) -> StorageMode:
    """Decide the mode of this database (creating the extension when timescale is chosen).

    Call inside the migration transaction. Raises ConfigError (key ``db.mode``) when the
    configuration cannot be honoured. ``facts`` and ``probe`` stand in for the server's answers
    in tests (a server with TimescaleDB installed but not preloaded is not at hand there).
    """
    was = recorded(conn)  # decided at the first migration: the server is not asked again
    if facts is None:
        facts = read_facts(conn) if was is None else TimescaleFacts(False, False, None)
    got = plan(facts, configured, was)
    if got.note is not None:
        logger.warning("%s", got.note)
    if got.create:
        reason = probe(conn)
        if reason is None:
            conn.execute(CREATE_EXTENSION)
        elif configured is StorageMode.TIMESCALE:
            raise ConfigError(
                "db.mode",
                f"timescale mode needs the timescaledb extension, which this server cannot "
                f"create: {reason}. {ENABLE_HINT}",
            )
        else:
            logger.warning(
                "timescaledb is available but cannot be created (%s); using postgres mode. %s",
                reason,
                ENABLE_HINT,
            )
            return StorageMode.POSTGRES
    if got.mode is StorageMode.TIMESCALE:
        ensure_timescale_features(conn)
    return got.mode


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
    """None when community features work; the reason otherwise.

    Asks TimescaleDB whether its community module is loaded (``tsl_loaded()``), a question
    that cannot fail, so a migration leaves no ERROR in the server log."""
    row = conn.execute(
        "SELECT coalesce(to_regprocedure('_timescaledb_functions.tsl_loaded()'),"
        " to_regprocedure('_timescaledb_internal.tsl_loaded()'))::text,"
        " current_setting('timescaledb.license', true)"
    ).fetchone()
    if not row or row[0] is None:
        return "no tsl_loaded() function: not a TimescaleDB 2 server"
    fn, license_ = str(row[0]).removesuffix("()"), row[1]
    loaded = conn.execute(f"SELECT {fn}()").fetchone()  # a name from the catalog, not input
    if loaded and loaded[0]:
        return None
    return f"the community module is not loaded (timescaledb.license = {license_!r})"


def current(conn: psycopg.Connection[TupleRow]) -> StorageMode:
    """The mode of a migrated database (postgres if it predates mode recording)."""
    return recorded(conn) or StorageMode.POSTGRES
