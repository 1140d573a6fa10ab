"""OCPP payloads (as the ocpp library hands them to handlers) -> readings. Pure."""

# ruff: noqa: S101 - pytest asserts

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from collectors.ocpp.collector import OcppCollector
from collectors.ocpp.messages import (
    DeviceNames,
    meter_readings,
    parse_time,
    status_16,
    status_201,
)
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
    ],
)
def test_bad_configuration_names_the_key(raw: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        OcppCollector.from_config("o", {"type": "ocpp", **raw}).validate()
    assert err.value.key == key
