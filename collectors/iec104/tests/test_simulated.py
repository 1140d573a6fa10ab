"""Simulated substations over IEC 104: the feed's readings reach the agent through our own
stations and the real collector, time tags and all, and the gateway reports its link."""

# ruff: noqa: S101 - pytest asserts

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from collectors.iec104.simulated import GATEWAY_KIND, SimulatedStations, build
from qilu.contract import Reading
from qilu.devices import KINDS
from qilu.registry import generate


def test_a_simulated_substation_agent_reads_its_stations_over_iec104() -> None:
    reg = generate(1, 0.01)
    sites = [s.site_id for s in reg.sites if s.sector.value == "substation"][:2]
    devices = [d for d in reg.devices if d.site_id in sites]
    gateways = {d.device_id for d in devices if d.kind == GATEWAY_KIND}
    feeder, iec = build("agent-substation-test", sites, reg, seed=1, silence="none")
    assert isinstance(feeder, SimulatedStations)
    for c in (feeder, iec):
        c.validate()
    got: list[Reading] = []
    done = asyncio.Event()
    others = {d.device_id for d in devices} - gateways

    async def sink(readings: Sequence[Reading]) -> None:
        got.extend(readings)
        if others <= {r.device_id for r in got} and gateways <= {
            r.device_id for r in got if r.metric == "gi_complete" and r.value == 1.0
        }:
            done.set()

    async def main() -> None:
        await feeder.connect()
        tasks = [asyncio.create_task(c.collect(sink)) for c in (feeder, iec)]
        try:
            async with asyncio.timeout(60):
                await done.wait()
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            await feeder.stop()

    asyncio.run(main())
    kinds = {d.device_id: d.kind for d in devices}
    for r in got:
        spec = KINDS[kinds[r.device_id]].metric(r.metric)
        assert spec is not None
        assert spec.low <= r.value <= spec.high, r
    # the feed's time stamps survive the CP56Time2a round trip (to the millisecond)
    assert all(r.ts_us % 1000 == 0 for r in got if r.device_id not in gateways)
    assert {r.metric for r in got if r.device_id in gateways} == {"link_up", "gi_complete"}
