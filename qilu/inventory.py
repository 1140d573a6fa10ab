"""Inventories: sites and devices delivered as CSV or XLSX, parsed and validated without I/O.

One column set per sector (:data:`COLUMN_SETS`, documented in docs/registry.md); each column
accepts an English and a Chinese header. A row is one device with the columns of its site
repeated (the way operators keep these spreadsheets); a row with an empty device id declares a
site without devices. :func:`parse` takes the file's bytes and returns the sites and devices
with one :class:`RowError` per bad row (line number and reason); :func:`diff` compares them
with the registry as it is and says what an import would add and change. Nothing here touches
the database: storage/registry_admin.py applies a diff in one transaction.

Lines are numbered as a spreadsheet shows them: the header is line 1.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal

from qilu.contract import Sector
from qilu.devices import KINDS
from qilu.errors import QiluError
from qilu.registry import Device, Site

if TYPE_CHECKING:  # pydantic's: the IEC 104 collector imports this module on a Pi
    from qilu.catalog import Catalog

Format = Literal["csv", "xlsx"]
Status = Literal["active", "maintenance", "decommissioned"]
STATUSES: tuple[Status, ...] = ("active", "maintenance", "decommissioned")

# Standard AC voltage classes of the Chinese grid (GB/T 156), kV. A substation's class is one.
VOLTAGE_CLASSES_KV = (35, 66, 110, 220, 330, 500, 750, 1000)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$")
_TRUE = frozenset({"true", "t", "yes", "y", "1", "是", "有", "√"})
_FALSE = frozenset({"false", "f", "no", "n", "0", "否", "无", "×"})
PROGRESS_EVERY = 50_000  # rows between progress callbacks
MAX_ERRORS = 1000  # errors kept (and reported) per file; the count says how many in all

ColumnType = Literal["id", "text", "city", "bool", "voltage", "kind"]


@dataclass(frozen=True, slots=True)
class Column:
    key: str  # the field it fills (Site / Device attribute, or "city", "device_id", "kind")
    en: str  # the English header
    zh: str  # the Chinese header
    type: ColumnType
    required: bool = True
    site: bool = True  # a site attribute (must agree on every row of the site)
    aliases: tuple[str, ...] = ()
    help: str = ""

    @property
    def headers(self) -> tuple[str, ...]:
        return (self.en, self.zh, *self.aliases)


_COMMON = (
    Column("site_id", "site_id", "站点编号", "id", aliases=("场站编号", "站点ID")),
    Column("name", "site_name", "站点名称", "text", aliases=("场站名称",)),
    Column(
        "city_code",
        "city",
        "城市",
        "city",
        aliases=("city_code", "地市", "城市代码"),
        help="GB/T 2260 code (370200), Chinese (青岛, 青岛市) or English (Qingdao) name",
    ),
    Column(
        "device_id",
        "device_id",
        "设备编号",
        "id",
        site=False,
        aliases=("桩编号", "pile_id"),
        help="empty: the row declares a site without devices",
    ),
)
_KIND_REQUIRED = Column(
    "kind",
    "kind",
    "设备类型",
    "kind",
    site=False,
    help="device kind key, English or Chinese name (transformer, 主变压器, ...)",
)
_KIND_OPTIONAL = Column(
    "kind", "kind", "设备类型", "kind", required=False, site=False, help="default charging_pile"
)

COLUMN_SETS: dict[Sector, tuple[Column, ...]] = {
    Sector.CHARGING: (
        *_COMMON,
        _KIND_OPTIONAL,
        Column("public", "public", "是否公共", "bool", aliases=("公共",)),
        Column("networked", "networked", "是否联网", "bool", aliases=("联网",)),
    ),
    Sector.SUBSTATION: (
        *_COMMON,
        _KIND_REQUIRED,
        Column(
            "voltage_kv",
            "voltage_kv",
            "电压等级",
            "voltage",
            aliases=("voltage", "电压等级(kV)"),
            help="one of " + ", ".join(map(str, VOLTAGE_CLASSES_KV)) + " (220, 220kV, 220千伏)",
        ),
        Column("gis", "gis", "是否GIS", "bool", aliases=("GIS",)),
        Column("one_key_control", "one_key_control", "一键顺控", "bool"),
    ),
    Sector.RANCH: (
        *_COMMON,
        _KIND_REQUIRED,
        Column("smart", "smart", "智慧牧场", "bool"),
        Column("agri_base", "agri_base", "农业基地", "bool", aliases=("数字农业基地",)),
    ),
}
DEFAULT_KIND = {Sector.CHARGING: "charging_pile"}


@dataclass(frozen=True, slots=True)
class RowError:
    line: int  # as the spreadsheet numbers it: the header is line 1
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


class RowErrors:
    """The bad rows of a parsed file: the first MAX_ERRORS kept, all of them counted.

    A mixin of the parse results (:class:`Inventory`, ``qilu.reported.Report``); the dataclass
    that uses it declares ``errors`` and ``error_count``.
    """

    __slots__ = ("error_count", "errors")
    errors: list[RowError]
    error_count: int

    @property
    def ok(self) -> bool:
        return self.error_count == 0

    def error(self, line: int, reason: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(RowError(line, reason))


class InventoryError(QiluError):
    """The file cannot be read at all (encoding, format, empty): nothing to validate."""


@dataclass(slots=True)
class Inventory(RowErrors):
    """A parsed file: its sites and devices (each valid), and the errors of the bad rows."""

    sector: Sector
    encoding: str | None
    rows: int = 0
    sites: dict[str, Site] = field(default_factory=dict)
    devices: dict[str, Device] = field(default_factory=dict)
    errors: list[RowError] = field(default_factory=list)
    error_count: int = 0
    warnings: list[str] = field(default_factory=list)


# -- reading the bytes ------------------------------------------------------------------------
def detect_format(name: str, data: bytes) -> Format:
    if name.lower().endswith((".xlsx", ".xlsm")) or data[:4] == b"PK\x03\x04":
        return "xlsx"
    return "csv"


def decode(data: bytes, encoding: str | None = None) -> tuple[str, str]:
    """(text, encoding used). Without ``encoding``: UTF-8 (with or without BOM), else GB18030.
    Bytes the encoding cannot decode raise :class:`InventoryError` naming the line."""
    if encoding is None:
        if data.startswith(b"\xef\xbb\xbf"):
            encoding = "utf-8-sig"
        else:
            try:
                return data.decode("utf-8"), "utf-8"
            except UnicodeDecodeError:
                encoding = "gb18030"
    elif encoding.lower().replace("_", "-") in ("utf-8", "utf8") and data.startswith(
        b"\xef\xbb\xbf"
    ):
        encoding = "utf-8-sig"
    try:
        return data.decode(encoding), encoding
    except LookupError as exc:
        raise InventoryError(f"unknown encoding {encoding!r}") from exc
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        hint = "gb18030" if encoding.startswith("utf") else "utf-8"
        raise InventoryError(
            f"the file is not valid {encoding} (line {line}, byte 0x{data[exc.start]:02x}): "
            f"save it as UTF-8, or give its encoding (--encoding {hint})"
        ) from exc


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def csv_rows(text: str) -> Iterator[tuple[int, list[str]]]:
    """(line number of the row's first line, cells) for every non-empty row."""
    reader = csv.reader(io.StringIO(text, newline=""))
    line = 1
    for row in reader:
        if any(c.strip() for c in row):
            yield line, [c.strip() for c in row]
        line = reader.line_num + 1


def xlsx_rows(data: bytes) -> Iterator[tuple[int, list[str]]]:
    """Rows of the workbook's first sheet, numbered as Excel numbers them."""
    from openpyxl import load_workbook  # imported here: only XLSX imports pay for it

    try:
        wb = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, OSError, KeyError, ValueError) as exc:
        raise InventoryError(f"not a readable XLSX workbook: {exc}") from exc
    try:
        ws = wb.worksheets[0]
        for n, row in enumerate(ws.iter_rows(values_only=True), start=1):
            cells = [_cell(v) for v in row]
            if any(cells):
                yield n, cells
    finally:
        wb.close()


# -- interpreting cells -----------------------------------------------------------------------
def _norm(header: str) -> str:
    return re.sub(r"[\s_（）()]+", "", header.strip().lower())


def city_lookup(catalog: Catalog) -> dict[str, str]:
    """Every accepted spelling of a city -> its code."""
    out: dict[str, str] = {}
    for c in catalog.cities:
        for name in (c.code, c.name_zh, c.name_zh + "市", c.name_en, c.name_en.replace("'", "")):
            out[name.lower()] = c.code
        out[(c.name_en + " city").lower()] = c.code
    return out


def kind_lookup(sector: Sector) -> dict[str, str]:
    out: dict[str, str] = {}
    for k in KINDS.values():
        for name in (k.key, k.name_en, k.name_zh):
            out[name.lower()] = k.key
    return out


def parse_bool(text: str) -> bool | None:
    t = text.strip().lower()
    if t in _TRUE:
        return True
    if t in _FALSE:
        return False
    return None


def parse_voltage(text: str) -> int | None:
    m = re.fullmatch(r"(\d+(?:\.0+)?)\s*(?:kv|千伏)?", text.strip().lower())
    return int(float(m.group(1))) if m else None


def _header_map(header: Sequence[str], columns: Sequence[Column], inv: Inventory) -> dict[str, int]:
    """column key -> cell index; missing required columns are errors of line 1."""
    wanted = {_norm(h): c for c in columns for h in c.headers}
    found: dict[str, int] = {}
    for i, h in enumerate(header):
        if not h:
            continue
        col = wanted.get(_norm(h))
        if col is None:
            inv.warnings.append(
                f"line 1: column {h!r} is not part of the {inv.sector} set; ignored"
            )
            continue
        if col.key in found:
            inv.error(1, f"column {col.en!r} ({col.zh}) appears twice")
            continue
        found[col.key] = i
    missing = [c for c in columns if c.required and c.key not in found]
    for c in missing:
        inv.error(1, f"missing required column {c.en!r} ({c.zh})")
    if missing and len(found) <= 1:
        inv.warnings.append(
            "line 1: the header matches almost no known column: is this the right sector and "
            "the right encoding (--encoding)?"
        )
    return found


def parse(
    data: bytes,
    sector: Sector,
    catalog: Catalog,
    *,
    fmt: Format = "csv",
    encoding: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> Inventory:
    """Parse and validate an inventory file of ``sector``. Raises :class:`InventoryError` only
    when the file cannot be read at all; every bad row is an entry of ``errors``."""
    if fmt == "xlsx":
        inv = Inventory(sector, None)
        rows: Iterable[tuple[int, list[str]]] = xlsx_rows(data)
    else:
        text, used = decode(data, encoding)
        inv = Inventory(sector, used)
        rows = csv_rows(text)
    it = iter(rows)
    first = next(it, None)
    if first is None:
        raise InventoryError("the file is empty: no header row")
    columns = COLUMN_SETS[sector]
    cols = _header_map(first[1], columns, inv)
    if not inv.ok:
        return inv
    validate_rows(it, sector, catalog, cols, columns, inv, progress)
    return inv


def validate_rows(
    rows: Iterable[tuple[int, list[str]]],
    sector: Sector,
    catalog: Catalog,
    cols: Mapping[str, int],
    columns: Sequence[Column],
    inv: Inventory,
    progress: Callable[[int], None] | None = None,
) -> None:
    cities = city_lookup(catalog)
    kinds = kind_lookup(sector)
    site_line: dict[str, int] = {}
    device_line: dict[str, int] = {}
    used = [(c, cols[c.key]) for c in columns if c.key in cols]
    # the site's cells repeat on each of its rows: when they are the very same text as on the
    # site's first valid row, only the device's cells need converting (5x faster at 200k rows)
    site_idx = [i for c, i in used if c.site]  # site_id first: _COMMON starts with it
    used_dev = [(c, i) for c, i in used if not c.site]
    site_raw: dict[str, tuple[str, ...]] = {}
    default_kind = DEFAULT_KIND.get(sector)
    for line, cells in rows:
        inv.rows += 1
        if progress is not None and inv.rows % PROGRESS_EVERY == 0:
            progress(inv.rows)
        n = len(cells)
        raw_site = tuple(cells[i] if i < n else "" for i in site_idx)
        same_site = site_raw.get(raw_site[0]) == raw_site
        values: dict[str, Any] = {}
        bad = False
        for col, i in used_dev if same_site else used:
            raw = cells[i] if i < n else ""
            if raw == "":
                if col.required and col.key != "device_id":
                    inv.error(line, f"{col.en} ({col.zh}) is empty")
                    bad = True
                continue
            value = _convert(col, raw, cities, kinds, sector)
            if isinstance(value, _Bad):
                inv.error(line, value.reason)
                bad = True
                continue
            values[col.key] = value
        if bad:
            continue
        if same_site:
            site = inv.sites[raw_site[0]]
            _add_device(inv, device_line, line, site, values, default_kind)
            continue
        site = Site(
            site_id=values["site_id"],
            sector=sector,
            city_code=values["city_code"],
            name=values["name"],
            **{k: v for k, v in values.items() if k in _SITE_ATTRS},
        )
        first = site_line.get(site.site_id)
        if first is None:
            site_line[site.site_id] = line
            site_raw[site.site_id] = raw_site
            inv.sites[site.site_id] = site
        elif inv.sites[site.site_id] != site:
            diffs = site_differences(inv.sites[site.site_id], site)
            inv.error(
                line,
                f"site {site.site_id}: {', '.join(diffs)} not as on line {first}",
            )
            continue
        _add_device(inv, device_line, line, site, values, default_kind)


def _add_device(
    inv: Inventory,
    device_line: dict[str, int],
    line: int,
    site: Site,
    values: Mapping[str, Any],
    default_kind: str | None,
) -> None:
    device_id = values.get("device_id")
    if device_id is None:
        return
    kind = values.get("kind", default_kind)
    if kind is None:
        inv.error(line, "kind (设备类型) is empty")
        return
    seen = device_line.get(device_id)
    if seen is not None:
        inv.error(line, f"duplicate device id {device_id} (first on line {seen})")
        return
    device_line[device_id] = line
    inv.devices[device_id] = Device(device_id, site.site_id, kind)


_SITE_ATTRS = frozenset(f.name for f in fields(Site)) - {"site_id", "sector", "city_code", "name"}


@dataclass(frozen=True, slots=True)
class _Bad:
    reason: str


def _convert(
    col: Column, raw: str, cities: Mapping[str, str], kinds: Mapping[str, str], sector: Sector
) -> object:
    if col.type == "id":
        return raw if _ID.match(raw) else _Bad(f"{col.en} {raw!r} is not a valid id")
    if col.type == "text":
        return raw
    if col.type == "city":
        code = cities.get(raw.lower())
        return code if code else _Bad(f"unknown city {raw!r} (a code like 370200 or a name)")
    if col.type == "bool":
        b = parse_bool(raw)
        return b if b is not None else _Bad(f"{col.en} ({col.zh}): {raw!r} is not a boolean")
    if col.type == "voltage":
        return _voltage(raw)
    return _kind(raw, kinds, sector)


def _voltage(raw: str) -> int | _Bad:
    kv = parse_voltage(raw)
    if kv is None:
        return _Bad(f"voltage class {raw!r} is not a number of kV")
    if kv not in VOLTAGE_CLASSES_KV:
        classes = ", ".join(map(str, VOLTAGE_CLASSES_KV))
        return _Bad(f"voltage class {kv} kV out of range (one of {classes})")
    return kv


def _kind(raw: str, kinds: Mapping[str, str], sector: Sector) -> str | _Bad:
    key = kinds.get(raw.lower())
    if key is None:
        return _Bad(f"unknown device kind {raw!r}")
    if KINDS[key].sector is not sector:
        return _Bad(f"device kind {key} belongs to {KINDS[key].sector}, not {sector}")
    return key


def site_differences(a: Site, b: Site) -> list[str]:
    return [f.name for f in fields(Site) if getattr(a, f.name) != getattr(b, f.name)]


# -- the diff against the registry --------------------------------------------------------------
Change = dict[str, tuple[Any, Any]]  # field -> (before, after)


@dataclass(frozen=True, slots=True)
class EndedSimulation:
    """A simulated registry that an applied import ends (docs/adr/0013-scaled-thresholds.md):
    the recorded shares of the province (sector -> share), no longer used to scale thresholds,
    and the number of modelled (``synthetic``) coverage rows deleted with them."""

    shares: Mapping[str, float]
    synthetic_rows: int


@dataclass(slots=True)
class Diff:
    """What applying an inventory would do. Entities the registry has but the file lacks are
    left alone: an import adds and updates, it never decommissions."""

    sector: Sector
    added_sites: list[Site] = field(default_factory=list)
    changed_sites: list[tuple[Site, Site, Change]] = field(default_factory=list)  # before, after
    unchanged_sites: int = 0
    added_devices: list[Device] = field(default_factory=list)
    changed_devices: list[tuple[Device, Device, Change]] = field(default_factory=list)
    unchanged_devices: int = 0
    errors: list[RowError] = field(default_factory=list)
    # the registry was the simulation's: applying this diff ends it (filled by the storage side)
    ends_simulation: EndedSimulation | None = None

    @property
    def empty(self) -> bool:
        return not (
            self.added_sites or self.changed_sites or self.added_devices or self.changed_devices
        )

    def summary(self) -> dict[str, int]:
        return {
            "sites_added": len(self.added_sites),
            "sites_changed": len(self.changed_sites),
            "sites_unchanged": self.unchanged_sites,
            "devices_added": len(self.added_devices),
            "devices_changed": len(self.changed_devices),
            "devices_unchanged": self.unchanged_devices,
        }


@dataclass(frozen=True, slots=True)
class Current:
    """The registry as it is, as far as a diff needs it."""

    sites: Mapping[str, Site]
    site_status: Mapping[str, str]
    devices: Mapping[str, Device]
    device_status: Mapping[str, str]


def diff(inv: Inventory, current: Current) -> Diff:
    """Compare a valid inventory with the registry. Changes the registry refuses (a site of
    another sector, a device changing kind, a decommissioned entity changing) are errors."""
    out = Diff(inv.sector)
    for site in inv.sites.values():
        old = current.sites.get(site.site_id)
        if old is None:
            out.added_sites.append(site)
            continue
        if old.sector is not site.sector:
            out.errors.append(
                RowError(0, f"site {site.site_id} is a {old.sector} site, not {site.sector}")
            )
            continue
        change = {f: (getattr(old, f), getattr(site, f)) for f in site_differences(old, site)}
        if not change:
            out.unchanged_sites += 1
        elif current.site_status.get(site.site_id) == "decommissioned":
            out.errors.append(
                RowError(0, f"site {site.site_id} is decommissioned: it cannot change")
            )
        else:
            out.changed_sites.append((old, site, change))
    for dev in inv.devices.values():
        old_dev = current.devices.get(dev.device_id)
        refusal = _device_refusal(dev, old_dev, current)
        if refusal is not None:
            out.errors.append(RowError(0, refusal))
        elif old_dev is None:
            out.added_devices.append(dev)
        elif old_dev.site_id == dev.site_id:
            out.unchanged_devices += 1
        else:
            out.changed_devices.append((old_dev, dev, {"site_id": (old_dev.site_id, dev.site_id)}))
    return out


def _device_refusal(dev: Device, old: Device | None, current: Current) -> str | None:
    """Why the registry refuses what the file says of this device, or None."""
    moves = old is None or old.site_id != dev.site_id
    if moves and current.site_status.get(dev.site_id) == "decommissioned":
        return f"device {dev.device_id}: site {dev.site_id} is decommissioned and takes no devices"
    if old is None:
        return None
    if old.kind != dev.kind:
        return (
            f"device {dev.device_id} is a {old.kind}, the file says {dev.kind}: a kind cannot "
            "change (decommission it and register a new id)"
        )
    if moves and current.device_status.get(dev.device_id) == "decommissioned":
        return f"device {dev.device_id} is decommissioned: it cannot move"
    return None


# -- writing (export) -------------------------------------------------------------------------
def header(sector: Sector, lang: Literal["en", "zh"] = "en") -> list[str]:
    return [c.en if lang == "en" else c.zh for c in COLUMN_SETS[sector]]


def export_rows(
    sector: Sector, sites: Iterable[Site], devices: Iterable[Device]
) -> Iterator[list[str]]:
    """Rows (without header) in the sector's column set, one per device, sites without devices
    as a row with an empty device id: importing them again changes nothing."""
    by_site: dict[str, list[Device]] = {}
    for dev in devices:
        by_site.setdefault(dev.site_id, []).append(dev)
    columns = COLUMN_SETS[sector]
    for s in sites:
        if s.sector is not sector:
            continue
        site_devices: list[Device | None] = [*by_site.get(s.site_id, [])] or [None]
        for d in site_devices:
            row = []
            for c in columns:
                if c.key == "device_id":
                    row.append(d.device_id if d else "")
                elif c.key == "kind":
                    row.append(d.kind if d else "")
                else:
                    v = getattr(s, c.key)
                    row.append(("true" if v else "false") if isinstance(v, bool) else str(v))
            yield row


def to_csv(rows: Iterable[Sequence[str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerows(rows)
    return buf.getvalue()
