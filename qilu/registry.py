"""The asset registry: sites (where infrastructure is) and devices (what reports).

Every coverage figure is a count over the registry, so it is data the whole pipeline shares.
:func:`generate` builds a province-scale registry deterministically from a seed and a scale
factor (1.0 is about the size of Shandong: ~240,000 charging piles, ~2,000 substations of
110 kV and above, ~50 ranches).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from qilu.contract import Sector
from qilu.devices import KINDS


@dataclass(frozen=True, slots=True)
class Site:
    site_id: str
    sector: Sector
    city_code: str
    name: str
    public: bool = False
    networked: bool = False
    voltage_kv: int = 0
    gis: bool = False
    one_key_control: bool = False
    smart: bool = False
    agri_base: bool = False


@dataclass(frozen=True, slots=True)
class Device:
    device_id: str
    site_id: str
    kind: str

    @property
    def expected_interval_s(self) -> float:
        return KINDS[self.kind].expected_interval_s


@dataclass(slots=True)
class Registry:
    sites: list[Site] = field(default_factory=list)
    devices: list[Device] = field(default_factory=list)

    def site_map(self) -> dict[str, Site]:
        return {s.site_id: s for s in self.sites}

    def devices_of(self, site_ids: set[str]) -> Iterator[Device]:
        return (d for d in self.devices if d.site_id in site_ids)


# Sizes at scale 1.0 (order of magnitude of Shandong, see docs/capacity.md)
CHARGING_STATIONS = 30_000
SUBSTATIONS_BY_KV = {110: 1_400, 220: 520, 500: 60, 1000: 4}
RANCHES = 48
COLLARS_PER_RANCH = 500
SECTOR_PREFIX = {Sector.CHARGING: "CHG", Sector.SUBSTATION: "SUB", Sector.RANCH: "RAN"}


def _spread(total: int, rng: random.Random, weights: list[float]) -> list[int]:
    """Split ``total`` across cities by weight, deterministically; every city gets at least
    one when there are enough to go round."""
    base = 1 if total >= len(weights) else 0
    rest = total - base * len(weights)
    wsum = sum(weights)
    counts = [base + int(rest * w / wsum) for w in weights]
    for _ in range(total - sum(counts)):
        counts[rng.choices(range(len(weights)), weights)[0]] += 1
    return counts


def _stations(scale: float) -> int:
    return max(16, round(CHARGING_STATIONS * scale))


def _substations(kv: int, scale: float) -> int:
    return max(1 if kv >= 500 else 16, round(SUBSTATIONS_BY_KV[kv] * scale))


def _ranches(scale: float) -> int:
    return max(16, round(RANCHES * scale))


def sector_fractions(scale: float) -> dict[str, float]:
    """The share of the province that ``generate(seed, scale)`` builds, per sector: its sites
    over the sites at scale 1.0 (which stands for the whole province). Small sectors have a
    floor (at least one ranch per city), so at a small scale their share is larger than
    ``scale``; ``"all"`` (targets over every sector's devices) is ``scale`` itself, the
    charging piles being nearly all of the devices."""
    if scale <= 0:
        raise ValueError("scale must be positive")
    subs = sum(_substations(kv, scale) for kv in SUBSTATIONS_BY_KV)
    return {
        Sector.CHARGING.value: _stations(scale) / CHARGING_STATIONS,
        Sector.SUBSTATION.value: subs / sum(SUBSTATIONS_BY_KV.values()),
        Sector.RANCH.value: _ranches(scale) / RANCHES,
        "all": scale,
    }


def generate(seed: int = 1, scale: float = 0.02) -> Registry:
    """A province-like registry; the same (seed, scale) always gives the same registry."""
    if scale <= 0:
        raise ValueError("scale must be positive")
    from qilu.catalog import load_catalog  # pydantic: not for a collector's import (edge)

    rng = random.Random(seed)
    cities = load_catalog().cities
    weights = [c.weight for c in cities]
    reg = Registry()

    def add_site(site: Site, kinds: list[tuple[str, int]]) -> None:
        reg.sites.append(site)
        n = 0
        for kind, count in kinds:
            for _ in range(count):
                n += 1
                reg.devices.append(Device(f"{site.site_id}-{n:04d}", site.site_id, kind))

    # charging stations with 4-12 piles; most public; nearly all public ones networked
    stations = _stations(scale)
    for city, count in zip(cities, _spread(stations, rng, weights), strict=True):
        for i in range(count):
            public = rng.random() < 0.8
            networked = rng.random() < (0.97 if public else 0.6)
            sid = f"CHG-{city.code}-{i + 1:05d}"
            site = Site(
                sid,
                Sector.CHARGING,
                city.code,
                f"{city.name_en} charging station {i + 1}",
                public=public,
                networked=networked,
            )
            add_site(site, [("charging_pile", rng.randint(4, 12))])

    # substations by voltage class; 220 kV+ are often GIS, most GIS have one-key control
    n_sub = 0
    for kv in SUBSTATIONS_BY_KV:
        total = _substations(kv, scale)
        for city, count in zip(cities, _spread(total, rng, weights), strict=True):
            for _ in range(count):
                n_sub += 1
                gis = kv >= 220 and rng.random() < 0.45
                site = Site(
                    f"SUB-{city.code}-{n_sub:05d}",
                    Sector.SUBSTATION,
                    city.code,
                    f"{city.name_en} {kv} kV substation {n_sub}",
                    voltage_kv=kv,
                    gis=gis,
                    one_key_control=gis and rng.random() < 0.85,
                )
                kinds = [("transformer", rng.randint(2, 3)), ("bus_meter", 2)]
                if gis:
                    kinds.append(("gis_monitor", 1))
                kinds.append(("telecontrol_gateway", 1))  # numbered last: older ids unchanged
                add_site(site, kinds)

    # ranches: at least one per city; smart ones carry collars
    ranches = _ranches(scale)
    collars = max(5, round(COLLARS_PER_RANCH * scale))
    counts = _spread(ranches, rng, weights)
    for city, count in zip(cities, counts, strict=True):
        for i in range(count):
            smart = rng.random() < 0.75
            site = Site(
                f"RAN-{city.code}-{i + 1:05d}",
                Sector.RANCH,
                city.code,
                f"{city.name_en} ranch {i + 1}",
                smart=smart,
                agri_base=smart and rng.random() < 0.5,
            )
            kinds = [
                ("barn_climate", rng.randint(2, 5)),
                ("water_trough", rng.randint(2, 5)),
                ("feed_silo", rng.randint(1, 3)),
            ]
            if smart:
                kinds.insert(0, ("collar", rng.randint(collars // 2, collars * 3 // 2)))
            add_site(site, kinds)
    return reg
