"""The ingest consumer group's lag on the readings topics, probed for the API's status.

Kafka is this stage's: the API only calls :class:`KafkaLag` from its refresher
(``api.lag_refresh_s``; docs/adr/0019-floors.md).
"""

from __future__ import annotations

from typing import Any

from qilu.settings import KafkaSettings
from stream.topics import readings_topics


class KafkaLag:
    """Records of the readings topics not yet committed by the ingest consumer group.

    The broker clients stay open between probes (one connection, not one per probe) and are
    rebuilt after a failure."""

    def __init__(self, kafka: KafkaSettings, group_id: str) -> None:
        self._kafka, self._group = kafka, group_id
        self._clients: tuple[Any, Any] | None = None

    def __call__(self) -> int:
        from kafka import KafkaConsumer
        from kafka.admin import KafkaAdminClient
        from kafka.structs import TopicPartition

        if self._clients is None:
            admin = KafkaAdminClient(
                bootstrap_servers=self._kafka.bootstrap, client_id="qilu-api-lag"
            )
            consumer = KafkaConsumer(  # reads end offsets only: no group, nothing to commit
                bootstrap_servers=self._kafka.bootstrap,
                client_id="qilu-api-lag",
                enable_auto_commit=False,
            )
            self._clients = (admin, consumer)
        admin, consumer = self._clients
        try:
            parts = [
                TopicPartition(t, p)
                for t in readings_topics(self._kafka)
                for p in consumer.partitions_for_topic(t) or ()
            ]
            ends = consumer.end_offsets(parts)
            starts = consumer.beginning_offsets(parts)
            done = admin.list_group_offsets({self._group: parts}).get(self._group, {})
        except Exception:
            self.close()
            raise
        lag = 0
        for tp in parts:
            meta = done.get(tp)
            pos = meta.offset if meta is not None and meta.offset >= 0 else starts[tp]
            lag += max(0, ends[tp] - pos)
        return lag

    def close(self) -> None:
        if self._clients is not None:
            for c in self._clients:
                c.close()
            self._clients = None
