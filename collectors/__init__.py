"""Collectors: one folder per source of readings, each with the same shape.

Every collector folder holds ``collector.py`` (a :class:`collectors.base.Collector`), a
``README.md``, a ``sample.toml`` configuration and ``tests/``; ``collectors/test_shape.py``
fails when a folder breaks that shape. The agent discovers collectors through
:data:`COLLECTOR_TYPES`; adding a protocol adds a folder and a line there, nothing in the core.
"""

from __future__ import annotations

# collector type name -> "module:Class"
COLLECTOR_TYPES: dict[str, str] = {
    "simulated": "collectors.simulated.collector:SimulatedCollector",
    "ocpp": "collectors.ocpp.collector:OcppCollector",
    "modbus": "collectors.modbus.collector:ModbusCollector",
    "mqtt": "collectors.mqtt.collector:MqttCollector",
    "iec104": "collectors.iec104.collector:Iec104Collector",
}
