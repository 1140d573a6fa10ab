"""Point tables as data: the agent reads the station's table from its TOML, or refuses to start
with ``FILE:LINE: reason`` / the key that is wrong."""

# ruff: noqa: S101 - pytest asserts

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from collectors.iec104.collector import Iec104Collector, Target
from qilu.errors import ConfigError
from qilu.pointtable import parse_text, to_csv

SAMPLE = Path(__file__).parent.parent / "sample.toml"

TABLE_ZH = """信息体地址,类型,设备编号,指标,系数,偏移,单位,描述,备注
16385,M_ME_NC_1,SUB-370100-00001-0004,voltage_kv,,,kV,220kV I母线电压,
16386,11,SUB-370100-00001-0004,frequency_hz,0.01,,Hz,频率,
1,m_sp_tb_1,SUB-370100-00001-0006,sf6_alarm,,,,SF6低气压告警,
"""


def build(station: dict[str, Any], **top: Any) -> Iec104Collector:
    base = {"name": "s1", "host": "127.0.0.1", **station}
    c = Iec104Collector.from_config("sub", {"type": "iec104", "stations": [base], **top})
    c.validate()
    return c


def test_a_table_file_with_chinese_headers(tmp_path: Path) -> None:
    path = tmp_path / "station.csv"
    path.write_text(TABLE_ZH, encoding="utf-8")
    c = build({"point_table": str(path)})
    # what check-config --online asks the platform about: the table's devices, from the file
    assert [d.device_id for d in c.devices()] == ["SUB-370100-00001-0004", "SUB-370100-00001-0006"]
    assert c.stations[0].table == {
        16385: Target("SUB-370100-00001-0004", "voltage_kv", 1.0, 0.0),
        16386: Target("SUB-370100-00001-0004", "frequency_hz", 0.01, 0.0),
        1: Target("SUB-370100-00001-0006", "sf6_alarm", 1.0, 0.0),
    }


def test_the_checked_csv_round_trips() -> None:
    rows, errors = parse_text(TABLE_ZH)
    assert errors == []
    again, errors = parse_text(to_csv(rows))
    assert errors == []
    assert [r.cells() for r in again] == sorted((r.cells() for r in rows), key=lambda c: int(c[0]))
    assert to_csv(rows).splitlines()[0] == "ioa,type,device_id,metric,scale,offset,unit,description"


def test_a_bad_row_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "station.csv"
    path.write_text(TABLE_ZH + "16385,13,SUB-X,voltage_kv,,,,\n17000,13,SUB-X,volts,,,,\n")
    with pytest.raises(ConfigError) as e:
        build({"point_table": str(path)})
    assert e.value.key == f"{path}:5"
    assert "IOA 16385 is already on line 2" in e.value.problem
    assert "(and 1 more)" in e.value.problem


def pt(**kw: Any) -> dict[str, Any]:
    """A station with one inline point (``kw`` overrides the point's keys)."""
    return {"points": [{"ioa": 1, "device_id": "D", "metric": "voltage_kv", **kw}]}


@pytest.mark.parametrize(
    ("station", "key", "problem"),
    [
        (pt(metric="nope"), "stations[0].points[0]", "not a metric key"),
        (pt(unit="V"), "stations[0].points[0]", "not the unit"),
        (pt(type="C_SC_NA_1"), "stations[0].points[0]", "not a type"),
        (pt(ioa=0), "stations[0].points[0].ioa", "at least 1"),
        ({}, "stations[0].point_table", "no points"),
        ({"point_table": "/nonexistent/t.csv"}, "/nonexistent/t.csv", "cannot read"),
        ({**pt(), "t2": 20.0}, "stations[0].t2", "less than t1"),
        ({**pt(), "timezone": "Mars/Base"}, "stations[0].timezone", "not a time zone"),
        ({**pt(), "k": 12, "w": 9}, "stations[0].w", "at most two thirds of k (12): 9"),
        ({**pt(), "gi_timeout_s": 0}, "stations[0].gi_timeout_s", "greater than 0"),
        (
            {"points": [*pt()["points"], {"ioa": 2, "device_id": "D", "metric": "voltage_kv"}]},
            "stations[0].points[1]",
            "D voltage_kv (IOA 2) is already on line",
        ),
    ],
)
def test_config_errors_name_the_key(station: dict[str, Any], key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as e:
        build(station)
    assert e.value.key.removeprefix("collectors.sub.") == key
    assert problem in e.value.problem


def test_the_sample_validates(tmp_path: Path) -> None:
    raw = tomllib.loads(SAMPLE.read_text())["collectors"]["sub_iec104"]
    table = tmp_path / "t.csv"
    table.write_text(TABLE_ZH, encoding="utf-8")
    raw["stations"][0]["point_table"] = str(table)  # the sample's path is the agent's
    c = Iec104Collector.from_config("sub_iec104", raw)
    c.validate()
    assert [len(s.table) for s in c.stations] == [3, 3]


def test_equal_scales_and_offsets_share_one_float() -> None:
    """A large table keeps one float per distinct scale/offset, not two per point (RSS of
    10 x 2,000 points, ADR 0014); the values are the configured ones."""
    points = [
        {"ioa": i, "device_id": f"D-{i}", "metric": "voltage_kv", "scale": 0.5}
        for i in range(1, 301)
    ]
    table = build({"points": points}).stations[0].table
    targets = list(table.values())
    assert {(t.scale, t.offset) for t in targets} == {(0.5, 0.0)}
    assert len({id(t.scale) for t in targets}) == 1
    assert len({id(t.offset) for t in targets}) == 1
