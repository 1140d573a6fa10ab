"""Connections: one place that opens them, with the options every engine needs."""

from __future__ import annotations

import psycopg
from psycopg.rows import TupleRow

from qilu.settings import DatabaseSettings


def connect(db: DatabaseSettings, *, autocommit: bool = False) -> psycopg.Connection[TupleRow]:
    # prepare_threshold=None: server-side prepared statements break on the TimescaleDB test
    # engine (session state survives reconnects) and buy little for our set-based statements.
    return psycopg.connect(db.conninfo(), autocommit=autocommit, prepare_threshold=None)


def has_timescaledb(conn: psycopg.Connection[TupleRow]) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    return bool(row and row[0])
