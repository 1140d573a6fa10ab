"""OCPP payloads (as the ocpp library hands them to handlers) -> readings. Pure."""

# ruff: noqa: S101 - pytest asserts

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from collectors.base import DistinctTimes
from collectors.ocpp.collector import OcppCollector
from collectors.ocpp.messages import (
    Authorization,
    DeviceNames,
    meter_readings,
    parse_time,
    status_16,
    status_201,
)
from collectors.ocpp.transactions import MAX_ID, Transactions
from qilu.contract import Quality, Reading
from qilu.devices import CONNECTOR_STATES
from qilu.errors import ConfigError

NOW = 1_763_900_000_000_000


def test_status_codes_follow_the_platforms_connector_states() -> None:
    assert status_16("Charging", "NoError") == (CONNECTOR_STATES.index("Charging"), False)
    assert status_16("Faulted", "GroundFailure") == (CONNECTOR_STATES.index("Faulted"), True)
    assert status_16("Available", "HighTemperature") == (0, True)  # an error code is a fault
    assert status_16("Dancing", "NoError") is None
    assert status_201("Occupied") == (CONNECTOR_STATES.index("Preparing"), False)
    assert status_201("Faulted") == (CONNECTOR_STATES.index("Faulted"), True)


def test_meter_values_16_default_units_are_wh_and_w() -> None:
    mv = [
        {
            "timestamp": "2026-11-23T08:00:00Z",
            "sampled_value": [
                {"value": "1234567", "context": "Sample.Periodic"},  # Energy register, Wh
                {"value": "7040", "measurand": "Power.Active.Import", "unit": "W"},
                {"value": "230.1", "measurand": "Voltage", "phase": "L1", "unit": "V"},
                {"value": "55", "measurand": "SoC", "location": "EV"},
            ],
        }
    ]
    rs = meter_readings("P1", mv, NOW)
    assert {(r.metric, r.value) for r in rs} == {("energy_kwh", 1234.567), ("power_kw", 7.04)}
    assert {r.ts_us for r in rs} == {parse_time("2026-11-23T08:00:00Z")}


def test_meter_values_201_unit_of_measure_and_multiplier() -> None:
    mv = [
        {
            "timestamp": "2026-11-23T08:00:00.5Z",
            "sampled_value": [
                {
                    "value": 12.5,
                    "measurand": "Energy.Active.Import.Register",
                    "unit_of_measure": {"unit": "kWh", "multiplier": 0},
                },
                {
                    "value": 60.0,
                    "measurand": "Power.Active.Import",
                    "unit_of_measure": {"unit": "W", "multiplier": 3},
                },
            ],
        }
    ]
    rs = meter_readings("P1", mv, NOW)
    assert {(r.metric, r.value) for r in rs} == {("energy_kwh", 12.5), ("power_kw", 60.0)}


def test_missing_or_bad_timestamps_fall_back_to_now() -> None:
    rs = meter_readings("P1", [{"sampled_value": [{"value": "1000"}]}], NOW)
    assert [r.ts_us for r in rs] == [NOW]
    rs = meter_readings("P1", [{"timestamp": "soon", "sampled_value": [{"value": "1"}]}], NOW)
    assert [r.ts_us for r in rs] == [NOW]


def test_device_names_pattern_and_overrides() -> None:
    names = DeviceNames("{charge_point}-{connector}", {"CP9/1": "CHG-370100-00001-0001"})
    assert names.device("CP1", 2) == "CP1-2"
    assert names.device("CP9", 1) == "CHG-370100-00001-0001"
    assert names.device("CP1", 0) is None  # the charge point as a whole is no device


def test_sample_configuration_is_valid() -> None:
    table = tomllib.loads((Path(__file__).parent.parent / "sample.toml").read_text())
    for name, raw in table["collectors"].items():
        OcppCollector.from_config(name, raw).validate()


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"versions": ["ocpp1.5"]}, "collectors.o.versions[0]"),
        ({"versions": []}, "collectors.o.versions"),
        ({"device_pattern": "{cp}"}, "collectors.o.device_pattern"),
        ({"devices": {"CP1": "x"}}, "collectors.o.devices.CP1"),
        ({"path": "ocpp"}, "collectors.o.path"),
        ({"heartbeat_interval_s": 1}, "collectors.o.heartbeat_interval_s"),
        ({"authorization": "maybe"}, "collectors.o.authorization"),
        ({"authorization": "allow_list"}, "collectors.o.id_tags"),
        ({"id_tags": ["TAG1"]}, "collectors.o.authorization"),  # listed, but the policy rejects
        ({"authorization": "allow_list", "id_tags": ["T", " "]}, "collectors.o.id_tags[1]"),
        ({"state_file": 7}, "collectors.o.state_file"),
    ],
)
def test_bad_configuration_names_the_key(raw: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        OcppCollector.from_config("o", {"type": "ocpp", **raw}).validate()
    assert err.value.key == key


def test_a_transaction_is_placed_on_the_connector_it_was_seen_on() -> None:
    t = Transactions()
    assert t.place("CS1", "T1", 2) == (2, True)
    assert t.place("CS1", "T1", None) == (2, False)  # Updated / Ended without evse
    assert t.place("CS1", "T1", 2) == (2, False)  # the Started event sent again
    assert t.place("CS2", "T1", None) == (None, False)  # ids are per charge point
    assert t.place("CS1", "T-unknown", None) == (None, False)
    assert t.place("CS1", "", 3) == (3, False)  # no transaction: nothing to remember
    assert t.place("CS1", "T-unknown", 0) == (0, False)  # connector 0 stays 0: no device


def test_a_connector_keeps_only_its_latest_transaction() -> None:
    t = Transactions()
    for n in range(100):
        t.place("CS1", f"T{n}", 1 + n % 2)
    assert t.open == {"CS1": {"T98": 1, "T99": 2}}  # bounded by the connectors, not by time
    assert t.place("CS1", "T99", None) == (2, False)  # ended, still placed if sent again


def test_16_transaction_ids_increase_across_restarts() -> None:
    t = Transactions()
    now = 1_795_000_000
    ids = [t.new_id(now) for _ in range(3)]
    assert ids == [now, now + 1, now + 2]  # faster than the clock: one more each time
    assert Transactions().new_id(now + 5) > ids[-1]  # a restart without the map
    assert Transactions.loads(t.dumps()).new_id(now) == now + 3  # a restart with it
    t.last_id = MAX_ID
    assert t.new_id(now) == 1  # wraps within a 32-bit integer


def test_the_transaction_map_round_trips_and_refuses_other_text() -> None:
    t = Transactions()
    t.place("CS1", "T1", 2)
    t.place("CP 7", "42", 1)
    t.new_id(1_795_000_000)
    back = Transactions.loads(t.dumps())
    assert (back.open, back.last_id) == (t.open, t.last_id)
    for bad in ("[]", '{"format": 2}', '{"format": 1, "last_id": "x", "open": {}}',
                '{"format": 1, "last_id": 1, "open": {"CS1": {"T1": 0}}}'):  # fmt: skip
        with pytest.raises(ValueError, match=r"transaction map|last_id|connectors"):
            Transactions.loads(bad)


def test_authorization_policies() -> None:
    allow = Authorization.of("allow_list", ["04A1B2C3", "Fleet-7"])
    assert allow.status("04a1b2c3") == "Accepted"  # OCPP id tokens are case-insensitive
    assert allow.status("FLEET-7") == "Accepted"
    assert allow.status("0000") == "Invalid"
    assert Authorization.of("accept", []).status("anything") == "Accepted"
    assert Authorization.of("reject", []).status("04A1B2C3") == "Invalid"
    assert Authorization().status("04A1B2C3") == "Invalid"  # rejecting is the default


def test_different_values_stamped_with_one_time_get_distinct_times_in_arrival_order() -> None:
    t = DistinctTimes()
    out = t.apply(
        [
            Reading("D", "connector_status", NOW, 1.0),  # Preparing
            Reading("D", "connector_status", NOW, 2.0),  # Charging, same second
            Reading("D", "connector_status", NOW, 2.0),  # an identical repeat
            Reading("D", "fault", NOW, 0.0),  # another metric keeps its time
        ]
    )
    assert [(r.metric, r.ts_us, r.value) for r in out] == [
        ("connector_status", NOW, 1.0),
        ("connector_status", NOW + 1, 2.0),
        ("connector_status", NOW + 1, 2.0),  # same as the last one: the platform drops it
        ("fault", NOW, 0.0),
    ]
    # a later hand-over stamped with the same second again continues after the last one
    (again,) = t.apply([Reading("D", "connector_status", NOW, 3.0, Quality.UNCERTAIN)])
    assert again.ts_us == NOW + 2
    # a new time starts afresh; a time going back is left alone (a resend, not a collision)
    assert t.apply([Reading("D", "connector_status", NOW + 1_000_000, 0.0)])[0].ts_us == (
        NOW + 1_000_000
    )
    assert t.apply([Reading("D", "connector_status", NOW - 5, 0.0)])[0].ts_us == NOW - 5


def test_distinct_times_remembers_a_bounded_number_of_series() -> None:
    t = DistinctTimes(limit=2)
    t.apply([Reading(d, "fault", NOW, 0.0) for d in ("A", "B", "C")])
    assert len(t._last) == 2
