"""Migration discovery: numbering, per-mode pairs, and what each mode runs."""

from __future__ import annotations

import re

import pytest

from qilu.settings import StorageMode
from storage import migrate


def test_package_migrations_cover_both_modes() -> None:
    found = migrate.discover()
    versions = [m.version for m in found]
    assert versions == sorted(set(versions))
    assert {1, 2, 3, 4, 5} <= set(versions)
    for mig in found:
        for mode in (StorageMode.TIMESCALE, StorageMode.POSTGRES):
            assert mig.for_mode(mode).strip(), (mig.version, mode)


def test_mode_specific_files_differ_where_the_modes_do() -> None:
    by_version = {m.version: m for m in migrate.discover()}
    readings = by_version[2]
    assert "create_hypertable" in readings.for_mode(StorageMode.TIMESCALE)
    assert "PARTITION BY RANGE (ts)" in readings.for_mode(StorageMode.POSTGRES)
    rollups = by_version[3]
    assert "timescaledb.continuous" in rollups.for_mode(StorageMode.TIMESCALE)
    assert "qilu_refresh_rollups" in rollups.for_mode(StorageMode.POSTGRES)
    # a common file runs unchanged in both modes
    daily = by_version[4]
    assert daily.for_mode(StorageMode.TIMESCALE) == daily.for_mode(StorageMode.POSTGRES)


def test_every_logical_relation_is_created_in_both_modes() -> None:
    """ADR 0002's names appear as created objects in each mode's SQL."""
    created = re.compile(r"CREATE (?:TABLE|VIEW|MATERIALIZED VIEW) (\w+)", re.IGNORECASE)
    for mode in (StorageMode.TIMESCALE, StorageMode.POSTGRES):
        names: set[str] = set()
        for mig in migrate.discover():
            names |= set(created.findall(mig.for_mode(mode)))
        for relation in (
            "readings",
            "device_liveness",
            "readings_1m",
            "readings_1h",
            "site_liveness_1h",
            "coverage_daily",
        ):
            assert relation in names, (mode, relation)


def test_common_and_mode_files() -> None:
    found = migrate.discover(
        [
            ("001_a.sql", "common"),
            ("002_b.timescale.sql", "ts"),
            ("002_b.postgres.sql", "pg"),
        ]
    )
    assert [(m.version, m.name) for m in found] == [(1, "a"), (2, "b")]
    assert found[0].for_mode(StorageMode.POSTGRES) == "common"
    assert found[1].for_mode(StorageMode.TIMESCALE) == "ts"
    assert found[1].for_mode(StorageMode.POSTGRES) == "pg"


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ([("002_b.timescale.sql", "")], "no postgres variant"),
        ([("002_b.sql", ""), ("002_b.postgres.sql", "")], "a common file and per-mode files"),
        ([("002_b.timescale.sql", ""), ("002_c.postgres.sql", "")], "different names"),
        ([("002_b.sql", ""), ("002_c.sql", "")], "duplicate migration"),
        ([("2_b.sql", "")], "is not NNN_name.sql"),
        ([("002_b.mysql.sql", "")], "is not NNN_name.sql"),
    ],
)
def test_inconsistent_files_are_refused(files: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(RuntimeError, match=message):
        migrate.discover(files)
