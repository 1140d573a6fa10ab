"""Unit tier: the simulated feeds and the collector, with fake clocks and no I/O."""

# ruff: noqa: S101 - pytest asserts (pyproject exempts tests/** only, not collectors' tests)

from __future__ import annotations

import asyncio
import gc
import random
import statistics
import tomllib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import pytest

from collectors.simulated.collector import SimulatedCollector, SimulatedConfig
from collectors.simulated.kinds import (
    AVAILABLE,
    CHARGING,
    FAULTED,
    FINISHING,
    LOW_BATTERY_PCT,
    MODELS,
    PD_ALARM_PC,
    PREPARING,
    SF6_ALARM_MPA,
    GisMonitor,
    pile_is_dc,
)
from collectors.simulated.models import JITTER_SHARE, WARMUP_US, SilencePlan, SimulatedFeed
from qilu.contract import Quality, Reading, ReadingColumns, to_us
from qilu.devices import KINDS
from qilu.errors import ConfigError
from qilu.registry import Device, Registry, generate
from qilu.schema import build

S = 1_000_000  # microseconds per second
MIN = 60 * S
HOUR = 60 * MIN
DAY = 24 * HOUR
JULY = to_us(datetime(2025, 7, 1, 16, 0, tzinfo=UTC))  # 2 July 2025, 00:00 in Shandong
JANUARY = to_us(datetime(2025, 1, 14, 16, 0, tzinfo=UTC))  # 15 January 2025, 00:00 local
SAMPLE_TOML = Path(__file__).resolve().parent.parent / "sample.toml"

# OCPP 1.6 transitions the simulated piles may show between two consecutive reports
LEGAL = {
    (AVAILABLE, PREPARING), (PREPARING, CHARGING), (CHARGING, FINISHING),
    (FINISHING, AVAILABLE), (AVAILABLE, FAULTED), (CHARGING, FAULTED), (FAULTED, AVAILABLE),
}  # fmt: skip


@pytest.fixture(scope="module")
def reg() -> Registry:
    return generate(1, 0.01)


def _by_kind(reg: Registry) -> dict[str, list[Device]]:
    out: dict[str, list[Device]] = defaultdict(list)
    for d in reg.devices:
        out[d.kind].append(d)
    return out


def mixed(reg: Registry, piles: int = 30, per_kind: int = 12) -> list[Device]:
    """A few devices of every kind, charging piles first."""
    kinds = _by_kind(reg)
    assert set(kinds) == set(KINDS), "the test registry should hold every device kind"
    out = kinds["charging_pile"][:piles]
    for kind, devices in sorted(kinds.items()):
        if kind != "charging_pile":
            out += devices[:per_kind]
    return out


def feed(
    reg: Registry,
    devices: Sequence[Device],
    *,
    seed: int = 1,
    start: int = JULY,
    silence: SilencePlan | None = None,
) -> SimulatedFeed:
    return SimulatedFeed(devices, reg.site_map(), seed=seed, start_us=start, silence=silence)


def run(f: SimulatedFeed, start: int, end: int, step: int) -> list[Reading]:
    """Poll at start, then every ``step`` until ``end`` (the last poll is exactly at end)."""
    out = f.poll(start)
    now = start
    while now < end:
        now = min(end, now + step)
        out += f.poll(now)
    return out


def series(readings: Sequence[Reading]) -> dict[tuple[str, str], list[Reading]]:
    out: dict[tuple[str, str], list[Reading]] = defaultdict(list)
    for r in readings:
        out[(r.device_id, r.metric)].append(r)
    return out


def sample_models(
    reg: Registry, devices: Sequence[Device], start: int, end: int, step: int
) -> Iterator[tuple[Device, int, tuple[float, ...], Quality]]:
    """Raw model output (before the feed's clipping), every ``step`` for each device."""
    sites = reg.site_map()
    for d in devices:
        model = MODELS[d.kind](d, sites[d.site_id], 1, start - WARMUP_US)
        for t in range(start, end, step):
            values, quality = model.sample(t)
            yield d, t, values, quality


# --------------------------------------------------------------------------- determinism


def test_same_seed_and_start_give_identical_readings(reg: Registry) -> None:
    devices = mixed(reg)
    a = run(feed(reg, devices), JULY, JULY + 10 * MIN, 7 * S)
    b = run(feed(reg, devices), JULY, JULY + 10 * MIN, 7 * S)
    assert a
    assert a == b


def test_a_different_seed_gives_different_readings(reg: Registry) -> None:
    devices = mixed(reg)
    a = run(feed(reg, devices, seed=1), JULY, JULY + 10 * MIN, 7 * S)
    b = run(feed(reg, devices, seed=2), JULY, JULY + 10 * MIN, 7 * S)
    assert {(r.device_id, r.ts_us) for r in a} != {(r.device_id, r.ts_us) for r in b}
    values_a = {(r.device_id, r.metric): r.value for r in a}
    values_b = {(r.device_id, r.metric): r.value for r in b}
    assert values_a != values_b


def test_poll_cadence_does_not_change_the_readings(reg: Registry) -> None:
    devices = mixed(reg)
    plan = SilencePlan.random(devices, 1, JULY, 3600, dead_share=0.05, flaky_share=0.3)
    end = JULY + 12 * MIN
    every_tenth = run(feed(reg, devices, silence=plan), JULY, end, S // 10)
    every_minute = run(feed(reg, devices, silence=plan), JULY, end, 60 * S)
    once = run(feed(reg, devices, silence=plan), JULY, end, end - JULY)
    irregular = feed(reg, devices, silence=plan)
    got, now, rng = irregular.poll(JULY), JULY, random.Random(7)
    while now < end:
        now = min(end, now + rng.choice([1, 999, S // 3, 2 * S, 17 * S, 95 * S]))
        got += irregular.poll(now)
    assert len(every_tenth) > 1000
    assert every_tenth == every_minute == once == got
    longest = max(k.interval_s for k in KINDS.values()) * (1 + JITTER_SHARE) * S
    assert all(JULY - longest < r.ts_us <= end for r in got)


def test_polling_at_the_same_instant_twice_returns_nothing_new(reg: Registry) -> None:
    f = feed(reg, mixed(reg))
    f.poll(JULY)
    assert f.poll(JULY + 30 * S)
    assert f.poll(JULY + 30 * S) == []
    assert f.poll(JULY + 10 * S) == []  # a clock stepping back sends nothing twice


def test_a_poll_leaves_the_garbage_collector_as_it_found_it(reg: Registry) -> None:
    f = feed(reg, mixed(reg))
    assert gc.isenabled()
    assert f.poll(JULY)
    assert gc.isenabled()
    gc.disable()
    try:
        assert f.poll(JULY + MIN)
        assert not gc.isenabled()
    finally:
        gc.enable()


# --------------------------------------------------------------------------- first poll


def test_first_poll_backfills_exactly_one_report_per_live_device(reg: Registry) -> None:
    devices = mixed(reg, piles=200)
    now = JULY + 5 * HOUR + 123_456
    dead, flaky = devices[0], devices[1]
    plan = SilencePlan(
        dead=frozenset({dead.device_id}),
        windows={flaky.device_id: ((now - 10 * MIN, now + 10 * MIN),)},
    )
    f = feed(reg, devices, silence=plan)
    assert f.reporting == {d.device_id for d in devices} - {dead.device_id}
    first = f.poll(now)
    by_device: dict[str, list[Reading]] = defaultdict(list)
    for r in first:
        by_device[r.device_id].append(r)
    live = {d.device_id: d for d in devices}
    del live[dead.device_id], live[flaky.device_id]
    assert set(by_device) == set(live)
    for device_id, readings in by_device.items():
        kind = KINDS[live[device_id].kind]
        assert [r.metric for r in readings] == [m.key for m in kind.metrics]
        (ts,) = {r.ts_us for r in readings}
        assert now - kind.interval_s * (1 + 2 * JITTER_SHARE) * S < ts <= now
    # the next poll continues from there: the following report comes about one interval later
    first_ts = {device_id: readings[0].ts_us for device_id, readings in by_device.items()}
    following = f.poll(now + 5 * MIN)
    assert following
    for r in following:
        assert r.ts_us > now
        if r.device_id in first_ts:
            interval = KINDS[live[r.device_id].kind].interval_s * S
            assert r.ts_us - first_ts[r.device_id] >= interval * (1 - 2 * JITTER_SHARE)


# --------------------------------------------------------------------------- realism


@pytest.mark.parametrize("day", [JULY, JANUARY], ids=["july", "january"])
def test_every_model_value_is_inside_its_valid_range_over_a_day(reg: Registry, day: int) -> None:
    seen: set[str] = set()
    for d, t, values, quality in sample_models(reg, reg.devices, day, day + DAY, 10 * MIN):
        specs = KINDS[d.kind].metrics
        assert len(values) == len(specs)
        for spec, v in zip(specs, values, strict=True):
            assert isinstance(v, float), (d.device_id, spec.key, v)
            assert spec.low <= v <= spec.high, (d.device_id, spec.key, t, v)
        assert quality in (Quality.GOOD, Quality.UNCERTAIN)
        seen.add(d.kind)
    assert seen == set(KINDS)


@pytest.fixture(scope="module")
def pile_day(reg: Registry) -> tuple[list[Device], list[Reading]]:
    """A day of 60 charging piles, every report, through the feed."""
    piles = _by_kind(reg)["charging_pile"][:60]
    return piles, run(feed(reg, piles), JULY, JULY + DAY, 15 * MIN)


def test_pile_energy_registers_never_decrease(pile_day: tuple[list[Device], list[Reading]]) -> None:
    piles, readings = pile_day
    energy = {dev: [r.value for r in rs] for (dev, m), rs in series(readings).items()
              if m == "energy_kwh"}  # fmt: skip
    assert set(energy) == {p.device_id for p in piles}
    for values in energy.values():
        assert all(b >= a for a, b in pairwise(values))
    assert sum(v[-1] - v[0] for v in energy.values()) > 100  # they did charge something


def test_pile_states_follow_ocpp_and_agree_with_power_and_fault(
    pile_day: tuple[list[Device], list[Reading]],
) -> None:
    piles, readings = pile_day
    reports: dict[str, dict[int, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in readings:
        reports[r.device_id][r.ts_us][r.metric] = r.value
    seen_states, seen_moves = set(), set()
    for p in piles:
        timeline = [reports[p.device_id][t] for t in sorted(reports[p.device_id])]
        rated = 120.0 if pile_is_dc(p.device_id) else 7.0
        for before, after in pairwise(timeline):
            move = (before["connector_status"], after["connector_status"])
            if move[0] != move[1]:
                assert move in LEGAL, (p.device_id, move)
                seen_moves.add(move)
        for rep in timeline:
            state = rep["connector_status"]
            seen_states.add(state)
            assert rep["fault"] == (1.0 if state == FAULTED else 0.0)
            if state == CHARGING:
                assert 0.0 < rep["power_kw"] <= rated * 1.03
            else:
                assert rep["power_kw"] == 0.0
    assert seen_states == {AVAILABLE, PREPARING, CHARGING, FINISHING, FAULTED}
    assert (CHARGING, FINISHING) in seen_moves


def test_dc_piles_charge_fast_and_ac_piles_at_seven_kilowatts(
    pile_day: tuple[list[Device], list[Reading]],
) -> None:
    _, readings = pile_day
    peak: dict[str, float] = defaultdict(float)
    for r in readings:
        if r.metric == "power_kw":
            peak[r.device_id] = max(peak[r.device_id], r.value)
    dc = [v for d, v in peak.items() if pile_is_dc(d) and v > 0]
    ac = [v for d, v in peak.items() if not pile_is_dc(d) and v > 0]
    assert dc
    assert ac
    assert max(dc) >= 55.0
    assert all(6.0 < v <= 7.3 for v in ac)


def test_charging_follows_the_day(pile_day: tuple[list[Device], list[Reading]]) -> None:
    _, readings = pile_day
    by_hour: dict[int, list[float]] = defaultdict(list)
    for r in readings:
        if r.metric == "power_kw":
            by_hour[(r.ts_us - JULY) // HOUR].append(r.value)
    evening = statistics.fmean(by_hour[18] + by_hour[19] + by_hour[20])
    night = statistics.fmean(by_hour[2] + by_hour[3] + by_hour[4])
    assert evening > 2 * night


def _mean_at(reg: Registry, kind: str, metric: str, local_hour: int, days: int = 4) -> float:
    devices = _by_kind(reg)[kind]
    index = [m.key for m in KINDS[kind].metrics].index(metric)
    values = []
    for day in range(days):
        t = JULY + day * DAY + local_hour * HOUR
        for _, _, sample, _ in sample_models(reg, devices, t, t + 1, 1):
            values.append(sample[index])
    return statistics.fmean(values)


def test_daily_cycles_are_present(reg: Registry) -> None:
    assert _mean_at(reg, "transformer", "load_pct", 19) > 1.2 * _mean_at(
        reg, "transformer", "load_pct", 4
    )
    assert _mean_at(reg, "transformer", "oil_temp_c", 16) > _mean_at(
        reg, "transformer", "oil_temp_c", 5
    )
    assert _mean_at(reg, "collar", "activity", 10) > 2 * _mean_at(reg, "collar", "activity", 1)
    assert _mean_at(reg, "collar", "rumination_min", 1) > _mean_at(
        reg, "collar", "rumination_min", 12
    )
    assert _mean_at(reg, "barn_climate", "co2_ppm", 4) > 2 * _mean_at(
        reg, "barn_climate", "co2_ppm", 15
    )
    assert _mean_at(reg, "barn_climate", "temp_c", 15) > _mean_at(reg, "barn_climate", "temp_c", 5)


def test_substation_physics(reg: Registry) -> None:
    kinds = _by_kind(reg)
    sites = reg.site_map()
    for d, _, (oil, winding, load), _ in sample_models(
        reg, kinds["transformer"], JULY, JULY + DAY, 30 * MIN
    ):
        assert oil < winding
        assert 0 < load < 110, d.device_id
    for d, _, (kv, hz), _ in sample_models(reg, kinds["bus_meter"], JULY, JULY + DAY, 7 * MIN):
        nominal = sites[d.site_id].voltage_kv
        assert nominal <= kv <= nominal * 1.075
        assert 49.95 <= hz <= 50.05


def test_gis_leak_crosses_the_alarm_and_alarms_match_values(reg: Registry) -> None:
    site = next(s for s in reg.sites if s.gis)
    monitors = [Device(f"{site.site_id}-G{n:03d}", site.site_id, "gis_monitor") for n in range(60)]
    leaky = [d for d in monitors if GisMonitor(d, site, 1, JULY).leaky]
    assert 0 < len(leaky) < len(monitors) // 3
    pressures: dict[bool, list[float]] = defaultdict(list)
    for d, _, (p, pd, sf6_alarm, pd_alarm), _ in sample_models(
        reg, monitors, JULY, JULY + 8 * DAY, 10 * MIN
    ):
        assert sf6_alarm == (1.0 if p < SF6_ALARM_MPA else 0.0)
        assert pd_alarm == (1.0 if pd > PD_ALARM_PC else 0.0)
        pressures[d in leaky].append(p)
    assert min(pressures[True]) < SF6_ALARM_MPA
    assert min(pressures[False]) > 0.49
    assert max(pressures[False] + pressures[True]) < 0.61


def test_collars_fever_battery_and_quality(reg: Registry) -> None:
    collars = _by_kind(reg)["collar"]
    temps, batteries = [], []
    for _, _, (temp, _, _, battery), quality in sample_models(
        reg, collars, JULY, JULY + 20 * DAY, HOUR
    ):
        assert quality == (Quality.UNCERTAIN if battery < LOW_BATTERY_PCT else Quality.GOOD)
        temps.append(temp)
        batteries.append(battery)
    assert 38.2 < statistics.median(temps) < 38.8
    assert max(temps) > 39.5  # some cows ran a fever
    assert min(batteries) < LOW_BATTERY_PCT < 95 < max(batteries)


def test_silos_and_troughs_are_consistent(reg: Registry) -> None:
    kinds = _by_kind(reg)
    ratios: dict[str, set[float]] = defaultdict(set)
    levels: dict[str, list[float]] = defaultdict(list)
    for d, _, (level, kg), _ in sample_models(reg, kinds["feed_silo"], JULY, JULY + 9 * DAY, HOUR):
        ratios[d.device_id].add(round(kg / level, 6))
        levels[d.device_id].append(level)
    assert all(len(r) == 1 for r in ratios.values())  # mass = level x capacity
    for values in levels.values():
        steps = [b - a for a, b in pairwise(values)]
        assert max(steps) > 50  # refilled
        assert min(values) < 30
    flows = 0
    for _, _, (level, flow), _ in sample_models(
        reg, kinds["water_trough"][:10], JULY, JULY + DAY, 2 * MIN
    ):
        assert 30 < level <= 100
        flows += flow > 0
    assert flows > 0


# --------------------------------------------------------------------------- silence


def test_dead_and_flaky_devices_are_silent_exactly_as_planned(reg: Registry) -> None:
    devices = mixed(reg, piles=20, per_kind=3)
    dead, flaky, at_outage = devices[0], devices[21], devices[-1]
    flaky_windows = ((JULY + 5 * MIN, JULY + 20 * MIN), (JULY + 40 * MIN, JULY + 43 * MIN))
    plan = SilencePlan(
        dead=frozenset({dead.device_id}),
        windows={flaky.device_id: flaky_windows},
        site_windows={at_outage.site_id: ((JULY + 10 * MIN, JULY + 30 * MIN),)},
    )
    everything = run(feed(reg, devices), JULY, JULY + HOUR, 30 * S)
    planned = run(feed(reg, devices, silence=plan), JULY, JULY + HOUR, 30 * S)
    device = {d.device_id: d for d in devices}
    expected = [r for r in everything if not plan.is_silent(device[r.device_id], r.ts_us)]
    assert planned == expected
    assert len(expected) < len(everything)
    assert dead.device_id not in {r.device_id for r in planned}
    flaky_times = {r.ts_us for r in planned if r.device_id == flaky.device_id}
    assert flaky_times
    assert not any(a <= t < b for a, b in flaky_windows for t in flaky_times)
    assert any(JULY + 20 * MIN <= t < JULY + 40 * MIN for t in flaky_times)
    outage_site = {d.device_id for d in devices if d.site_id == at_outage.site_id}
    assert not any(r.device_id in outage_site and JULY + 10 * MIN <= r.ts_us < JULY + 30 * MIN
                   for r in planned)  # fmt: skip


def test_random_silence_plan_shares_windows_and_determinism(reg: Registry) -> None:
    devices = reg.devices
    horizon = 2 * DAY // S
    plan = SilencePlan.random(devices, 1, JULY, horizon)
    assert plan == SilencePlan.random(devices, 1, JULY, horizon)
    assert plan.dead != SilencePlan.random(devices, 2, JULY, horizon).dead
    assert len(plan.dead) == round(len(devices) * 0.03)
    assert len(plan.windows) == round(len(devices) * 0.05)
    assert not plan.dead & set(plan.windows)
    assert len(plan.site_windows) == round(len(reg.sites) * 0.02)
    for windows in plan.windows.values():
        assert windows
        for start, end in windows:
            assert JULY <= start < JULY + horizon * S
            assert 5 * MIN <= end - start <= 30 * MIN
        assert all(b[0] - a[1] >= 90 * MIN for a, b in pairwise(windows))
    with pytest.raises(ValueError, match="dead_share"):
        SilencePlan.random(devices, 1, JULY, horizon, dead_share=1.5)


def test_a_feed_refuses_devices_it_cannot_simulate(reg: Registry) -> None:
    d = reg.devices[0]
    with pytest.raises(ValueError, match="listed twice"):
        feed(reg, [d, d])
    with pytest.raises(ValueError, match="no simulation model"):
        feed(reg, [Device("X-1", d.site_id, "toaster")])
    with pytest.raises(ValueError, match="unknown site"):
        feed(reg, [Device("X-1", "NOWHERE", d.kind)])


# --------------------------------------------------------------------------- collector


def _config(reg: Registry, **kw: object) -> SimulatedConfig:
    sites = [s.site_id for s in reg.sites[:2]] + [reg.sites[-1].site_id]
    return build(SimulatedConfig, {"sites": sites, "silence": "none", **kw}, "sim")


def test_the_collector_polls_the_feed_with_its_clock_and_sends_to_the_sink(reg: Registry) -> None:
    config = _config(reg, tick_s=1.0, seed=3)
    now = [JULY]
    batches: list[list[Reading]] = []

    async def sink(readings: Sequence[Reading]) -> None:
        batches.append(list(readings))

    async def main() -> None:
        done = asyncio.Event()

        async def fake_sleep(seconds: float) -> None:
            now[0] += int(seconds * S)
            if now[0] >= JULY + 5 * MIN:
                done.set()
            await asyncio.sleep(0)

        c = SimulatedCollector("sim", config, reg, clock=lambda: now[0], sleep=fake_sleep)
        c.validate()
        await c.connect()
        task = asyncio.create_task(c.collect(sink))
        await done.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await c.stop()

    asyncio.run(main())
    devices = SimulatedCollector("sim", config, reg).devices()
    assert {d.site_id for d in devices} == set(config.sites)
    expected = run(feed(reg, devices, seed=3), JULY, now[0], S)
    assert all(batches)  # empty polls are not sent
    assert [r for b in batches for r in b] == expected
    assert {r.device_id for r in batches[0]} == {d.device_id for d in devices}


def test_the_collector_honours_an_explicit_silence_plan(reg: Registry) -> None:
    config = _config(reg, silence="random")
    silent = SimulatedCollector("sim", config, reg).devices()[0]
    plan = SilencePlan(dead=frozenset({silent.device_id}))
    sent: list[Reading] = []

    async def sink(readings: Sequence[Reading]) -> None:
        sent.extend(readings)
        raise asyncio.CancelledError  # one batch is enough

    c = SimulatedCollector("sim", config, reg, clock=lambda: JULY, silence=plan)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(c.collect(sink))
    assert sent
    assert silent.device_id not in {r.device_id for r in sent}


def test_validate_names_the_offending_key(reg: Registry) -> None:
    unknown = SimulatedCollector("sim", _config(reg, sites=["CHG-000000-00001"]), reg)
    with pytest.raises(ConfigError, match="CHG-000000-00001") as err:
        unknown.validate()
    assert err.value.key == "collectors.sim.sites"
    with pytest.raises(ConfigError) as err:
        SimulatedCollector("sim", _config(reg, sites=[]), reg).validate()
    assert err.value.key == "collectors.sim.sites"
    with pytest.raises(ConfigError) as err:
        SimulatedCollector("sim", _config(reg, tick_s=0), reg).validate()
    assert err.value.key == "collectors.sim.tick_s"


def test_from_config_rejects_bad_types_and_unknown_keys(reg: Registry) -> None:
    base = {"type": "simulated", "sites": [reg.sites[0].site_id]}
    with pytest.raises(ConfigError) as err:
        SimulatedCollector.from_config("sim", {**base, "tick_s": "often"}, reg)
    assert err.value.key == "collectors.sim.tick_s"
    with pytest.raises(ConfigError) as err:
        SimulatedCollector.from_config("sim", {**base, "silence": "sometimes"}, reg)
    assert err.value.key == "collectors.sim.silence"
    with pytest.raises(ConfigError) as err:
        SimulatedCollector.from_config("sim", {**base, "colour": "red"}, reg)
    assert err.value.key == "collectors.sim.colour"
    with pytest.raises(ConfigError) as err:
        SimulatedCollector.from_config("sim", {"type": "simulated"}, reg)
    assert (err.value.key, err.value.problem) == ("collectors.sim.sites", "is required")
    assert SimulatedCollector.from_config("sim", base, reg).config.tick_s == 1.0


def test_the_sample_configuration_is_valid_for_the_demo_registry() -> None:
    table = tomllib.loads(SAMPLE_TOML.read_text())["collectors"]["sim"]
    assert table["type"] == SimulatedCollector.type_name
    collector = SimulatedCollector.from_config("sim", table, generate(1, 0.02))
    collector.validate()
    kinds = {d.kind for d in collector.devices()}
    assert kinds == set(KINDS)


def test_poll_columns_gives_the_readings_of_poll_column_wise(reg: Registry) -> None:
    devices = mixed(reg)
    plan = SilencePlan.random(devices, 1, JULY, 3600, dead_share=0.05, flaky_share=0.3)
    objects, columns = feed(reg, devices, silence=plan), feed(reg, devices, silence=plan)
    now, polls = JULY, 0
    while now <= JULY + 10 * MIN:
        got = columns.poll_columns(now)
        assert isinstance(got, ReadingColumns)
        expected = objects.poll(now)
        assert list(got) == expected
        assert got.qualities == [int(r.quality) for r in expected]
        polls += bool(expected)
        now += 13 * S
    assert polls > 20
