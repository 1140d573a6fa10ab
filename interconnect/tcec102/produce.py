"""The kafka-python producer of the T/CEC 102 puller (``qilu operators pull``).

It writes the charging readings topic and the dead-letter topic with ``acks=all`` and an
idempotent producer. The push endpoint writes the same topics the same way with librdkafka
(``server.KafkaSink``; docs/adr/0015-tcec102.md, "Throughput").
"""

from __future__ import annotations

import warnings
from typing import Any

from qilu.contract import Sector
from qilu.settings import Settings


def charging_producer(settings: Settings, client: str, **options: Any) -> tuple[Any, str, str]:
    """A ``KafkaProducer`` named ``<client_id>-<client>``, the readings and dead-letter topics.

    ``options`` go to the producer as they are (``linger_ms``, ``max_block_ms``...).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # kafka-python 3.0 import time
        from kafka import KafkaProducer

    from stream.topics import deadletter_topic, readings_topic

    k = settings.kafka
    producer = KafkaProducer(
        bootstrap_servers=k.bootstrap,
        client_id=f"{k.client_id}-{client}",
        acks="all",
        enable_idempotence=True,
        **options,
    )
    return producer, readings_topic(k, Sector.CHARGING), deadletter_topic(k)
