"""The servers ``qilu services`` knows, in start order (stopped in reverse)."""

from __future__ import annotations

from qilu.services.base import Server
from qilu.services.kafka import Kafka
from qilu.services.mosquitto import Mosquitto
from qilu.services.postgres import Postgres
from qilu.services.prometheus import Prometheus
from qilu.services.timescale import Timescale

SERVER_TYPES: dict[str, type[Server]] = {
    cls.name: cls for cls in (Kafka, Postgres, Mosquitto, Timescale, Prometheus)
}

ALL_SERVICES: tuple[str, ...] = tuple(SERVER_TYPES)
