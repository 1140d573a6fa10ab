"""The storage mode decision (storage.mode.plan): pure, from what the server says."""

from __future__ import annotations

import pytest

from qilu.errors import ConfigError
from qilu.settings import StorageMode
from storage.mode import Plan, TimescaleFacts, plan

AUTO, TS, PG = StorageMode.AUTO, StorageMode.TIMESCALE, StorageMode.POSTGRES
NONE = TimescaleFacts(installed=False, available=False, preloaded=False)
NOT_PRELOADED = TimescaleFacts(installed=False, available=True, preloaded=False)
READY = TimescaleFacts(installed=False, available=True, preloaded=True)
INSTALLED = TimescaleFacts(installed=True, available=True, preloaded=True)
# a role that may not read shared_preload_libraries (a database owner, not a superuser)
UNKNOWN = TimescaleFacts(installed=False, available=True, preloaded=None)


def test_installed_but_not_preloaded_means_postgres_with_how_to_enable_it() -> None:
    got = plan(NOT_PRELOADED, AUTO, None)
    assert (got.mode, got.create) == (PG, False)  # no attempt that would close the connection
    assert got.note is not None
    assert "not in shared_preload_libraries" in got.note
    assert "shared_preload_libraries = 'timescaledb'" in got.note
    assert "restart the server" in got.note


def test_forcing_timescale_where_it_is_not_preloaded_names_the_key_and_the_fix() -> None:
    with pytest.raises(ConfigError) as exc:
        plan(NOT_PRELOADED, TS, None)
    assert exc.value.key == "db.mode"
    assert "shared_preload_libraries = 'timescaledb'" in str(exc.value)


@pytest.mark.parametrize(
    ("facts", "configured", "was", "expected"),
    [
        (NONE, AUTO, None, Plan(PG)),
        (READY, AUTO, None, Plan(TS, create=True)),  # the caller probes, then creates
        (INSTALLED, AUTO, None, Plan(TS)),
        (READY, TS, None, Plan(TS, create=True)),
        (READY, PG, None, Plan(PG)),
        (UNKNOWN, AUTO, None, Plan(TS, create=True)),  # the probe on its own connection tells
        (UNKNOWN, TS, None, Plan(TS, create=True)),
        (NOT_PRELOADED, AUTO, PG, Plan(PG)),  # recorded: read back, nothing checked
        (INSTALLED, AUTO, TS, Plan(TS)),
        (INSTALLED, TS, TS, Plan(TS)),
    ],
)
def test_plan(
    facts: TimescaleFacts, configured: StorageMode, was: StorageMode | None, expected: Plan
) -> None:
    assert plan(facts, configured, was) == expected


def test_a_recorded_mode_cannot_be_switched() -> None:
    with pytest.raises(ConfigError, match="migrated in postgres mode"):
        plan(INSTALLED, TS, PG)
    with pytest.raises(ConfigError, match="does not have"):
        plan(NONE, TS, None)
