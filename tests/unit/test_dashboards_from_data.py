"""Sector dashboards are generated from the device kinds and the target catalog: the dashboard
code names no metric, kind or target, and what is added to the data gets its panels."""

from __future__ import annotations

import ast
import re
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
from grafana_foundation_sdk.models import dashboard as gdash

from dashboards import provisioning, sectors
from dashboards.board import BuiltDashboard
from dashboards.model import SqlSpec
from qilu import devices as qdevices
from qilu.catalog import Catalog, Target, load_catalog
from qilu.contract import Sector
from qilu.devices import DEVICE_KINDS, KINDS, Aggregate, Chart, DeviceKind, MetricKind, MetricSpec
from qilu.settings import REPO_ROOT

CATALOG = load_catalog()


def _names() -> set[str]:
    return (
        {m.key for k in DEVICE_KINDS for m in k.metrics}
        | {k.key for k in DEVICE_KINDS}
        | {t.id for t in (*CATALOG.targets, *CATALOG.reported)}
    )


def _literals(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        (n.lineno, n.value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]


def test_dashboard_code_names_no_metric_kind_or_target() -> None:
    names = _names()
    # the name itself, or quoted in SQL ('oil_temp_c'); prose may use a plain word
    found = [
        f"{path.name}:{line}: {name}"
        for path in sorted((REPO_ROOT / "dashboards").glob("*.py"))
        for line, text in _literals(path)
        for name in names
        if text == name or re.search(rf"'{re.escape(name)}'", text)
    ]
    assert not found


def test_the_scan_catches_a_literal(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("SQL = \"WHERE m.key = 'oil_temp_c'\"\nKIND = 'collar'\n", encoding="utf-8")
    hits = [t for _, t in _literals(bad) for n in _names() if t == n or f"'{n}'" in t]
    assert hits == ["WHERE m.key = 'oil_temp_c'", "collar"]


WEATHER = DeviceKind(
    "weather_mast",
    Sector.RANCH,
    "Weather mast",
    "气象桅杆",
    60,
    300,
    (
        MetricSpec(
            "wind_m_s",
            "m/s",
            MetricKind.GAUGE,
            0,
            80,
            "wind speed",
            chart=Chart("Wind (strongest)", Aggregate.MAX, ((None, "green"), (20.0, "red"))),
            label="wind",
        ),
        MetricSpec("storm_alarm", "", MetricKind.ALARM, 0, 1, "storm warning", label="storm"),
    ),
    plural_en="Weather masts",
)


def _with_target(cat: Catalog, kind: str) -> Catalog:
    base = cat.targets[0]
    extra = Target.model_validate(
        {
            **base.model_dump(exclude={"baseline"}),
            "id": "ranch-weather-masts-2030",
            "sector": "ranch",
            "name_en": "Ranches with a weather mast reporting",
            "kind": "ratio",
            "comparator": ">=",
            "threshold": 0.8,
            "due": date(2030, 12, 31),
            "measure": {"unit": "site", "device_kind": kind, "sector": "ranch"},
        }
    )
    return cat.model_copy(update={"targets": (*cat.targets, extra)})


def _panels(built: BuiltDashboard) -> dict[str, list[SqlSpec]]:
    out: dict[str, list[SqlSpec]] = {}
    for q in built.sql:
        assert isinstance(q.query, SqlSpec)
        out.setdefault(q.panel, []).append(q.query)
    return out


def test_a_new_kind_metric_and_target_get_their_panels(monkeypatch: pytest.MonkeyPatch) -> None:
    # a kind the catalog may name (its measure checks kinds against qilu.devices.KINDS)
    monkeypatch.setitem(qdevices.KINDS, WEATHER.key, WEATHER)
    kinds = (*DEVICE_KINDS, WEATHER)
    cat = _with_target(CATALOG, WEATHER.key)
    before = _panels(sectors.build(Sector.RANCH, CATALOG))
    after = _panels(sectors.build(Sector.RANCH, cat, kinds))
    added = set(after) - set(before)
    assert added == {
        "Weather masts online now",
        "Weather masts online by city",
        "Wind (strongest)",
        "Weather masts in alarm",
        "Weather masts in alarm now",
        "Ranches with a weather mast reporting (due 2030)",
        "Ranches with a weather mast reporting (due 2030): by city",
        "Ranches with a weather mast reporting (due 2030): per day",
    }
    assert set(before) <= set(after)
    (wind,) = after["Wind (strongest)"]
    assert "m.key = 'wind_m_s'" in wind.sql
    assert "d.kind = 'weather_mast'" in wind.sql
    assert "max(r.max)" in wind.sql
    (alarms,) = after["Weather masts in alarm now"]
    assert "('storm_alarm', 'storm')" in alarms.sql
    (per_day,) = after["Ranches with a weather mast reporting (due 2030): per day"]
    assert "d.target_id = 'ranch-weather-masts-2030'" in per_day.sql
    (now,) = after["Ranches with a weather mast reporting (due 2030)"]
    assert "c.kind = 'weather_mast'" in now.sql
    assert "device_connected" in now.sql
    assert "sites_in_service" in now.sql


def test_a_new_metric_of_an_existing_kind_gets_its_chart() -> None:
    collar = KINDS["collar"]
    steps = replace(collar.metrics[1], chart=Chart("Activity (mean)", Aggregate.MEAN))
    kinds = tuple(
        replace(k, metrics=(k.metrics[0], steps, *k.metrics[2:])) if k is collar else k
        for k in DEVICE_KINDS
    )
    panels = _panels(sectors.build(Sector.RANCH, CATALOG, kinds))
    (activity,) = panels["Activity (mean)"]
    assert "m.key = 'activity'" in activity.sql
    assert "Activity (mean)" not in _panels(sectors.build(Sector.RANCH, CATALOG))


def test_the_provisioned_sector_boards_are_the_generated_ones() -> None:
    built = {b.uid: b for b in provisioning.all_dashboards(CATALOG)}
    for b in sectors.build_all(CATALOG):
        assert _panels(built[b.uid]) == _panels(b)
    # every target of a sector and every kind has its panels on its sector's board
    for t in CATALOG.targets:
        if t.sector in {s.value for s in sectors.BOARDS}:
            board = built[sectors.BOARDS[Sector(t.sector)].uid]
            assert sectors.target_title(t) in _panels(board), t.id
    for k in DEVICE_KINDS:
        assert f"{k.plural} online now" in _panels(built[sectors.BOARDS[k.sector].uid])
    # titles name panels (Grafana's links, the SQL tests): one panel per title on a board
    for b in built.values():
        titles = [p.title for p in b.model.panels or [] if not isinstance(p, gdash.RowPanel)]
        assert len(titles) == len(set(titles)), b.uid
