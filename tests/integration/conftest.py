"""Integration tier: real Kafka and PostgreSQL, started by the project's own services code.

Each test gets a fresh database (migrated) and its own topic prefix and consumer group, so
tests never see each other's data and can run against long-lived servers.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from psycopg import sql
from psycopg_pool import ConnectionPool

from ops.cli import main as qilu_main
from ops.services import Services
from qilu.kafka_sockets import close_failed_connections
from qilu.settings import ApiSettings, DatabaseSettings, KafkaSettings, Settings, load
from storage import migrate
from storage.db import connect
from stream.cli import build_consumer
from stream.topics import deadletter_topic, ensure_topics, readings_topics

pytestmark = pytest.mark.integration
# the tests' own clients (ledgers, readers) connect to brokers the fault tests stop: their
# refused attempts close their sockets, as the platform's do (qilu/kafka_sockets.py)
close_failed_connections()


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return load()


@pytest.fixture(scope="session")
def services(base_settings: Settings) -> Services:
    svc = Services(base_settings.services, base_settings.db)
    svc.up(["kafka", "postgres"])
    return svc


@pytest.fixture
def db(base_settings: Settings, services: Services) -> Iterator[DatabaseSettings]:
    del services
    name = f"qilu_t_{uuid.uuid4().hex[:10]}"
    admin = base_settings.db
    with connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dbs = admin.model_copy(update={"name": name})
    with connect(dbs) as conn:
        migrate.apply(conn)
    yield dbs
    with connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def kafka(base_settings: Settings, services: Services) -> Iterator[KafkaSettings]:
    del services
    ks = base_settings.kafka.model_copy(update={"topic_prefix": f"t{uuid.uuid4().hex[:10]}"})
    ensure_topics(ks)
    yield ks
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=ks.bootstrap)
    try:
        admin.delete_topics([*readings_topics(ks), deadletter_topic(ks)])
    finally:
        admin.close()


@pytest.fixture
def settings(base_settings: Settings, db: DatabaseSettings, kafka: KafkaSettings) -> Settings:
    ingest = base_settings.ingest.model_copy(update={"group_id": f"g{uuid.uuid4().hex[:10]}"})
    return base_settings.model_copy(update={"db": db, "kafka": kafka, "ingest": ingest})


@dataclass
class RunningIngest:
    thread: threading.Thread
    stop: threading.Event


@pytest.fixture
def jwt_secret() -> str:
    """The API's token-signing secret in ``api_settings``; a module overrides it with its own."""
    return "integration-api-secret-" + "k" * 48


@pytest.fixture
def api_settings(settings: Settings, jwt_secret: str) -> Settings:
    """The test settings with an API that admits no one anonymously, signing with ``jwt_secret``."""
    api = ApiSettings(anonymous_scopes=[], jwt_secret=jwt_secret, key_cache_s=1.0)  # type: ignore[arg-type]
    return settings.model_copy(update={"api": api})


@pytest.fixture
def cli(
    api_settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Any:
    """Run ``qilu ...`` in-process against the test database: (exit code, stdout, stderr)."""
    db = api_settings.db
    for key, value in {"NAME": db.name, "HOST": db.host, "PORT": str(db.port)}.items():
        monkeypatch.setenv(f"QILU_DB__{key}", value)

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = qilu_main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


@pytest.fixture
def start_ingest(settings: Settings) -> Iterator[Callable[[], RunningIngest]]:
    """Start the real ingest consumer in a thread (after the test loaded its registry)."""
    running: list[RunningIngest] = []

    def start() -> RunningIngest:
        stop = threading.Event()
        consumer, pool = build_consumer(settings, stop)

        def run() -> None:
            try:
                consumer.run()
            finally:
                pool.close()

        t = threading.Thread(target=run, name="ingest", daemon=True)
        t.start()
        r = RunningIngest(t, stop)
        running.append(r)
        return r

    yield start
    for r in running:
        r.stop.set()
    for r in running:
        r.thread.join(timeout=30)


@pytest.fixture(scope="module")
def sasl_kafka(base_settings: Settings) -> Iterator[tuple[str, str]]:
    """(internal bootstrap, agents' SASL bootstrap) of a private broker with ACLs, one per test
    module that asks for it (tests/integration/faults.py)."""
    from tests.integration.faults import private_kafka

    with private_kafka(base_settings) as broker:
        yield broker.bootstrap, broker.agent_bootstrap


@pytest.fixture
def sink_pool(db: DatabaseSettings) -> Iterator[ConnectionPool]:
    """A pool on the test's database, unprepared, as a ReadingsSink takes it."""
    p = ConnectionPool(
        db.conninfo(), min_size=1, max_size=2, kwargs={"prepare_threshold": None}, open=True
    )
    yield p
    p.close()
