"""The ingest's view of the agent registry: who may send, with which keys, for which sites.

A snapshot (:class:`qilu.signing.AgentDirectory`) checked for changes every
``ingest.agents_refresh_s`` (one tiny query on a version counter, a full reload only when it
moved), so an agent revoked mid-run is refused from the next refresh on. An unknown agent or
key triggers an early check made after the envelope arrived (waiting out the rest of
``EARLY_CHECK_S`` if the last check was more recent), so an envelope signed with a key that
was committed before it was sent is never refused as unknown; a flood of unknown agents costs
at most one tiny query per ``EARLY_CHECK_S``. Readings of a site outside the agent's list
trigger the same early check (:meth:`AgentAuth.sites_after_refresh`), at most once per agent
per ``ingest.agents_refresh_s``, so a site just given to an agent (``qilu agents update``) is
not refused as foreign while the snapshot is older than the change.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psycopg

from qilu.contract import to_us
from qilu.settings import DatabaseSettings
from qilu.signing import AgentDirectory, AgentEntry, agent_key, verify

logger = logging.getLogger(__name__)
EARLY_CHECK_S = 0.05  # at most this often on unknown agents/keys

# given the version we hold, a new directory, or None when nothing changed
DirectoryLoader = Callable[[int], AgentDirectory | None]


@dataclass(frozen=True, slots=True)
class Verdict:
    reason: str | None  # None: authentic
    detail: str
    sites: frozenset[str] | None = None


class AgentAuth:
    def __init__(self, load: DirectoryLoader, refresh_s: float) -> None:
        self._load = load
        self._refresh_s = refresh_s
        self._dir = AgentDirectory()
        self._checked = float("-inf")
        self._site_rechecks: dict[str, float] = {}  # agent id -> last early check for sites
        self.refresh(force=True)

    def refresh(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < self._refresh_s:
            return
        self._checked = now
        new = self._load(self._dir.version)
        if new is not None:
            self._dir = new
            logger.info(
                "agent registry loaded: %d agents (version %d)", len(new.agents), new.version
            )

    def _early_refresh(self) -> None:
        """A check made after the record in hand arrived: no sooner than EARLY_CHECK_S after
        the previous one (which may predate the change the record relies on)."""
        wait = EARLY_CHECK_S - (time.monotonic() - self._checked)
        if wait > 0:
            time.sleep(wait)
        self.refresh(force=True)

    def sites_after_refresh(self, agent_id: str, sites: frozenset[str]) -> frozenset[str] | None:
        """An authentic envelope has readings of sites outside ``sites`` (the agent's list as
        of the last check): the agent may have been given them since. Check early, at most
        once per agent per refresh interval (an agent that keeps sending foreign readings
        costs no more), and return its sites if they changed, else None."""
        now = time.monotonic()
        if now - self._site_rechecks.get(agent_id, float("-inf")) < self._refresh_s:
            return None
        self._site_rechecks[agent_id] = now
        self._early_refresh()
        entry = self._dir.get(agent_id)
        if entry is None or entry.sites == sites:
            return None
        return entry.sites

    def check(
        self,
        agent_id: str,
        headers: Sequence[tuple[str, bytes | None]] | None,
        value: bytes,
        appended_us: int | None,
    ) -> Verdict:
        self.refresh()
        entry = self._dir.get(agent_id)
        reason = verify(entry, headers, value, appended_us=appended_us)
        if reason in ("unknown_agent", "unknown_key"):
            # the last check may predate this agent's provisioning or rotation
            self._early_refresh()
            entry = self._dir.get(agent_id)
            reason = verify(entry, headers, value, appended_us=appended_us)
        if reason is not None or entry is None:
            return Verdict(reason or "unknown_agent", f"agent {agent_id!r}"[:120])
        return Verdict(None, "", entry.sites)


def directory_loader(db: DatabaseSettings) -> DirectoryLoader:
    """Load the directory from the database when its version counter moved."""
    from storage import agents
    from storage.db import connect

    down = False

    def load(have: int) -> AgentDirectory | None:
        nonlocal down
        try:
            with connect(db) as conn:
                if have and agents.registry_version(conn) == have:
                    snap = None
                else:
                    snap = agents.load_snapshot(conn)
        except psycopg.OperationalError as exc:
            if not have:
                raise  # no directory at all yet: the consumer cannot start
            if not down:
                logger.warning("agent registry unreachable, keeping version %d: %s", have, exc)
                down = True
            return None
        if down:
            logger.warning("agent registry reachable again")
            down = False
        if snap is None:
            return None
        entries = {
            agent_id: AgentEntry(
                agent_id,
                {
                    no: agent_key(pub, None if rv is None else to_us(rv))
                    for no, (pub, rv) in keys.items()
                },
                frozenset(sites),
                None if revoked is None else to_us(revoked),
            )
            for agent_id, (revoked, keys, sites) in snap.agents.items()
        }
        return AgentDirectory(entries, snap.version)

    return load
