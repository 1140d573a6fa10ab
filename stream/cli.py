"""Commands of the stream stage: ``qilu topics`` and ``qilu ingest``."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from datetime import UTC, datetime
from typing import Any

import psycopg
from prometheus_client import start_http_server
from psycopg_pool import ConnectionPool
from pydantic import ValidationError

from qilu.catalog import load_catalog
from qilu.errors import ConfigError, RetryableError
from qilu.settings import IngestSettings, Settings, StorageMode
from storage import maintain
from storage import mode as modes
from storage.db import connect
from storage.deadletter_tally import DeadLetterTally
from storage.deadletters import SummaryWriter
from storage.offsets import OffsetMarks, TopicPartitionKey, stored_offsets
from storage.registry_store import load_device_index
from storage.replay_losses import ReplayLosses
from storage.writer import ReadingsSink
from stream.gaps import GapSink
from stream.ingest import IngestConsumer, tune_gc
from stream.topics import ensure_topics

logger = logging.getLogger(__name__)


def register(sub: Any) -> None:
    p = sub.add_parser("topics", help="create the Kafka topics if they are missing")
    p.set_defaults(handler=_topics)
    p = sub.add_parser(
        "ingest",
        help="run the ingest consumer (Kafka -> database)",
        description=(
            "Consumes envelopes from the sector topics, stores valid readings exactly once and "
            "dead-letters the rest. Offsets are committed after the database commits. Several "
            "processes with the same group id share the partitions."
        ),
    )
    p.add_argument("--metrics-port", type=int, default=None, help="Prometheus port (default 9101)")
    p.add_argument(
        "--instance-id",
        default=None,
        help=(
            "static group membership id (ingest.group_instance_id; letters, digits, '.', '_', "
            "'-'): one per process and the same across its restarts, so a restarted process "
            "gets its partitions back at once instead of after the 45 s session timeout"
        ),
    )
    p.set_defaults(handler=_ingest)


def _topics(args: argparse.Namespace, settings: Settings) -> int:
    del args
    ensure_topics(settings.kafka)
    return 0


def storage_mode(settings: Settings) -> StorageMode:
    """The mode the database was migrated in; refuses an unmigrated database."""
    with connect(settings.db) as conn:
        mode = modes.recorded(conn)
        if mode is None:
            raise ConfigError(
                "db.name",
                f"database {settings.db.name!r} has not been migrated; run `qilu migrate`",
            )
        if mode is StorageMode.POSTGRES:
            # the coming hours' partitions, so the first batches do not wait for them
            maintain.ensure_partitions(conn, settings.storage, datetime.now(UTC))
        conn.commit()
    return mode


def build_consumer(
    settings: Settings, stop: threading.Event, mode: StorageMode | None = None
) -> tuple[IngestConsumer, ConnectionPool]:
    mode = mode or storage_mode(settings)
    pool = ConnectionPool(
        settings.db.conninfo(),
        min_size=settings.db.pool_min,
        max_size=settings.db.pool_max,
        kwargs={"prepare_threshold": None},
        check=ConnectionPool.check_connection,
        reconnect_timeout=settings.db.pool_reconnect_s,
        open=False,
    )
    pool.open(wait=False)

    def load_index() -> Any:
        with connect(settings.db) as conn:
            return load_device_index(conn)

    # refusals are summed in the readings' transaction (docs/adr/0012-dead-letters.md)
    tally = DeadLetterTally()
    summary = SummaryWriter(tally, max_rows_per_statement=settings.db.max_rows_per_statement)
    # the offsets the database holds, stored with the rows (docs/adr/0016)
    marks = OffsetMarks()
    # records lost past Kafka's retention when replaying from those offsets
    losses = ReplayLosses(lookback_s=settings.storage.raw_retention_days * 86_400.0)
    sink = ReadingsSink(
        pool,
        mode=mode,
        max_rows_per_statement=settings.db.max_rows_per_statement,
        parts=(summary, marks, losses),
        liveness_flush_s=settings.ingest.liveness_flush_s,
    )

    def load_offsets(topics: list[str]) -> dict[TopicPartitionKey, int]:
        try:
            with connect(settings.db) as conn:
                return stored_offsets(conn, topics)
        except psycopg.Error as exc:
            raise RetryableError(f"reading the stored offsets: {exc}") from exc

    gaps = GapSink(pool)
    agents = None
    if settings.ingest.authenticate:
        from stream.agents import AgentAuth, directory_loader

        agents = AgentAuth(directory_loader(settings.db), settings.ingest.agents_refresh_s)
    else:
        logger.warning("ingest.authenticate is off: envelopes are NOT checked against agents")
    consumer = IngestConsumer(
        settings.kafka,
        settings.ingest,
        sink,
        load_index,
        stop=stop,
        gaps=gaps,
        agents=agents,
        deadletters=tally,
        max_age_s=settings.storage.raw_retention_days * 86_400.0,
        offsets=marks,
        load_offsets=load_offsets,
        losses=losses,
    )
    logger.info("storage mode %s; writing batches with %s", mode, sink.method)
    return consumer, pool


def _ingest(args: argparse.Namespace, settings: Settings) -> int:
    if args.instance_id is not None:
        try:
            ingest = IngestSettings(
                **{**settings.ingest.model_dump(), "group_instance_id": args.instance_id}
            )
        except ValidationError as exc:
            why = exc.errors()[0]["msg"]
            raise ConfigError("ingest.group_instance_id (--instance-id)", why) from exc
        settings = settings.model_copy(update={"ingest": ingest})
    port = args.metrics_port if args.metrics_port is not None else settings.ingest.metrics_port
    if port:
        start_http_server(port, addr=settings.ingest.metrics_host)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    mode = storage_mode(settings)
    consumer, pool = build_consumer(settings, stop, mode)
    maintainer = None
    if settings.storage.maintain_in_ingest:
        maintainer = maintain.Maintainer(settings.db, settings.storage, mode, load_catalog(), stop)
        maintainer.start()
    tune_gc()  # after start-up: the device index and the agent directory are loaded
    try:
        consumer.run()
    finally:
        stop.set()
        if maintainer is not None:
            maintainer.join(timeout=30)
        pool.close()
    return 0
