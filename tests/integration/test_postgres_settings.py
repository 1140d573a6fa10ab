"""The managed PostgreSQL's settings at work on servers of our own, never the shared ones: a
single node and the cluster profile's Patroni nodes, configured by ops/services/render.py as
`qilu services up` runs them.

``client_connection_check_interval``: a statement whose client vanished without a word (a
killed `qilu run`, a dropped network) is ended by the server within seconds; without it the
statement runs to its end, only to be rolled back (a restarted run's rollup refresh went on
for 5+ minutes beside the new run's, issue 18).
"""

from __future__ import annotations

import socket

import psycopg
import pytest

from qilu.settings import DatabaseSettings, Settings
from storage.db import connect
from tests.helpers import wait_for
from tests.integration.faults import private_pg_cluster, private_postgres

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _running(conninfo: str, pid: int) -> bool:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()
        return bool(row and row[0])


def test_a_statement_whose_client_is_gone_is_ended_by_the_server(
    base_settings: Settings,
) -> None:
    with private_postgres(base_settings) as pg:
        _gone_client_statement_ends(pg.db)


@pytest.mark.timeout(600)  # the cluster's start: etcd, Patroni, a bootstrap and a clone
def test_the_cluster_primary_ends_a_statement_whose_client_is_gone(
    base_settings: Settings,
) -> None:
    """The same on the cluster profile's primary: Patroni passes the setting on."""
    with private_pg_cluster(base_settings) as cluster:
        _gone_client_statement_ends(cluster.db)


def _gone_client_statement_ends(db: DatabaseSettings) -> None:
    conn = connect(db, autocommit=True)
    conninfo = db.conninfo()
    try:
        pid = conn.info.backend_pid
        conn.pgconn.send_query(b"SELECT pg_sleep(60)")
        wait_for(lambda: _active(conninfo, pid), timeout=30, what="the backend to run pg_sleep")
        # the client goes without a Terminate message: the socket is shut, as when the
        # process is killed or the network is gone
        sock = socket.socket(fileno=conn.pgconn.socket)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.detach()  # the fd stays psycopg's: it closes it below
        # well before pg_sleep(60) would end by itself
        wait_for(
            lambda: not _running(conninfo, pid),
            timeout=30,
            what=f"backend {pid} to end after its client went",
        )
    finally:
        conn.close()


def _active(conninfo: str, pid: int) -> bool:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND state = 'active'"
            " AND query LIKE 'SELECT pg_sleep%%'",
            (pid,),
        ).fetchone()
        return bool(row and row[0])
