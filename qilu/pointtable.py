"""IEC 104 point tables (点表): which information object address is which metric of which device.

A utility describes a telecontrol station by its point table: one row per point with the
information object address (IOA), the ASDU type, the registry device and metric it feeds, a
scale and offset (``value = raw * scale + offset``, in the metric's unit), the unit and a
description. Every column accepts an English or a Chinese header (:data:`COLUMNS`). The same
rows serve both sides:

- the platform imports a utility's CSV or XLSX (storage/point_tables.py validates it against
  the registry and writes the checked table as CSV with the English headers);
- the agent's IEC 104 collector reads that checked CSV, named in its TOML.

:func:`parse_text` is pure: text in, rows and ``LINE: reason`` errors out, each row checked on
its own (the IOA is a number in range and unique, the type is one the collector decodes, the
metric exists and the unit is the metric's). Lines are numbered as a spreadsheet shows them:
the header is line 1.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from qilu.devices import DEVICE_KINDS, MetricSpec
from qilu.inventory import csv_rows

MAX_IOA = (1 << 24) - 1

# ASDU types a point may name: the monitor-direction types the IEC 104 collector decodes
POINT_TYPES: dict[str, int] = {
    "M_SP_NA_1": 1,
    "M_DP_NA_1": 3,
    "M_ME_NA_1": 9,
    "M_ME_NB_1": 11,
    "M_ME_NC_1": 13,
    "M_IT_NA_1": 15,
    "M_SP_TB_1": 30,
    "M_DP_TB_1": 31,
    "M_ME_TD_1": 34,
    "M_ME_TE_1": 35,
    "M_ME_TF_1": 36,
    "M_IT_TB_1": 37,
}
TYPE_NAMES = {v: k for k, v in POINT_TYPES.items()}


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    en: str
    zh: str
    required: bool = True
    aliases: tuple[str, ...] = ()

    @property
    def headers(self) -> tuple[str, ...]:
        return (self.en, self.zh, *self.aliases)


COLUMNS: tuple[Column, ...] = (
    Column("ioa", "ioa", "信息体地址", aliases=("点号", "地址", "information_object_address")),
    Column("type", "type", "类型", aliases=("数据类型", "asdu_type", "type_id")),
    Column("device_id", "device_id", "设备编号", aliases=("设备ID",)),
    Column("metric", "metric", "指标", aliases=("测点", "metric_key")),
    Column("scale", "scale", "系数", required=False, aliases=("倍率", "比例系数")),
    Column("offset", "offset", "偏移", required=False, aliases=("偏移量", "基值")),
    Column("unit", "unit", "单位", required=False),
    Column("description", "description", "描述", required=False, aliases=("名称", "点名", "说明")),
)
HEADER = [c.en for c in COLUMNS]

_METRICS: dict[str, MetricSpec] = {m.key: m for k in DEVICE_KINDS for m in k.metrics}


@dataclass(frozen=True, slots=True)
class PointRow:
    """One point of a station's table; ``line`` is its line in the file it came from."""

    ioa: int
    type_id: int
    device_id: str
    metric: str
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    description: str = ""
    line: int = 0

    def cells(self) -> list[str]:
        return [
            str(self.ioa),
            TYPE_NAMES[self.type_id],
            self.device_id,
            self.metric,
            _num(self.scale),
            _num(self.offset),
            self.unit,
            self.description,
        ]


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


def _num(x: float) -> str:
    return str(int(x)) if x.is_integer() else repr(x)


def _norm(header: str) -> str:
    return re.sub(r"[\s_（）()]+", "", header.strip().lower())


def parse_type(raw: str) -> int | None:
    """``13``, ``M_ME_NC_1`` (any case) -> 13; None if the collector does not decode it."""
    text = raw.strip().upper()
    if text.isdigit():
        n = int(text)
        return n if n in TYPE_NAMES else None
    return POINT_TYPES.get(text)


def _float(raw: str, default: float) -> float | None:
    if not raw:
        return default
    try:
        x = float(raw)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def parse_rows(rows: Iterable[tuple[int, Sequence[str]]]) -> tuple[list[PointRow], list[RowError]]:
    """Rows of a sheet (header first) -> valid points and the errors of the others."""
    points: list[PointRow] = []
    errors: list[RowError] = []
    it = iter(rows)
    first = next(it, None)
    if first is None:
        return [], [RowError(1, "the table is empty: no header")]
    hline, header = first
    wanted = {_norm(h): c for c in COLUMNS for h in c.headers}
    index: dict[str, int] = {}
    for i, h in enumerate(header):
        col = wanted.get(_norm(h)) if h else None
        if col is None:
            continue  # other columns (remarks, 备注) are the utility's own
        if col.key in index:
            errors.append(RowError(hline, f"column {col.en!r} ({col.zh}) appears twice"))
        index[col.key] = i
    missing = [c for c in COLUMNS if c.required and c.key not in index]
    errors.extend(RowError(hline, f"missing required column {c.en!r} ({c.zh})") for c in missing)
    if missing:
        return [], errors
    seen: dict[int, int] = {}
    mapped: dict[tuple[str, str], int] = {}  # (device, metric) -> line: one source per series
    for line, cells in it:

        def cell(key: str, cells: Sequence[str] = cells) -> str:
            i = index.get(key)
            return cells[i].strip() if i is not None and i < len(cells) else ""

        problem, row = _row(line, cell)
        if row is None:
            errors.append(RowError(line, problem))
            continue
        if row.ioa in seen:
            errors.append(RowError(line, f"IOA {row.ioa} is already on line {seen[row.ioa]}"))
            continue
        target = (row.device_id, row.metric)
        if target in mapped:
            errors.append(
                RowError(
                    line,
                    f"{row.device_id} {row.metric} (IOA {row.ioa}) is already on line "
                    f"{mapped[target]}",
                )
            )
            continue
        seen[row.ioa] = line
        mapped[target] = line
        points.append(row)
    return points, errors


def _row(line: int, get: Callable[[str], str]) -> tuple[str, PointRow | None]:  # noqa: PLR0911
    """One data row -> ("", row) or (reason, None); one return per check."""
    raw_ioa = get("ioa")
    if not raw_ioa.isdigit() or not 1 <= int(raw_ioa) <= MAX_IOA:
        return f"ioa {raw_ioa!r} is not an address 1-{MAX_IOA}", None
    type_id = parse_type(get("type"))
    if type_id is None:
        return (
            f"type {get('type')!r} is not a type the collector reads "
            f"({', '.join(f'{v} {k}' for k, v in POINT_TYPES.items())})",
            None,
        )
    device_id, metric = get("device_id"), get("metric")
    if not device_id:
        return "device_id is empty", None
    spec = _METRICS.get(metric)
    if spec is None:
        return f"metric {metric!r} is not a metric key (qilu/devices.py)", None
    scale, offset = _float(get("scale"), 1.0), _float(get("offset"), 0.0)
    if scale is None or scale == 0:
        return f"scale {get('scale')!r} is not a non-zero number", None
    if offset is None:
        return f"offset {get('offset')!r} is not a number", None
    unit = get("unit")
    if unit and unit != spec.unit:
        return (
            f"unit {unit!r} is not the unit of {metric} ({spec.unit!r}): "
            "set scale so the value is in that unit",
            None,
        )
    return "", PointRow(
        int(raw_ioa), type_id, device_id, metric, scale, offset, spec.unit, get("description"), line
    )


def parse_text(text: str) -> tuple[list[PointRow], list[RowError]]:
    return parse_rows(csv_rows(text))


def to_csv(points: Iterable[PointRow]) -> str:
    """The checked table as the agent reads it: English headers, one row per point by IOA."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(HEADER)
    for p in sorted(points, key=lambda p: p.ioa):
        w.writerow(p.cells())
    return out.getvalue()
