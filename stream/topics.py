"""Topic names and their creation. One topic per sector, one dead-letter topic.

Records are keyed by agent id: an agent's envelopes stay in one partition, in order, and every
device belongs to exactly one agent, so one device's readings stay in order too.
"""

from __future__ import annotations

import logging

from qilu.contract import Sector, deadletter_topic_name, readings_topic_name
from qilu.settings import KafkaSettings

logger = logging.getLogger(__name__)


def readings_topic(kafka: KafkaSettings, sector: Sector) -> str:
    return readings_topic_name(kafka.topic_prefix, sector)


def readings_topics(kafka: KafkaSettings) -> list[str]:
    return [readings_topic(kafka, s) for s in Sector]


def deadletter_topic(kafka: KafkaSettings) -> str:
    return deadletter_topic_name(kafka.topic_prefix)


def ensure_topics(kafka: KafkaSettings) -> list[str]:
    """Create the platform's topics if missing; returns the ones created now."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    wanted = [*readings_topics(kafka), deadletter_topic(kafka)]
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap, client_id=kafka.client_id)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            try:
                # readings topics keep the broker's append time: a batch appended before an
                # agent's revocation stays acceptable when consumed later (docs/adr/0010)
                readings = set(readings_topics(kafka))
                admin.create_topics(
                    [
                        NewTopic(
                            t,
                            kafka.partitions,
                            kafka.replication_factor,
                            topic_configs=(
                                {"message.timestamp.type": "LogAppendTime"} if t in readings else {}
                            ),
                        )
                        for t in missing
                    ],
                    timeout_ms=30_000,
                )
            except TopicAlreadyExistsError:
                logger.debug("topics created concurrently by another process")
            logger.info("created topics %s", ", ".join(missing))
        return missing
    finally:
        admin.close()


def group_lag(kafka: KafkaSettings, group_id: str, topics: list[str]) -> int:
    """Records in ``topics`` not yet committed by ``group_id`` (uncommitted partitions count
    from the start of the log)."""
    from kafka import KafkaConsumer
    from kafka.admin import KafkaAdminClient
    from kafka.structs import TopicPartition

    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap, client_id=kafka.client_id)
    consumer = KafkaConsumer(
        bootstrap_servers=kafka.bootstrap, client_id=kafka.client_id, enable_auto_commit=False
    )
    try:
        parts = [
            TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()
        ]
        ends = consumer.end_offsets(parts)
        starts = consumer.beginning_offsets(parts)
        committed = admin.list_group_offsets({group_id: parts}).get(group_id, {})
        lag = 0
        for tp in parts:
            done = committed.get(tp)
            pos = done.offset if done is not None and done.offset >= 0 else starts[tp]
            lag += max(0, ends[tp] - pos)
        return lag
    finally:
        consumer.close()
        admin.close()
