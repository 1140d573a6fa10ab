"""T/CEC 102 business payloads -> the platform's readings. Pure, no I/O.

A pile is one device of kind ``charging_pile``: the operator's EquipmentID namespaced by the
operator (:func:`device_id`). The platform's device kinds carry one ``connector_status`` (the
OCPP code the registry already knows, :data:`qilu.devices.CONNECTOR_STATES`) and one ``fault``
per pile, so a pile's state is computed from every one of its connectors' last known statuses
by one rule, :func:`pile_readings`, for pushes and pulls alike (docs/adr/0015-tcec102.md,
"Connectors").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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
    """The readings of a pile with one connector: :func:`pile_readings` of one status."""
    return pile_readings(device, [status], ts_us)


# ------------------------------------------------------------------------------ pulled stations

LAIWU_PREFIX, JINAN = "3712", "370100"  # the former Laiwu's districts belong to Jinan since 2019


def city_of(area_code: str, cities: frozenset[str]) -> str | None:
    """The prefecture-level city of a GB/T 2260 AreaCode (usually a district: the city is its
    first four digits followed by 00), or None when it is not one of ``cities``."""
    code = area_code.strip()
    if len(code) < 4 or not code[:4].isdigit():
        return None
    city = JINAN if code.startswith(LAIWU_PREFIX) else f"{code[:4]}00"
    return city if city in cities else None


@dataclass(frozen=True, slots=True)
class Equipment:
    equipment_id: str
    connector_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Station:
    station_id: str
    name: str
    city_code: str
    public: bool
    equipment: tuple[Equipment, ...]


def site_id(operator_id: str, station_id: str) -> str:
    """The registry's id of an operator's station: its StationID, namespaced by the operator."""
    return f"tcec102.{operator_id}.{station_id}"


def station_info(obj: object, cities: frozenset[str], where: str) -> Station:
    """One StationInfo of query_stations_info; ExchangeError(4004) naming the bad field."""
    if not isinstance(obj, dict):
        raise ExchangeError(Ret.BUSINESS_PARAMETERS, "bad_field", f"{where} is not an object")
    sid = _text(obj, "StationID", where)
    area = obj.get("AreaCode")
    city = city_of(area, cities) if isinstance(area, str) else None
    if city is None:
        raise ExchangeError(
            Ret.BUSINESS_PARAMETERS,
            "bad_area_code",
            f"{where}.AreaCode {str(area)[:20]!r} is not in a city of the province",
        )
    name = obj.get("StationName")
    equipment = []
    raw_eq = obj.get("EquipmentInfos") or []
    if not isinstance(raw_eq, list):
        raise ExchangeError(
            Ret.BUSINESS_PARAMETERS, "bad_field", f"{where}.EquipmentInfos is not a list"
        )
    for i, eq in enumerate(raw_eq):
        w = f"{where}.EquipmentInfos[{i}]"
        if not isinstance(eq, dict):
            raise ExchangeError(Ret.BUSINESS_PARAMETERS, "bad_field", f"{w} is not an object")
        conns = eq.get("ConnectorInfos") or []
        if not isinstance(conns, list):
            raise ExchangeError(Ret.BUSINESS_PARAMETERS, "bad_field", f"{w}.ConnectorInfos")
        ids = tuple(
            _text(c, "ConnectorID", f"{w}.ConnectorInfos[{j}]")
            if isinstance(c, dict)
            else _text({}, "ConnectorID", f"{w}.ConnectorInfos[{j}]")
            for j, c in enumerate(conns)
        )
        equipment.append(Equipment(_text(eq, "EquipmentID", w), ids))
    # StationType 1 is a public station in the published descriptions we have (ADR 0015)
    return Station(
        sid,
        name if isinstance(name, str) and name else sid,
        city,
        obj.get("StationType") == 1,
        tuple(equipment),
    )


@dataclass(frozen=True, slots=True)
class StationsPage:
    page_no: int
    page_count: int
    stations: list[Station]
    refused: list[ExchangeError]  # stations of the page that were not usable, with why


def stations_page(payload: Mapping[str, Any], cities: frozenset[str]) -> StationsPage:
    """A query_stations_info answer: good stations kept, bad ones refused one by one."""
    page_no, page_count = payload.get("PageNo"), payload.get("PageCount")
    infos = payload.get("StationInfos")
    if not isinstance(page_no, int) or not isinstance(page_count, int) or page_count < 0:
        raise ExchangeError(Ret.BUSINESS_PARAMETERS, "bad_field", "PageNo/PageCount")
    if not isinstance(infos, list):
        raise ExchangeError(Ret.BUSINESS_PARAMETERS, "bad_field", "StationInfos is not a list")
    good, bad = [], []
    for i, obj in enumerate(infos):
        try:
            good.append(station_info(obj, cities, f"StationInfos[{i}]"))
        except ExchangeError as exc:
            bad.append(exc)
    return StationsPage(page_no, page_count, good, bad)


def _station_connectors(st: object, where: str) -> tuple[str, list[object]]:
    if not isinstance(st, dict):
        raise ExchangeError(Ret.BUSINESS_PARAMETERS, "bad_field", f"{where} is not an object")
    conns = st.get("ConnectorStatusInfos")
    if not isinstance(conns, list):
        raise ExchangeError(Ret.BUSINESS_PARAMETERS, "bad_field", f"{where}.ConnectorStatusInfos")
    return _text(st, "StationID", where), conns


def station_statuses(
    payload: Mapping[str, Any],
) -> tuple[list[tuple[str, ConnectorStatus]], list[ExchangeError]]:
    """A query_station_status answer: (StationID, connector status) pairs and the refusals."""
    infos = payload.get("StationStatusInfos")
    if not isinstance(infos, list):
        raise ExchangeError(
            Ret.BUSINESS_PARAMETERS, "bad_field", "StationStatusInfos is not a list"
        )
    good: list[tuple[str, ConnectorStatus]] = []
    bad: list[ExchangeError] = []
    for i, st in enumerate(infos):
        where = f"StationStatusInfos[{i}]"
        try:
            sid, conns = _station_connectors(st, where)
        except ExchangeError as exc:
            bad.append(exc)
            continue
        for j, c in enumerate(conns):
            try:
                good.append((sid, connector_status(c, f"{where}.ConnectorStatusInfos[{j}]")))
            except ExchangeError as exc:
                bad.append(exc)
    return good, bad


# a pile's state from its connectors': the most telling one wins (charging over occupied over
# reserved over idle over fault over offline); fault is raised when any connector is faulted
_PILE_ORDER = (3, 2, 4, 1, 255, 0)


def pile_readings(device: str, statuses: Iterable[int], ts_us: int) -> list[Reading]:
    """One pile's readings (connector_status, fault) from the last known status of every one
    of its connectors: the rule for pushes and pulls alike. ``statuses`` must not be empty."""
    statuses = list(statuses)
    if not statuses:
        raise ValueError(f"pile {device}: no connector status known")
    best = min(statuses, key=_PILE_ORDER.index)
    name, _ = STATUS[best]
    fault = 1 if 255 in statuses else 0
    return [
        Reading(device, "connector_status", ts_us, float(_CODE[name]), Quality.GOOD),
        Reading(device, "fault", ts_us, float(fault), Quality.GOOD),
    ]
