"""IEC 104 point tables on their own: headers in either language, row checks with lines, CSV
in UTF-8 or GB18030 and XLSX, and the checked CSV the agent reads (qilu/pointtable.py,
storage/point_tables.read_rows)."""

from __future__ import annotations

import io

import pytest
from openpyxl import Workbook

from qilu.pointtable import PointRow, RowError, parse_text, to_csv
from storage.point_tables import PointTableError, read_rows

ZH = (
    "信息体地址,类型,设备编号,指标,系数,偏移,单位,描述\n"
    "16385,M_ME_NB_1,SUB-1-0001,oil_temp_c,0.1,-40,degC,1号主变油温\n"
)


def test_chinese_and_english_headers_read_the_same() -> None:
    en = "ioa,type,device_id,metric,scale,offset,unit,description\n"
    en += "16385,11,SUB-1-0001,oil_temp_c,0.1,-40,degC,1号主变油温\n"
    a, errors_a = parse_text(ZH)
    b, errors_b = parse_text(en)
    assert errors_a == errors_b == []
    assert (
        a
        == b
        == [PointRow(16385, 11, "SUB-1-0001", "oil_temp_c", 0.1, -40.0, "degC", "1号主变油温", 2)]
    )


def test_aliases_and_extra_columns() -> None:
    text = "点号,数据类型,设备编号,测点,倍率,备注\n1,m_sp_na_1,SUB-1-0006,sf6_alarm,,遥信\n"
    rows, errors = parse_text(text)
    assert errors == []
    assert (rows[0].ioa, rows[0].type_id, rows[0].scale) == (1, 1, 1.0)


def test_every_bad_row_is_reported_with_its_line() -> None:
    text = (
        "ioa,type,device_id,metric,scale,unit\n"
        "0,13,D,voltage_kv,,\n"  # 2: address 0
        "1,C_SC_NA_1,D,voltage_kv,,\n"  # 3: a command type
        "2,13,,voltage_kv,,\n"  # 4: no device
        "3,13,D,volts,,\n"  # 5: no such metric
        "4,13,D,voltage_kv,0,\n"  # 6: scale 0
        "5,13,D,voltage_kv,,V\n"  # 7: another unit
        "6,13,D,voltage_kv,,kV\n"  # 8: good
        "6,13,D,frequency_hz,,\n"  # 9: address again
    )
    rows, errors = parse_text(text)
    assert [r.ioa for r in rows] == [6]
    assert [e.line for e in errors] == [2, 3, 4, 5, 6, 7, 9]
    assert errors[-1] == RowError(9, "IOA 6 is already on line 8")
    assert "not a type the collector reads" in errors[1].reason


def test_one_device_metric_mapped_twice_is_refused() -> None:
    text = (
        "ioa,type,device_id,metric\n"
        "1,13,D,voltage_kv\n"  # 2
        "2,13,D,frequency_hz\n"  # 3
        "3,13,D,voltage_kv\n"  # 4: D's voltage again, from another address
        "4,13,E,voltage_kv\n"  # 5: another device's voltage: fine
    )
    rows, errors = parse_text(text)
    assert [r.ioa for r in rows] == [1, 2, 4]
    assert errors == [RowError(4, "D voltage_kv (IOA 3) is already on line 2")]


def test_missing_columns_are_errors_of_line_1() -> None:
    rows, errors = parse_text("ioa,device_id\n1,D\n")
    assert rows == []
    assert [str(e) for e in errors] == [
        "line 1: missing required column 'type' (类型)",
        "line 1: missing required column 'metric' (指标)",
    ]


def test_gb18030_csv_and_xlsx_files() -> None:
    rows, errors = read_rows(ZH.encode("gb18030"), "table.csv")
    assert errors == []
    assert rows[0].description == "1号主变油温"
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    for line in ZH.splitlines():
        ws.append(
            [float(c) if c.replace(".", "").lstrip("-").isdigit() else c for c in line.split(",")]
        )
    buf = io.BytesIO()
    wb.save(buf)
    xrows, xerrors = read_rows(buf.getvalue(), "table.xlsx")
    assert xerrors == []
    assert [r.cells() for r in xrows] == [r.cells() for r in rows]


def test_unreadable_files_are_refused() -> None:
    with pytest.raises(PointTableError, match="not valid utf-8"):
        read_rows(b"\xff\xfe\x00bad", "t.csv", encoding="utf-8")
    with pytest.raises(PointTableError, match="XLSX"):
        read_rows(b"PK\x03\x04 not a zip", "t.xlsx")


def test_the_checked_csv_is_sorted_and_reads_back() -> None:
    rows, _ = parse_text(ZH.replace("16385", "20") + "3,13,SUB-1-0002,voltage_kv,,,kV,\n")
    text = to_csv(rows)
    assert [line.split(",")[0] for line in text.splitlines()] == ["ioa", "3", "20"]
    again, errors = parse_text(text)
    assert errors == []
    assert sorted(r.cells() for r in again) == sorted(r.cells() for r in rows)
