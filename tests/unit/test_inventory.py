"""Inventory parsing and validation on captured files (tests/fixtures/inventory/), no I/O."""

from __future__ import annotations

from pathlib import Path

import pytest

from qilu.catalog import load_catalog
from qilu.contract import Sector
from qilu.inventory import (
    Current,
    InventoryError,
    diff,
    export_rows,
    header,
    parse,
    parse_bool,
    parse_voltage,
    to_csv,
)
from qilu.registry import Device, Site

FIX = Path(__file__).parents[1] / "fixtures" / "inventory"
CATALOG = load_catalog()


def _parse(name: str, sector: str, **kw: object) -> object:
    fmt = "xlsx" if name.endswith(".xlsx") else "csv"
    return parse((FIX / name).read_bytes(), Sector(sector), CATALOG, fmt=fmt, **kw)  # type: ignore[arg-type]


def test_the_three_sectors_parse_in_their_formats_and_encodings() -> None:
    ch = parse((FIX / "charging_ok.csv").read_bytes(), Sector.CHARGING, CATALOG)
    assert ch.ok
    assert ch.encoding == "utf-8-sig"
    assert (ch.rows, len(ch.sites), len(ch.devices)) == (325, 45, 325)
    pile = ch.devices["CS370800-0001-01"]
    assert pile == Device("CS370800-0001-01", "CS370800-0001", "charging_pile")
    site = ch.sites["CS370800-0001"]
    assert site.city_code == "370800"
    assert site.public
    assert site.networked

    gb = parse((FIX / "charging_gb18030.csv").read_bytes(), Sector.CHARGING, CATALOG)
    assert gb.ok
    assert gb.encoding == "gb18030"
    assert gb.sites == ch.sites
    assert gb.devices == ch.devices

    ss = parse((FIX / "substation_ok.xlsx").read_bytes(), Sector.SUBSTATION, CATALOG, fmt="xlsx")
    assert ss.ok
    assert (ss.rows, len(ss.sites), len(ss.devices)) == (237, 50, 237)
    assert {s.voltage_kv for s in ss.sites.values()} <= {110, 220, 500, 1000}
    assert all(not s.gis for s in ss.sites.values() if s.voltage_kv < 220)
    assert {d.kind for d in ss.devices.values()} <= {"transformer", "bus_meter", "gis_monitor"}

    rf = parse((FIX / "ranch_ok.csv").read_bytes(), Sector.RANCH, CATALOG)
    assert rf.ok
    assert len(rf.sites) == 15
    kinds = {d.kind for d in rf.devices.values()}  # Chinese kind names -> keys
    assert kinds <= {"collar", "barn_climate", "water_trough", "feed_silo"}
    assert "collar" in kinds


def test_each_bad_row_is_reported_with_its_line_and_reason() -> None:
    inv = parse((FIX / "charging_errors.csv").read_bytes(), Sector.CHARGING, CATALOG)
    assert not inv.ok
    assert inv.error_count == 4
    got = {e.line: e.reason for e in inv.errors}
    assert "unknown city '379900'" in got[6]
    assert "duplicate device id" in got[10]
    assert "first on line 9" in got[10]
    assert "'maybe' is not a boolean" in got[13]
    assert "name not as on line 20" in got[21]

    inv = parse((FIX / "substation_errors.csv").read_bytes(), Sector.SUBSTATION, CATALOG)
    got = {e.line: e.reason for e in inv.errors}
    assert set(got) == {4, 8, 12}
    assert "voltage class 380 kV out of range" in got[4]
    assert "unknown device kind 'windmill'" in got[8]
    assert "collar belongs to ranch, not substation" in got[12]


def test_a_missing_required_column_is_an_error_of_the_header() -> None:
    inv = parse((FIX / "ranch_missing_column.csv").read_bytes(), Sector.RANCH, CATALOG)
    assert [str(e) for e in inv.errors] == ["line 1: missing required column 'smart' (智慧牧场)"]
    assert inv.rows == 0  # no row is validated against an incomplete header


def test_the_wrong_encoding_is_a_clear_error() -> None:
    with pytest.raises(InventoryError, match=r"not valid utf-8 \(line 1.*--encoding gb18030"):
        parse(
            (FIX / "charging_gb18030.csv").read_bytes(),
            Sector.CHARGING,
            CATALOG,
            encoding="utf-8",
        )
    with pytest.raises(InventoryError, match="unknown encoding"):
        parse(b"site_id\n", Sector.CHARGING, CATALOG, encoding="klingon")
    with pytest.raises(InventoryError, match="empty"):
        parse(b"\n\n", Sector.CHARGING, CATALOG)


def test_a_file_of_another_sector_says_so() -> None:
    inv = parse((FIX / "ranch_ok.csv").read_bytes(), Sector.SUBSTATION, CATALOG)
    reasons = [e.reason for e in inv.errors]
    assert "missing required column 'voltage_kv' (电压等级)" in reasons
    assert any("smart" in w and "ignored" in w for w in inv.warnings)


def test_headers_cells_and_spellings() -> None:
    data = (
        "Site ID,SITE_NAME,地市,device_id,public,networked\n"
        "A-1,Station A,Tai'an,A-1-1,Y,1\n"
        "A-1,Station A,taian,A-1-2,y,1\n"  # same city by another spelling: same site
        "B-1,Station B,370200,,no,否\n"  # a site without devices
        "C-1,Station C,青岛,C 1,yes,yes\n"  # an id with a space
    ).encode()
    inv = parse(data, Sector.CHARGING, CATALOG)
    assert [str(e) for e in inv.errors] == ["line 5: device_id 'C 1' is not a valid id"]
    assert inv.sites["A-1"].city_code == "370900"
    assert len(inv.devices) == 2
    assert "B-1" in inv.sites
    assert not inv.sites["B-1"].public
    assert parse_bool("√") is True
    assert parse_bool("无") is False
    assert parse_bool("2") is None
    assert parse_voltage("220千伏") == 220
    assert parse_voltage("500 kV") == 500
    assert parse_voltage("±800") is None


def _current(sites: list[Site], devices: list[Device], retired: set[str] = frozenset()) -> Current:  # type: ignore[assignment]
    return Current(
        {s.site_id: s for s in sites},
        {s.site_id: "decommissioned" if s.site_id in retired else "active" for s in sites},
        {d.device_id: d for d in devices},
        {d.device_id: "decommissioned" if d.device_id in retired else "active" for d in devices},
    )


def test_diff_added_changed_unchanged_and_refusals() -> None:
    inv = parse((FIX / "charging_ok.csv").read_bytes(), Sector.CHARGING, CATALOG)
    # the same inventory applied already: nothing to do
    same = diff(inv, _current(list(inv.sites.values()), list(inv.devices.values())))
    assert same.empty
    assert same.unchanged_sites == 45
    assert same.unchanged_devices == 325

    sites = list(inv.sites.values())
    devices = list(inv.devices.values())
    moved_site = sites[0]
    old_site = Site(**{**_fields(moved_site), "city_code": "370100", "name": "old name"})
    moved_dev = devices[-1]
    old_dev = Device(moved_dev.device_id, sites[1].site_id, moved_dev.kind)
    d = diff(inv, _current([old_site, *sites[1:-3]], [*devices[:-6], old_dev]))
    assert len(d.added_devices) == 5
    assert d.unchanged_devices == 319
    assert [c for _, _, c in d.changed_devices] == [
        {"site_id": (sites[1].site_id, moved_dev.site_id)}
    ]
    (_, _new, change), *_ = d.changed_sites
    assert change == {
        "city_code": ("370100", moved_site.city_code),
        "name": ("old name", moved_site.name),
    }
    assert d.summary()["sites_added"] == len(inv.sites) - len(sites[1:-3]) - 1

    # refusals: a kind that changes, a decommissioned device that would move
    wrong_kind = Device(devices[0].device_id, devices[0].site_id, "transformer")
    d = diff(inv, _current(sites, [wrong_kind, old_dev], retired={old_dev.device_id}))
    reasons = " | ".join(e.reason for e in d.errors)
    assert "is a transformer, the file says charging_pile" in reasons
    assert f"device {old_dev.device_id} is decommissioned" in reasons

    # a decommissioned site takes no new devices
    d = diff(inv, _current(sites, devices[1:], retired={devices[0].site_id}))
    assert [e.reason for e in d.errors] == [
        f"device {devices[0].device_id}: site {devices[0].site_id} is decommissioned and takes "
        "no devices"
    ]


def _fields(s: Site) -> dict[str, object]:
    return {f: getattr(s, f) for f in s.__slots__}  # type: ignore[attr-defined]


def test_an_export_imports_back_unchanged() -> None:
    inv = parse((FIX / "substation_ok.xlsx").read_bytes(), Sector.SUBSTATION, CATALOG, fmt="xlsx")
    for lang in ("en", "zh"):
        rows = [
            header(Sector.SUBSTATION, lang),
            *export_rows(Sector.SUBSTATION, inv.sites.values(), inv.devices.values()),
        ]  # type: ignore[arg-type]
        again = parse(to_csv(rows).encode(), Sector.SUBSTATION, CATALOG)
        assert again.ok
        assert again.sites == inv.sites
        assert again.devices == inv.devices
