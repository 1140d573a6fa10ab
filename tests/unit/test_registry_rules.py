"""Registry rules that need no database: a decommissioned device's readings in ingest's
validator, and the names every sector, city, kind and target carries in both languages."""

from __future__ import annotations

from qilu.catalog import SECTOR_NAMES, load_catalog
from qilu.contract import Envelope, Sector
from qilu.devices import DEVICE_KINDS
from stream.validate import Validator

CUTOFF = 1_764_518_400_000_000  # 2025-12-01T00:00+08:00 in µs


def test_decommissioned_device_late_readings_before_the_day_pass_later_ones_are_refused() -> None:
    v = Validator(
        {"old": (1, "feed_silo"), "new": (2, "feed_silo")},
        {"level_pct": 7, "feed_kg": 8},
        retired_us={"old": CUTOFF},
    )
    env = Envelope(
        agent_id="a",
        boot_id="b",
        seq=1,
        sent_at_us=CUTOFF,
        devices=["old", "old", "new"],
        metrics=["level_pct", "level_pct", "level_pct"],
        ts_us=[CUTOFF - 1, CUTOFF, CUTOFF + 1],
        values=[10.0, 11.0, 12.0],
        qualities=[0, 0, 0],
    )
    rows, rejected = v.validate(env, CUTOFF + 10**9)
    assert rows.device_pk == [1, 2]
    assert rows.ts_us == [CUTOFF - 1, CUTOFF + 1]
    assert [(r.index, r.reason) for r in rejected] == [(1, "device_decommissioned")]


def test_everything_named_in_both_languages() -> None:
    catalog = load_catalog()
    assert set(SECTOR_NAMES) == {s.value for s in Sector} | {"all"}
    named = [
        *SECTOR_NAMES.values(),
        *((c.name_en, c.name_zh) for c in catalog.cities),
        *((k.name_en, k.name_zh) for k in DEVICE_KINDS),
        *((t.name_en, t.name_zh) for t in catalog.targets),
    ]
    for en, zh in named:
        assert en.isascii(), en
        assert any("\u4e00" <= ch <= "\u9fff" for ch in zh), zh
    assert {t.sector for t in catalog.targets} <= set(SECTOR_NAMES)
