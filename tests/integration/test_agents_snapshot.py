"""The ingest's snapshot of the agent registry is one consistent picture, whatever commits while
it is read.

An agent provisioned while the ingest reloads the registry (``qilu run`` adds the simulated
T/CEC 102 operators' agents just as the ingest's first early refresh runs) must not make the
snapshot hold keys or sites of an agent it does not hold: the ingest would stop on it. The
interleaving is made certain with a table lock, not left to timing: the provisioning holds
``agent_keys`` locked until the snapshot's reader waits on it, then commits an agent with its
key and site.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from qilu.settings import DatabaseSettings
from storage import agents as store
from storage.db import connect
from tests.helpers import scalar, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

WAITING = (  # a backend of this database waiting for a table lock
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


@pytest.fixture
def site(db: DatabaseSettings) -> str:
    with connect(db) as conn:
        conn.execute(
            "INSERT INTO agents (agent_id) VALUES ('gw-before');"
            " INSERT INTO agent_keys (agent_id, key_no, public_key)"
            "  VALUES ('gw-before', 1, decode(repeat('01', 32), 'hex'));"
            " INSERT INTO agent_sites (agent_id, site_id) VALUES ('gw-before', 'S-1')"
        )
    return "S-1"


def test_a_snapshot_read_while_an_agent_is_provisioned_is_consistent(
    db: DatabaseSettings, site: str
) -> None:
    def read() -> store.RegistrySnapshot:
        with connect(db) as conn:
            return store.load_snapshot(conn)

    # the writer's connection closes (its lock gone) before the pool waits for the reader
    with ThreadPoolExecutor(1) as pool, connect(db) as writer:
        writer.execute("LOCK TABLE agent_keys, agent_sites IN ACCESS EXCLUSIVE MODE")
        reading = pool.submit(read)
        wait_for(lambda: scalar(db, WAITING) > 0, what="the snapshot's reader waiting on the lock")
        store.provision(writer, "tcec102-new", [site], bytes(range(32)), actor="test")
        writer.commit()
        snap = reading.result(timeout=60)  # raises what the reader raised
    assert snap.agents["gw-before"][1].keys() == {1}
    assert snap.agents["gw-before"][2] == {site}
    # the reader waited for the provisioning: it sees all of it (never a part)
    revoked, keys, sites = snap.agents["tcec102-new"]
    assert revoked is None
    assert keys == {1: (bytes(range(32)), None)}
    assert sites == {site}
