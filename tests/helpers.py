"""Small helpers shared by the integration tests."""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg

from qilu.settings import DatabaseSettings, Settings


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


def signing_headers(
    settings: Settings, agent_id: str, sites: list[str] | None = None
) -> Callable[[bytes], list[tuple[str, bytes]]]:
    """Provision ``agent_id`` (for ``sites``, default every site in the database) and return
    what makes the signature headers of its records: the ingest refuses unsigned envelopes
    (docs/adr/0010-agent-authentication.md)."""
    from qilu.agents import provision_province

    if sites is None:
        with psycopg.connect(settings.db.conninfo(), prepare_threshold=None) as conn:
            sites = [r[0] for r in conn.execute("SELECT site_id FROM sites")]
    return provision_province(settings, {agent_id: sites}, actor="test")[agent_id].headers
