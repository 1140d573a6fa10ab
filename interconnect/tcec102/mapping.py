"""T/CEC 102 business payloads -> the platform's readings. Pure, no I/O.

A pile is one device of kind ``charging_pile``: the operator's EquipmentID namespaced by the
operator (:func:`device_id`). A connector's status becomes the pile's ``connector_status``
(the OCPP code the registry already knows, :data:`qilu.devices.CONNECTOR_STATES`) and its
``fault`` alarm. The platform's device kinds carry one ``connector_status`` per pile, so a
pile with several connectors reports the status of the connector that changed last
(docs/adr/0015-tcec102.md, "Connectors").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from interconnect.tcec102.exchange import ExchangeError, Ret
from qilu.contract import Quality, Reading
from qilu.devices import CONNECTOR_STATES

# T/CEC 102 connector Status -> (OCPP status name, fault)
STATUS = {
    0: ("Unavailable", 0),  # offline
    1: ("Available", 0),  # idle
    2: ("Preparing", 0),  # occupied, not charging
    3: ("Charging", 0),  # occupied, charging
    4: ("Reserved", 0),  # reserved
    255: ("Faulted", 1),  # fault
}
_CODE = {name: i for i, name in enumerate(CONNECTOR_STATES)}
MAX_ID_CHARS = 64


def device_id(operator_id: str, equipment_id: str) -> str:
    """The registry's id of an operator's pile: its EquipmentID, namespaced by the operator."""
    return f"tcec102.{operator_id}.{equipment_id}"


@dataclass(frozen=True, slots=True)
class ConnectorStatus:
    connector_id: str
    status: int


def _text(obj: Mapping[str, Any], key: str, where: str) -> str:
    v = obj.get(key)
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    if not isinstance(v, str) or not v or len(v) > MAX_ID_CHARS:
        raise ExchangeError(
            Ret.BUSINESS_PARAMETERS, "bad_field", f"{where}.{key} is missing or not an id"
        )
    return v


def connector_status(obj: object, where: str) -> ConnectorStatus:
    """One ConnectorStatusInfo ({ConnectorID, Status, ...}); ExchangeError(4004) if invalid."""
    if not isinstance(obj, dict):
        raise ExchangeError(Ret.BUSINESS_PARAMETERS, "bad_field", f"{where} is not an object")
    cid = _text(obj, "ConnectorID", where)
    status = obj.get("Status")
    if isinstance(status, bool) or not isinstance(status, int) or status not in STATUS:
        raise ExchangeError(
            Ret.BUSINESS_PARAMETERS,
            "bad_status",
            f"{where}.Status {str(status)[:20]!r} is not one of {sorted(STATUS)}",
        )
    return ConnectorStatus(cid, status)


def status_notification(payload: Mapping[str, Any]) -> ConnectorStatus:
    """The payload of ``notification_stationStatus``: {"ConnectorStatusInfo": {...}}."""
    return connector_status(payload.get("ConnectorStatusInfo"), "ConnectorStatusInfo")


def status_readings(device: str, status: int, ts_us: int) -> list[Reading]:
    """The readings one connector status makes: connector_status and fault."""
    name, fault = STATUS[status]
    return [
        Reading(device, "connector_status", ts_us, float(_CODE[name]), Quality.GOOD),
        Reading(device, "fault", ts_us, float(fault), Quality.GOOD),
    ]
