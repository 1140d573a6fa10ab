"""Small helpers shared by the integration tests."""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg

from qilu.settings import DatabaseSettings


def wait_for(check: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def scalar(dbs: DatabaseSettings, query: str) -> int:
    with psycopg.connect(dbs.conninfo(), prepare_threshold=None) as conn:
        row = conn.execute(query.encode()).fetchone()
        return int(row[0]) if row and row[0] is not None else 0
