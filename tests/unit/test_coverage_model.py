"""The incremental coverage model without a database (storage/coverage_incremental.py)."""

from __future__ import annotations

from datetime import date

import pytest

from qilu.catalog import load_catalog
from storage.coverage_incremental import (
    REBUILD_DUTY_K,
    REBUILD_WAIT_CAP_S,
    CoverageModel,
    rebuild_wait_s,
)

S = 1_000_000  # µs
JINAN, QINGDAO = "370100", "370200"
PILES, SUBSTATIONS = 0, 3  # a device measure; a site measure under the "all" rule


def _model() -> CoverageModel:
    catalog = load_catalog()
    assert catalog.targets[PILES].measure.unit == "device"
    assert catalog.targets[SUBSTATIONS].measure.site_rule == "all"
    m = CoverageModel(catalog, date(2026, 12, 6))
    m.add_device(1, 60 * S, 100 * S)  # live until 160 s
    m.add_device(2, 60 * S, None)  # never seen
    m.add_device(3, 120 * S, 50 * S)  # live until 170 s
    m.add_device(4, 120 * S, 90 * S)  # live until 210 s
    m.add_device_member(PILES, JINAN, 1, True)
    m.add_device_member(PILES, JINAN, 2, True)
    m.add_device_member(PILES, QINGDAO, 3, False)  # counted, never in the numerator
    m.add_site_member(SUBSTATIONS, QINGDAO, True, [3, 4])
    m.add_site_member(SUBSTATIONS, QINGDAO, True, [])  # no devices: never connected
    m.start(110 * S, operator_live=[])
    return m


def _cell(m: CoverageModel, target: int, city: str) -> tuple[int, int]:
    fig = next(c for c in m.figures_at(target) if c.city_code == city)
    return fig.numerator, fig.denominator


def test_start_counts_what_is_live() -> None:
    m = _model()
    assert _cell(m, PILES, JINAN) == (1, 2)
    assert _cell(m, PILES, QINGDAO) == (0, 1)
    assert _cell(m, SUBSTATIONS, QINGDAO) == (1, 2)  # both devices of the first site live


def test_expiry_readings_and_operator_piles_move_only_their_cells() -> None:
    m = _model()
    # 165 s: device 1 ran out (160 s); 3 still live; a late reading of 2 changes nothing
    assert m.advance(165 * S, [(2, 10 * S)], []) == 1
    assert _cell(m, PILES, JINAN) == (0, 2)
    # 171 s: device 3 ran out, so the "all" site is no longer connected
    m.advance(171 * S, [], [])
    assert _cell(m, SUBSTATIONS, QINGDAO) == (0, 2)
    # device 2 reports; device 3 is a pile whose operator is live
    assert m.advance(172 * S, [(2, 172 * S)], [3]) == 2
    assert _cell(m, PILES, JINAN) == (1, 2)
    assert _cell(m, SUBSTATIONS, QINGDAO) == (1, 2)
    # an older reading of 2 does not move it back; the operator goes down
    m.advance(173 * S, [(2, 150 * S)], [])
    assert _cell(m, PILES, JINAN) == (1, 2)
    assert _cell(m, SUBSTATIONS, QINGDAO) == (0, 2)
    # the boundary: live while last_seen > now - expected, so gone at exactly 232 s
    m.advance(232 * S - 1, [], [])
    assert _cell(m, PILES, JINAN) == (1, 2)
    m.advance(232 * S, [], [])
    assert _cell(m, PILES, JINAN) == (0, 2)
    assert m.figures_at(PILES)[0].city_code == "370000"


def test_time_going_backwards_is_refused() -> None:
    m = _model()
    with pytest.raises(ValueError, match="not before the previous"):
        m.advance(100 * S, [], [])


def test_a_gated_device_counts_only_while_it_passes_its_gate() -> None:
    catalog = load_catalog()
    m = CoverageModel(catalog, date(2026, 12, 6))
    m.add_device(7, 180 * S, 100 * S, gated=True)  # a gateway reporting recently
    m.add_device_member(PILES, JINAN, 7, True)
    m.start(110 * S, operator_live=[], gate_pass=[])
    assert _cell(m, PILES, JINAN) == (0, 1)  # reporting, but not interrogated
    m.absorb([7, 1], [111 * S, 111 * S])  # 1 is not a device of this model: ignored
    assert m.gated_changed() == [7]
    assert m.advance(111 * S, [], [], gate={7: True}) == 1  # now it is
    assert _cell(m, PILES, JINAN) == (1, 1)
    m.advance(112 * S, [(7, 112 * S)], [], gate={7: False})  # its newest report: link down
    assert _cell(m, PILES, JINAN) == (0, 1)
    m.advance(113 * S, [(7, 113 * S)], [], gate={7: True})
    assert _cell(m, PILES, JINAN) == (1, 1)
    m.advance(293 * S, [], [])  # 180 s after its last report, interrogated or not
    assert _cell(m, PILES, JINAN) == (0, 1)


def test_devices_the_model_does_not_know_change_nothing() -> None:
    """While a rebuild waits (a registry change: devices the last build did not read), their
    readings, operator links and gate reports go by without a trace; the rebuild reads them."""
    m = _model()
    m.start(120 * S, [])
    before = [m.figures_at(t) for t in (PILES, SUBSTATIONS)]
    m.absorb([7, 8], [119 * S, 119 * S])
    assert m.gated_changed() == []
    assert m.advance(121 * S, [(9, 120 * S)], [7, 10], gate={8: True}) == 0
    assert [m.figures_at(t) for t in (PILES, SUBSTATIONS)] == before
    assert m.devices == 4


def test_a_rebuild_for_a_registry_change_waits_the_longer_of_the_minimum_and_k_builds() -> None:
    assert rebuild_wait_s(0.0, 5.0) == 0.0  # the bound off: at once, however long builds take
    assert rebuild_wait_s(30.0, 0.5) == 30.0
    assert rebuild_wait_s(30.0, 4.0) == 4.0 * REBUILD_DUTY_K == 80.0
    assert rebuild_wait_s(30.0, 4.0, k=5.0) == 30.0
    # a build slowed by a busy machine does not keep a registry change out for long
    assert rebuild_wait_s(30.0, 40.0) == REBUILD_WAIT_CAP_S == 300.0
    assert rebuild_wait_s(600.0, 40.0) == 600.0  # a longer setting still holds
    # a build and the wait after it: building at most 1/(K+1) of the time (under 5 %) for
    # builds up to the cap's 15 s; a slower one gets the cap's wait
    for build in (0.01, 1.5, 4.0, REBUILD_WAIT_CAP_S / REBUILD_DUTY_K):
        share = build / (build + rebuild_wait_s(30.0, build))
        assert share <= 1 / (REBUILD_DUTY_K + 1) < 0.05
    assert 60.0 / (60.0 + rebuild_wait_s(30.0, 60.0)) == 60.0 / 360.0
