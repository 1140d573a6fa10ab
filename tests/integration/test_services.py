"""`qilu services` for real: up -> status -> down -> up, a crash and a port conflict.

Runs its own copy of the four servers in ``<repo>/.state/itest`` on free ports, so it never
touches the servers a developer (or the rest of the suite) uses on the default ports. The
first run on a fresh machine installs everything (apt, Maven, npm): hence the long timeout.
"""

from __future__ import annotations

import shutil
import socket
import warnings
from collections.abc import Iterator

import psycopg
import pytest

from ops.services import ALL_SERVICES, Services, State
from ops.services.postgres import Postgres
from ops.services.timescale import Timescale
from qilu.errors import ServiceError
from qilu.ports import free_ports
from qilu.settings import REPO_ROOT, DatabaseSettings, ServicesSettings

with warnings.catch_warnings():
    # kafka-python 3.0 calls deprecated importlib.resources functions at import time
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.admin import KafkaAdminClient, NewTopic

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

STATE = REPO_ROOT / ".state" / "itest"


@pytest.fixture(scope="module")
def settings() -> ServicesSettings:
    kafka, controller, postgres, mosquitto, timescale, prometheus = free_ports(6)
    return ServicesSettings(
        state_dir=STATE,
        start_timeout_s=120.0,
        kafka_port=kafka,
        kafka_controller_port=controller,
        postgres_port=postgres,
        mosquitto_port=mosquitto,
        timescale_port=timescale,
        prometheus_port=prometheus,
    )


@pytest.fixture(scope="module")
def db(settings: ServicesSettings) -> DatabaseSettings:
    return DatabaseSettings(port=settings.postgres_port, name="qilu_itest")


@pytest.fixture(scope="module")
def services(settings: ServicesSettings, db: DatabaseSettings) -> Iterator[Services]:
    # a previous run that died may have left its servers running: stop them by pid file
    Services(settings, db).down()
    shutil.rmtree(STATE, ignore_errors=True)
    svc = Services(settings, db)
    try:
        yield svc
    finally:
        svc.down()


def _postgres(svc: Services) -> Postgres:
    pg = svc.server("postgres")
    assert isinstance(pg, Postgres)
    return pg


def _timescale(svc: Services) -> Timescale:
    ts = svc.server("timescale")
    assert isinstance(ts, Timescale)
    return ts


def _states(svc: Services) -> dict[str, State]:
    return {s.name: s.state for s in svc.status()}


def _kafka_admin(settings: ServicesSettings) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{settings.kafka_port}")


def _kafka_topics(settings: ServicesSettings) -> set[str]:
    admin = _kafka_admin(settings)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def test_up_status_down_up(services: Services, settings: ServicesSettings) -> None:
    assert set(_states(services).values()) <= {State.STOPPED, State.NOT_INSTALLED}

    services.up()
    assert _states(services) == dict.fromkeys(ALL_SERVICES, State.RUNNING)
    pids = {name: services.pid(name) for name in ALL_SERVICES}

    # idempotent: nothing restarts
    services.up()
    assert {name: services.pid(name) for name in ALL_SERVICES} == pids

    # real requests against each server
    admin = _kafka_admin(settings)
    try:
        admin.create_topics([NewTopic("itest.readings", num_partitions=6, replication_factor=1)])
    finally:
        admin.close()
    assert "itest.readings" in _kafka_topics(settings)

    pg = _postgres(services)
    with psycopg.connect(pg.conninfo("qilu_itest"), autocommit=True) as conn:
        assert conn.execute("show fsync").fetchone() == ("on",)
        assert conn.execute("show synchronous_commit").fetchone() == ("on",)
        conn.execute("create table kept (v int)")
        conn.execute("insert into kept values (42)")

    ts = _timescale(services)
    with psycopg.connect(ts.conninfo(), prepare_threshold=None, autocommit=True) as conn:
        conn.execute("create extension if not exists timescaledb")
        conn.execute("create table m (ts timestamptz not null, v double precision)")
        conn.execute("select create_hypertable('m', by_range('ts'))")
        conn.execute("insert into m values (now(), 1.5)")
        assert conn.execute("select count(*) from m").fetchone() == (1,)

    services.server("mosquitto").probe(5.0)

    # down some: the others keep running; down twice is fine
    services.down(["mosquitto", "kafka", "timescale"])
    services.down(["mosquitto"])
    states = _states(services)
    assert states["postgres"] is State.RUNNING
    assert {states[n] for n in ("kafka", "mosquitto", "timescale")} == {State.STOPPED}

    # and up again: data survived
    services.up()
    assert _states(services) == dict.fromkeys(ALL_SERVICES, State.RUNNING)
    assert services.pid("postgres") == pids["postgres"]
    assert "itest.readings" in _kafka_topics(settings)
    with psycopg.connect(ts.conninfo(), prepare_threshold=None) as conn:
        row = conn.execute(
            "select count(*) from timescaledb_information.hypertables where hypertable_name = 'm'"
        ).fetchone()
        assert row == (1,)


def test_kill_and_restart_keeps_committed_data(services: Services) -> None:
    services.up(["postgres"])
    services.kill("postgres")
    assert _states(services)["postgres"] is State.STOPPED
    services.start("postgres")
    assert _states(services)["postgres"] is State.RUNNING
    pg = _postgres(services)
    with psycopg.connect(pg.conninfo("qilu_itest")) as conn:
        assert conn.execute("select v from kept").fetchall() == [(42,)]


def test_port_taken_by_a_stranger_fails_at_once(
    services: Services, settings: ServicesSettings
) -> None:
    services.down(["mosquitto"])
    with socket.socket() as stranger:
        stranger.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        stranger.bind(("127.0.0.1", settings.mosquitto_port))
        stranger.listen()
        with pytest.raises(ServiceError, match=r"port \d+ on 127.0.0.1 is taken by another"):
            services.up(["mosquitto"])
    services.up(["mosquitto"])
    assert _states(services)["mosquitto"] is State.RUNNING
