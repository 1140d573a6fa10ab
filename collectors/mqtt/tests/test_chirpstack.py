"""ChirpStack v4 uplink parsing on captured-format payloads (pure, no broker)."""

# ruff: noqa: S101 - pytest asserts

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from collectors.mqtt.chirpstack import (
    DeviceMap,
    LoraDevice,
    UplinkError,
    decode_uplink,
    parse_time,
    parse_uplink,
)
from collectors.mqtt.collector import MqttCollector
from qilu.contract import Quality
from qilu.errors import ConfigError

EUI = "0004a30b001c0530"
TOPIC = f"application/7c1b5a2e-9f3d-4d8e-b1a0-2f6c8e4d1a77/device/{EUI}/event/up"
NOW = 1_763_900_000_000_000

# the shape ChirpStack v4 publishes (fields we do not use trimmed, not altered)
UPLINK = {
    "deduplicationId": "3ac7e3c4-4401-4b8d-9386-a5c902f9202d",
    "time": "2026-11-23T08:00:00.123456789Z",
    "deviceInfo": {
        "tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242",
        "tenantName": "Qilu Ranch Co-op",
        "applicationId": "7c1b5a2e-9f3d-4d8e-b1a0-2f6c8e4d1a77",
        "applicationName": "ranch-370100-00001",
        "deviceProfileId": "0b6e8a4f-4d7b-4f0e-9a39-6e0d5a1b9c3e",
        "deviceProfileName": "cattle-collar-v2",
        "deviceName": "collar-0001",
        "devEui": EUI,
        "deviceClassEnabled": "CLASS_A",
        "tags": {},
    },
    "devAddr": "01fb4c2a",
    "adr": True,
    "dr": 5,
    "fCnt": 4211,
    "fPort": 2,
    "confirmed": False,
    "data": "AX8BNgAMAFc=",
    "object": {
        "temperature": 38.62,
        "steps": 310,
        "rumination_min": 22.0,
        "battery": 87,
        "firmware": "2.1.4",
    },
    "rxInfo": [{"gatewayId": "0016c001ff10a235", "rssi": -97, "snr": 7.5}],
    "txInfo": {"frequency": 471500000, "modulation": {"lora": {"bandwidth": 125000}}},
}
DEVICES = DeviceMap(
    {EUI: LoraDevice("RAN-370100-00001-0001", "collar")},
    {"temperature": "body_temp_c", "steps": "activity", "battery": "battery_pct"},
)


def test_uplink_becomes_readings_of_the_kinds_metrics() -> None:
    rs = parse_uplink(TOPIC, json.dumps(UPLINK).encode(), DEVICES, NOW)
    ts = parse_time("2026-11-23T08:00:00.123456Z")
    assert {(r.metric, r.value) for r in rs} == {
        ("body_temp_c", 38.62),
        ("activity", 310.0),
        ("rumination_min", 22.0),
        ("battery_pct", 87.0),
    }
    assert {r.device_id for r in rs} == {"RAN-370100-00001-0001"}
    assert {r.ts_us for r in rs} == {ts}
    assert all(r.quality is Quality.GOOD for r in rs)


def test_nanosecond_timestamps_keep_microseconds() -> None:
    assert parse_time("2026-11-23T08:00:00.123456789Z") == parse_time("2026-11-23T08:00:00.123456Z")
    assert parse_time("2026-11-23T16:00:00+08:00") == parse_time("2026-11-23T08:00:00Z")


def test_device_tags_identify_unmapped_devices() -> None:
    up = json.loads(json.dumps(UPLINK))
    up["deviceInfo"]["devEui"] = "00000000000000aa"
    up["deviceInfo"]["tags"] = {
        "qilu_device_id": "RAN-370100-00001-0010",
        "qilu_kind": "barn_climate",
    }
    up["object"] = {"temp_c": 12.5, "co2_ppm": 900}
    topic = TOPIC.replace(EUI, "00000000000000aa")
    rs = parse_uplink(topic, json.dumps(up).encode(), DEVICES, NOW)
    assert {(r.device_id, r.metric) for r in rs} == {
        ("RAN-370100-00001-0010", "temp_c"),
        ("RAN-370100-00001-0010", "co2_ppm"),
    }


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("application/x/device/zz/event/up", b"{}", "not_an_uplink_topic"),
        (TOPIC, b"{not json", "bad_json"),
        (
            TOPIC.replace(EUI, "ffffffffffffffff"),
            json.dumps({**UPLINK, "deviceInfo": {"devEui": "ffffffffffffffff"}}).encode(),
            "unknown_device",
        ),
        (TOPIC, json.dumps({**UPLINK, "object": None}).encode(), "no_decoded_object"),
        (TOPIC, json.dumps({**UPLINK, "object": {"firmware": "2"}}).encode(), "no_known_metrics"),
        (TOPIC, json.dumps({**UPLINK, "time": "yesterday"}).encode(), "bad_time"),
    ],
)
def test_uplinks_without_readings_say_why(topic: str, payload: bytes, reason: str) -> None:
    with pytest.raises(UplinkError) as err:
        parse_uplink(topic, payload, DEVICES, NOW)
    assert err.value.reason == reason


def test_out_of_range_values_are_marked_bad() -> None:
    up = {**UPLINK, "object": {"temperature": 99.0}}
    (r,) = parse_uplink(TOPIC, json.dumps(up).encode(), DEVICES, NOW)
    assert r.quality is Quality.BAD


def test_sample_configuration_is_valid() -> None:
    table = tomllib.loads((Path(__file__).parent.parent / "sample.toml").read_text())
    for name, raw in table["collectors"].items():
        MqttCollector.from_config(name, raw).validate()


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"port": "1883"}, "collectors.m.port"),
        ({"qos": 2}, "collectors.m.qos"),
        (
            {"devices": {"0004a30b001c0530": {"device_id": "x", "kind": "cow"}}},
            "collectors.m.devices.0004a30b001c0530.kind",
        ),
        ({"devices": {"abc": {"device_id": "x", "kind": "collar"}}}, "collectors.m.devices.abc"),
        ({"aliases": {"t": "temperature"}}, "collectors.m.aliases.t"),
        ({"hots": "x"}, "collectors.m.hots"),
    ],
)
def test_bad_configuration_names_the_key(raw: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        MqttCollector.from_config("m", {"type": "mqtt", **raw}).validate()
    assert err.value.key == key


@pytest.mark.parametrize(
    ("raw", "value"),
    [("38.6", 38.6), (" 39 ", 39.0), ("+3.9e1", 39.0), (".5e2", 50.0), (38.6, 38.6), (True, 1.0)],
)
def test_numeric_strings_are_numbers(raw: object, value: float) -> None:
    up = {**UPLINK, "object": {"temperature": raw}}
    (r,) = parse_uplink(TOPIC, json.dumps(up).encode(), DEVICES, NOW)
    assert (r.metric, r.value) == ("body_temp_c", value)


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        ("abc", "\"abc\" is not a number for metric body_temp_c (field 'temperature')"),
        ("38,6", "\"38,6\" is not a number for metric body_temp_c (field 'temperature')"),
        ("1_000", "\"1_000\" is not a number for metric body_temp_c (field 'temperature')"),
        ("٣٨", "\"٣٨\" is not a number for metric body_temp_c (field 'temperature')"),
        ("NaN", "\"NaN\" is not a number for metric body_temp_c (field 'temperature')"),
        ("1e999", "\"1e999\" is not a finite number for metric body_temp_c (field 'temperature')"),
        (None, "null is not a number for metric body_temp_c (field 'temperature')"),
        ([38.6], "[38.6] is not a number for metric body_temp_c (field 'temperature')"),
    ],
)
def test_other_values_are_refused_saying_what_was_wrong(raw: object, detail: str) -> None:
    up = {**UPLINK, "object": {"temperature": raw, "battery": "87"}}
    got = decode_uplink(TOPIC, json.dumps(up).encode(), DEVICES, NOW)
    assert [(r.metric, r.value) for r in got.readings] == [("battery_pct", 87.0)]
    (refused,) = got.refused
    assert refused.reason == "not_a_number"
    assert refused.detail == f"{EUI}: {detail}"
    alone = {**UPLINK, "object": {"rumination_min": "abc"}}  # no alias: no field name shown
    with pytest.raises(UplinkError) as err:
        parse_uplink(TOPIC, json.dumps(alone).encode(), DEVICES, NOW)
    assert err.value.reason == "not_a_number"
    assert err.value.detail == f'{EUI}: "abc" is not a number for metric rumination_min'


def test_an_uplink_without_time_takes_the_receive_time() -> None:
    up = {k: v for k, v in UPLINK.items() if k != "time"}
    rs = parse_uplink(TOPIC, json.dumps(up).encode(), DEVICES, NOW)
    assert {r.ts_us for r in rs} == {NOW}
