"""ChirpStack v4 uplink events -> readings. Pure: bytes in, readings (or a reason) out.

ChirpStack's MQTT integration publishes every uplink as JSON on
``application/<application id>/device/<devEUI>/event/up``; with a codec on the device profile,
its ``object`` field holds the decoded payload, e.g.::

    {"deduplicationId": "...", "time": "2026-11-23T08:00:00.123456789Z",
     "deviceInfo": {"applicationId": "...", "devEui": "0004a30b001c0530",
                    "deviceName": "collar-17", "tags": {"qilu_device_id": "..."}},
     "fCnt": 42, "fPort": 1, "data": "base64...",
     "object": {"body_temp_c": 38.6, "activity": 310, "battery": 87}}

A :class:`DeviceMap` says which registered device (and so which device kind) a devEUI is, and
how ``object`` field names map to the kind's metric keys. Fields that are not metrics of the
kind are ignored. A metric's value must be a number: a JSON number, a boolean (0/1) or a string
holding a decimal number (codecs written in JavaScript often send ``"38.6"``); anything else is
refused with the reason ``not_a_number`` and a detail that names the value and the metric, and
the uplink's other fields still become readings (:func:`decode_uplink`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from qilu.contract import Quality, Reading
from qilu.devices import KINDS

TOPIC = re.compile(r"^application/([^/]+)/device/([0-9A-Fa-f]{16})/event/up$")
_FRACTION = re.compile(r"\.(\d+)")


class UplinkError(ValueError):
    """An uplink that yields no readings; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# a decimal number as text: what a codec writes for a number, nothing Python-specific
# (float() would also take "1_000", "nan", "infinity" and non-ASCII digits)
_NUMBER = re.compile(r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$")


@dataclass(frozen=True, slots=True)
class Uplink:
    """What one uplink yields: readings, and the metric fields refused (``not_a_number``)."""

    readings: list[Reading]
    refused: list[UplinkError]


def metric_value(raw: object, metric: str, name: str) -> float:
    """A decoded field's value as the number the metric needs, or UplinkError saying why not
    (``name``: the field's name in ``object``, shown when it differs from the metric key)."""
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    value: float | None = None
    if isinstance(raw, int | float):
        value = float(raw)
    elif isinstance(raw, str) and _NUMBER.match(raw.strip()):
        value = float(raw.strip())
    if value is not None and math.isfinite(value):
        return value
    shown = json.dumps(raw, ensure_ascii=False) if _jsonable(raw) else repr(raw)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    field_ = f" (field {name!r})" if name != metric else ""
    what = "a finite number" if value is not None else "a number"
    raise UplinkError("not_a_number", f"{shown} is not {what} for metric {metric}{field_}")


def _jsonable(raw: object) -> bool:
    try:
        json.dumps(raw)
    except (TypeError, ValueError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class LoraDevice:
    device_id: str  # registry device id
    kind: str  # a key of qilu.devices.KINDS


@dataclass(frozen=True, slots=True)
class DeviceMap:
    devices: dict[str, LoraDevice] = field(default_factory=dict)  # devEUI (lowercase) -> device
    # object field -> metric key, for codecs whose names differ from ours
    aliases: dict[str, str] = field(default_factory=dict)
    tag_device_id: str = "qilu_device_id"  # device tags may carry the id and kind instead
    tag_kind: str = "qilu_kind"

    def lookup(self, dev_eui: str, tags: object) -> LoraDevice | None:
        dev = self.devices.get(dev_eui.lower())
        if dev is not None:
            return dev
        if isinstance(tags, dict):
            did, kind = tags.get(self.tag_device_id), tags.get(self.tag_kind)
            if isinstance(did, str) and did and isinstance(kind, str) and kind in KINDS:
                return LoraDevice(did, kind)
        return None


def parse_time(text: str) -> int:
    """RFC 3339 (ChirpStack writes nanoseconds) -> integer microseconds UTC."""
    m = _FRACTION.search(text)
    if m:  # keep microseconds: Python's parser takes at most 6 fraction digits
        text = text[: m.start()] + "." + (m.group(1) + "000000")[:6] + text[m.end() :]
    ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if ts.tzinfo is None:
        raise ValueError("timestamp without a time zone")
    delta = ts.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def parse_uplink(topic: str, payload: bytes, devices: DeviceMap, now_us: int) -> list[Reading]:
    """One uplink event -> its readings, or UplinkError saying why there are none (the first
    refused field's, when every metric field was refused)."""
    up = decode_uplink(topic, payload, devices, now_us)
    if not up.readings:
        raise up.refused[0]
    return up.readings


def decode_uplink(topic: str, payload: bytes, devices: DeviceMap, now_us: int) -> Uplink:
    """One uplink event -> its readings and its refused metric fields; UplinkError when the
    uplink as a whole yields nothing (bad topic or JSON, unknown device, no ``object``, bad
    time, no field that is a metric of the device's kind). An uplink without ``time`` takes
    ``now_us``, the time it was received."""
    m = TOPIC.match(topic)
    if not m:
        raise UplinkError("not_an_uplink_topic", topic)
    try:
        event = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UplinkError("bad_json", str(exc)) from exc
    if not isinstance(event, dict):
        raise UplinkError("bad_json", "event is not an object")
    info = event.get("deviceInfo")
    info = info if isinstance(info, dict) else {}
    dev_eui = str(info.get("devEui") or m.group(2)).lower()
    dev = devices.lookup(dev_eui, info.get("tags"))
    if dev is None:
        raise UplinkError("unknown_device", dev_eui)
    obj = event.get("object")
    if not isinstance(obj, dict) or not obj:
        raise UplinkError("no_decoded_object", f"{dev_eui}: no codec output ('object')")
    when = event.get("time")
    try:
        ts = parse_time(when) if isinstance(when, str) else now_us
    except ValueError as exc:
        raise UplinkError("bad_time", f"{dev_eui}: {when!r}") from exc
    kind = KINDS[dev.kind]
    out, refused = [], []
    for name, raw in obj.items():
        key = devices.aliases.get(str(name), str(name))
        spec = kind.metric(key)
        if spec is None:
            continue
        try:
            value = metric_value(raw, key, str(name))
        except UplinkError as exc:
            refused.append(UplinkError(exc.reason, f"{dev_eui}: {exc.detail}"))
            continue
        quality = Quality.GOOD if spec.low <= value <= spec.high else Quality.BAD
        out.append(Reading(dev.device_id, key, ts, value, quality))
    if not out and not refused:
        raise UplinkError("no_known_metrics", f"{dev_eui}: none of {sorted(obj)} is a metric")
    return Uplink(out, refused)
