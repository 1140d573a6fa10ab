import re

import pytest

from qilu.catalog import load_catalog
from qilu.contract import Sector
from qilu.errors import ConfigError
from qilu.registry import generate
from qilu.settings import load

EXPECTED_TARGETS = {
    "charging-public-piles-2024": (">", 180_000, "000"),
    "charging-networked-2022": (">=", 50_000, "003"),
    "charging-networked-2025": (">=", 100_000, "003"),
    "substation-220kv-monitoring-2024": (">=", 1.0, "000"),
    "substation-gis-onekey-2024": (">=", 1.0, "000"),
    "ranch-smart-new-2022": (">=", 16, "001"),
    "ranch-smart-built-2024": (">=", 16, "000"),
    "ranch-scenarios-2025": (">=", 100, "002"),
    "agri-bases-2022": (">=", 400, "003"),
    "agri-bases-2025": (">=", 500, "003"),
    "iot-terminals-2022": (">=", 150_000_000, "003"),
    "iot-terminals-2025": (">=", 250_000_000, "003"),
    "public-sensing-2022": (">", 0.8, "001"),
}


def test_catalog_holds_every_target_with_its_source() -> None:
    cat = load_catalog()
    got = {t.id: (t.comparator, t.threshold, t.source.document) for t in cat.targets}
    assert got == EXPECTED_TARGETS
    for t in cat.targets:
        assert cat.documents[t.source.document].title
        assert t.source.article
        assert t.fidelity == "direct" or t.note, f"{t.id}: proxy targets must explain themselves"


def test_sixteen_cities_match_gb_t_2260() -> None:
    codes = load_catalog().city_codes
    assert len(codes) == 16
    assert "370200" in codes
    assert "371200" not in codes  # Laiwu was merged into Jinan in 2019
    assert all(re.fullmatch(r"37\d{4}", c) for c in codes)


def test_registry_is_deterministic_for_a_seed() -> None:
    a, b, c = generate(7, 0.01), generate(7, 0.01), generate(8, 0.01)
    assert a == b
    assert a != c


def test_registry_covers_every_city_and_sector() -> None:
    reg = generate(1, 0.02)
    seen = {(s.sector, s.city_code) for s in reg.sites}
    assert seen == {(sec, code) for sec in Sector for code in load_catalog().city_codes}
    sites = reg.site_map()
    assert all(d.site_id in sites for d in reg.devices)
    assert len({d.device_id for d in reg.devices}) == len(reg.devices)
    assert any(s.voltage_kv >= 220 and s.gis for s in reg.sites)


def test_registry_scales() -> None:
    small, large = generate(1, 0.01), generate(1, 0.1)
    piles = [sum(d.kind == "charging_pile" for d in r.devices) for r in (small, large)]
    assert 8 < piles[1] / piles[0] < 12


def test_default_secret_refused_outside_development(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QILU_ENV", "production")
    with pytest.raises(ConfigError, match=r"db\.password"):
        load()
    monkeypatch.setenv("QILU_DB__PASSWORD", "s3cret-from-vault")
    assert load().db.password.get_secret_value() == "s3cret-from-vault"
    assert "s3cret" not in repr(load().db)


def test_bad_setting_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QILU_KAFKA__PARTITIONS", "many")
    with pytest.raises(ConfigError) as info:
        load()
    assert info.value.key == "kafka.partitions"
