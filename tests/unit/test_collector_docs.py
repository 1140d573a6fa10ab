"""Each collector's README lists every key of its configuration model, and no key it lacks.

A collector's configuration is a model (a frozen dataclass, or a pydantic model) that refuses
unknown keys; its README has tables whose first column names the keys (``| Key | ...`` or, for
a point table's CSV, ``| Column | ...``). A key added to the model without a row, or a row left
for a key that went, fails here: the docs cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from collectors.iec104.collector import Iec104Config, PointConfig, StationConfig
from collectors.modbus.collector import ModbusConfig
from collectors.modbus.registers import Point
from collectors.mqtt.collector import DeviceEntry, MqttConfig
from collectors.ocpp.collector import OcppConfig
from collectors.simulated.collector import SimulatedConfig
from qilu.settings import REPO_ROOT

# each collector folder -> the models of its keys: the collector's table, then the tables
# nested in it (a Modbus point, an IEC 104 station and its points)
MODELS: dict[str, tuple[type, ...]] = {
    "ocpp": (OcppConfig,),
    "modbus": (ModbusConfig, Point),
    "mqtt": (MqttConfig,),
    "iec104": (Iec104Config, StationConfig, PointConfig),
    "simulated": (SimulatedConfig,),
}
# values that are inline tables, described in the row of the key that holds them
INLINE: dict[str, tuple[type, ...]] = {"mqtt": (DeviceEntry,)}

_ROW = re.compile(r"^\|([^|\n]*)\|")
_CODE = re.compile(r"`([^`]+)`")


def keys_of(model: type) -> set[str]:
    if isinstance(model, type) and issubclass(model, BaseModel):
        return set(model.model_fields) | {"type"}  # type selects the collector, checked apart
    assert dataclasses.is_dataclass(model), model
    return {f.name for f in dataclasses.fields(model)}


def documented_keys(readme: str) -> set[str]:
    """Names in backticks in the first column of the README's key tables."""
    found: set[str] = set()
    in_table = False
    for line in readme.splitlines():
        m = _ROW.match(line)
        if not m:
            in_table = False
            continue
        first = m.group(1).strip()
        if first in ("Key", "Column"):
            in_table = True
        elif in_table and not set(first) <= {"-", ":"}:
            found |= set(_CODE.findall(first))
    return found


def readme(folder: str) -> str:
    return (REPO_ROOT / "collectors" / folder / "README.md").read_text(encoding="utf-8")


def test_every_collector_folder_is_covered() -> None:
    """A new collector folder must say here which models its README documents."""
    folders = {p.parent.name for p in Path(REPO_ROOT / "collectors").glob("*/README.md")}
    assert folders == set(MODELS)


@pytest.mark.parametrize("folder", sorted(MODELS))
def test_readme_tables_list_every_config_key(folder: str) -> None:
    text = readme(folder)
    documented = documented_keys(text)
    missing = {
        f"{model.__name__}.{key}"
        for model in MODELS[folder]
        for key in keys_of(model)
        if key not in documented
    }
    assert not missing, f"collectors/{folder}/README.md: no table row for {sorted(missing)}"
    stale = documented - set().union(*(keys_of(m) for m in MODELS[folder]))
    assert not stale, f"collectors/{folder}/README.md: rows for keys no model has: {stale}"
    for model in INLINE.get(folder, ()):
        spans = " ".join(_CODE.findall(text))
        absent = {k for k in keys_of(model) if not re.search(rf"\b{k}\b", spans)}
        assert not absent, f"collectors/{folder}/README.md: {model.__name__} lacks {absent}"


def test_the_check_finds_a_missing_row() -> None:
    """The parser is not vacuous: a table without max_gap misses it."""
    table = "| Key | Default | Meaning |\n|---|---|---|\n| `host`, `port` | x | y |\n\ntext\n"
    assert documented_keys(table) == {"host", "port"}
    assert "max_gap" in keys_of(ModbusConfig) - documented_keys(table)
