"""OCPP messages -> readings of device kind ``charging_pile``. Pure: payloads in, readings out.

The ``ocpp`` library hands CSMS handlers the message's fields in snake_case (nested dicts
too); these functions turn them into readings:

- StatusNotification -> ``connector_status`` (index into ``qilu.devices.CONNECTOR_STATES``) and
  ``fault`` (1 when the status is Faulted or an error code other than NoError is reported);
- MeterValues (and 2.0.1 TransactionEvent meter values) -> ``energy_kwh`` from
  Energy.Active.Import.Register and ``power_kw`` from Power.Active.Import, converted from
  Wh/W (OCPP's defaults) or kWh/kW; per-phase and EV-side samples are left out;
- 1.6 StopTransaction's ``transactionData`` -> the same as MeterValues, on the connector the
  transaction started on (:mod:`.transactions`);
- BootNotification and Heartbeat -> the last known ``connector_status`` of each connector of
  that charge point, re-stated at the time of the message: the pile is alive and its status
  still holds (charge points send StatusNotification only on change).

Connector 0 (the charge point as a whole) maps to no device and yields no readings.

:class:`Authorization` answers Authorize, StartTransaction and TransactionEvent id tokens.

:class:`collectors.base.DistinctTimes` keeps two different values of one connector's metric
apart when the charge point stamps them with the same time (OCPP times are often whole
seconds: a pile going Preparing -> Charging within a second sends two StatusNotifications with
one timestamp). The
platform stores one reading per device, metric and instant, and refuses a second, different
one as ``conflicting_duplicate``; so the later reading is moved 1 µs after the earlier, in the
order the messages arrived. An identical repeat keeps its time (the platform drops it).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from qilu.contract import Quality, Reading
from qilu.devices import CONNECTOR_STATES

STATE_CODE = {name: i for i, name in enumerate(CONNECTOR_STATES)}
# OCPP 2.0.1 ConnectorStatusEnumType -> the 1.6 codes the platform stores
STATUS_201 = {"Available": 0, "Occupied": 1, "Reserved": 6, "Unavailable": 7, "Faulted": 8}
# OCPP 2.0.1 ChargingStateEnumType (TransactionEvent) -> 1.6 codes
CHARGING_STATE_201 = {"EVConnected": 1, "Charging": 2, "SuspendedEVSE": 3, "SuspendedEV": 4}
ENERGY = "Energy.Active.Import.Register"
POWER = "Power.Active.Import"
Policy = Literal["accept", "allow_list", "reject"]
_FRACTION = re.compile(r"\.(\d+)")


def parse_time(text: str) -> int:
    """RFC 3339 -> integer microseconds UTC (more than 6 fraction digits are cut)."""
    m = _FRACTION.search(text)
    if m:
        text = text[: m.start()] + "." + (m.group(1) + "000000")[:6] + text[m.end() :]
    ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if ts.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {text!r}")
    delta = ts.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def time_or(text: object, now_us: int) -> int:
    if isinstance(text, str) and text:
        try:
            return parse_time(text)
        except ValueError:
            return now_us
    return now_us


@dataclass(frozen=True, slots=True)
class DeviceNames:
    """Which registered device a (charge point, connector) is."""

    pattern: str = "{charge_point}"  # e.g. "{charge_point}-{connector}" for multi-connector
    overrides: Mapping[str, str] = field(default_factory=dict)  # "<cp id>/<connector>" -> id

    def device(self, charge_point: str, connector: int) -> str | None:
        if connector <= 0:
            return None
        key = f"{charge_point}/{connector}"
        if key in self.overrides:
            return self.overrides[key]
        return self.pattern.format(charge_point=charge_point, connector=connector)


@dataclass(frozen=True, slots=True)
class Authorization:
    """Which id tags (1.6) / id tokens (2.0.1) may charge: all, those listed, or none.

    OCPP compares id tokens case-insensitively, so does this."""

    policy: Policy = "reject"
    id_tags: frozenset[str] = frozenset()

    @classmethod
    def of(cls, policy: Policy, id_tags: Iterable[str]) -> Authorization:
        return cls(policy, frozenset(t.casefold() for t in id_tags))

    def accepts(self, id_tag: str) -> bool:
        if self.policy == "accept":
            return True
        return self.policy == "allow_list" and id_tag.casefold() in self.id_tags

    def status(self, id_tag: str) -> str:
        """The ``status`` of an IdTagInfo / IdTokenInfo (same words in 1.6 and 2.0.1)."""
        return "Accepted" if self.accepts(id_tag) else "Invalid"


def status_readings(device: str, code: int, fault: bool, ts_us: int) -> list[Reading]:
    return [
        Reading(device, "connector_status", ts_us, float(code)),
        Reading(device, "fault", ts_us, 1.0 if fault else 0.0),
    ]


def status_16(status: str, error_code: str) -> tuple[int, bool] | None:
    code = STATE_CODE.get(status)
    if code is None:
        return None
    return code, status == "Faulted" or (error_code or "NoError") != "NoError"


def status_201(connector_status: str) -> tuple[int, bool] | None:
    code = STATUS_201.get(connector_status)
    if code is None:
        return None
    return code, connector_status == "Faulted"


def _number(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _unit(sample: Mapping[str, Any]) -> tuple[str, int]:
    """(unit, power-of-ten multiplier) of a sampled value, 1.6 or 2.0.1 style."""
    uom = sample.get("unit_of_measure")
    if isinstance(uom, Mapping):
        return str(uom.get("unit") or ""), int(uom.get("multiplier") or 0)
    return str(sample.get("unit") or ""), 0


def meter_readings(device: str, meter_value: Iterable[Any], now_us: int) -> list[Reading]:
    out: list[Reading] = []
    for mv in meter_value:
        if not isinstance(mv, Mapping):
            continue
        ts = time_or(mv.get("timestamp"), now_us)
        for sv in mv.get("sampled_value") or ():
            if not isinstance(sv, Mapping) or sv.get("phase") or sv.get("location") == "EV":
                continue
            measurand = sv.get("measurand") or ENERGY
            value = _number(sv.get("value"))
            if value is None:
                continue
            unit, mult = _unit(sv)
            value *= 10.0**mult
            if measurand == ENERGY:
                kwh = value if unit == "kWh" else value / 1000.0  # Wh is the default unit
                out.append(Reading(device, "energy_kwh", ts, kwh, Quality.GOOD))
            elif measurand == POWER:
                kw = value if unit == "kW" else value / 1000.0  # W is the default unit
                out.append(Reading(device, "power_kw", ts, kw, Quality.GOOD))
    return out
