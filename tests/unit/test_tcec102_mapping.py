"""T/CEC 102 payloads -> registry and readings, and the client's circuit breaker. Pure."""

from __future__ import annotations

import pytest

from interconnect.tcec102 import mapping
from interconnect.tcec102.client import Breaker, BreakerState
from interconnect.tcec102.exchange import ExchangeError

CITIES = frozenset({"370100", "370200", "370300"})


def test_area_codes_map_to_cities_with_laiwu_in_jinan() -> None:
    assert mapping.city_of("370102", CITIES) == "370100"
    assert mapping.city_of("370211", CITIES) == "370200"
    assert mapping.city_of("371202", CITIES) == "370100"  # former Laiwu, Jinan since 2019
    assert mapping.city_of("370100", CITIES) == "370100"
    for outside in ("110101", "37", "abcd01", ""):
        assert mapping.city_of(outside, CITIES) is None


def _station(**change: object) -> dict[str, object]:
    base: dict[str, object] = {
        "StationID": "S1",
        "StationName": "站",
        "AreaCode": "370102",
        "StationType": 1,
        "EquipmentInfos": [
            {"EquipmentID": "E1", "ConnectorInfos": [{"ConnectorID": "E1-1"}, {"ConnectorID": 2}]}
        ],
    }
    base.update(change)
    return base


def test_a_page_keeps_good_stations_and_refuses_bad_ones() -> None:
    page = mapping.stations_page(
        {
            "PageNo": 1,
            "PageCount": 3,
            "StationInfos": [
                _station(),
                _station(StationID="S2", AreaCode="440305", StationType=50),
                _station(StationID="S3", EquipmentInfos=[{"ConnectorInfos": []}]),
                _station(StationID="S4", StationType=50),
            ],
        },
        CITIES,
    )
    assert (page.page_no, page.page_count) == (1, 3)
    assert [s.station_id for s in page.stations] == ["S1", "S4"]
    assert page.stations[0] == mapping.Station(
        "S1", "站", "370100", True, (mapping.Equipment("E1", ("E1-1", "2")),)
    )
    assert page.stations[1].public is False
    assert [e.reason for e in page.refused] == ["bad_area_code", "bad_field"]
    with pytest.raises(ExchangeError):
        mapping.stations_page({"PageNo": "1", "StationInfos": []}, CITIES)


def test_status_answer_keeps_good_connectors() -> None:
    good, bad = mapping.station_statuses(
        {
            "StationStatusInfos": [
                {"StationID": "S1", "ConnectorStatusInfos": [
                    {"ConnectorID": "E1-1", "Status": 3}, {"ConnectorID": "E1-2", "Status": 7}]},
                {"StationID": "S2"},
                "junk",
            ]
        }
    )  # fmt: skip
    assert good == [("S1", mapping.ConnectorStatus("E1-1", 3))]
    assert [e.reason for e in bad] == ["bad_status", "bad_field", "bad_field"]


def test_a_pile_takes_its_most_telling_connector() -> None:
    def state(statuses: list[int]) -> tuple[float, float]:
        r = mapping.pile_readings("d", statuses, 1)
        return r[0].value, r[1].value

    assert state([1, 3]) == (2.0, 0.0)  # one charging: Charging
    assert state([0, 1]) == (0.0, 0.0)  # one idle: Available
    assert state([0, 255]) == (8.0, 1.0)  # faulted, not offline
    assert state([0, 0]) == (7.0, 0.0)  # all offline: Unavailable
    assert state([1, 255]) == (0.0, 1.0)  # usable, with a fault raised


def test_breaker_opens_after_the_threshold_backs_off_and_recovers() -> None:
    b = Breaker(threshold=3, base_s=5, cap_s=60)
    for t in (0, 1):
        b.failure(t)
        assert b.allow(t)
    b.failure(2)
    assert b.state(2) is BreakerState.OPEN
    assert not b.allow(6.9)
    assert b.state(7) is BreakerState.HALF_OPEN  # one try after 5 s
    b.failure(7)
    assert not b.allow(16.9)  # 10 s now
    assert b.allow(17)
    for t in range(20, 30):
        b.failure(t)
    assert b.open_until == 29 + 60  # capped
    b.success()
    assert b.state(30) is BreakerState.CLOSED
