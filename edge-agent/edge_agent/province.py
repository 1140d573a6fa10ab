"""A simulated province: one agent per (sector, city) over a generated registry, in one process.

Each logical agent has its own identity, boot id, sequence, durable buffer and signing key, as
separate Pi gateways would; they share one Kafka producer (one process, one set of broker
connections) on the internal listener, so they need no SCRAM users (docs/adr/0010).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

from collectors.base import Collector
from collectors.simulated.collector import SimulatedCollector, SimulatedConfig
from edge_agent.agent import Agent, Delivery, ProducerFactory, Signer, Threads
from edge_agent.buffer import Buffer
from qilu.contract import Sector
from qilu.registry import Registry

logger = logging.getLogger(__name__)
PROVINCE_BUFFER_BYTES = 64 << 20  # per simulated agent
PROVINCE_BUFFER_AGE_S = 86_400.0
# each buffer's WAL is checkpointed at 1 MB: a checkpoint copies the hot pages again and syncs
# twice, which at 256 KB (every hand-over or two) cost 0.5-0.7 us of CPU per reading, half of it
# in the kernel (A/B in a 9-agent process); 48 agents keep ~48 MB of WAL on disk
PROVINCE_WAL_BYTES = 1 << 20
# what the simulated agents hand over and send at once (docs/capacity.md, "the agents"): a
# simulated agent stands for a whole city's sites of one sector (~770 readings/s on average
# at scale 1), so its feed hands over every 2 s (one buffer commit) and it sends envelopes of
# up to 2,000 readings, formed at the latest 2 s after their first chunk: a quarter of the
# signatures, buffer rows and Kafka records of 500-reading envelopes. A reading reaches Kafka
# at most ~4 s after it was due (1 s tick and 1 s delay before); the ingest's lag target is 10 s
PROVINCE_TICK_S = 2.0
PROVINCE_ENVELOPE_READINGS = 2_000
PROVINCE_ENVELOPE_DELAY_S = 2.0


def agent_id_for(sector: Sector, city_code: str) -> str:
    return f"agent-{sector.value}-{city_code}"


def plan_agents(
    reg: Registry, *, sectors: Iterable[Sector] | None = None, cities: Iterable[str] | None = None
) -> dict[str, list[str]]:
    """agent id -> site ids it reports for."""
    want_sectors = set(sectors) if sectors else set(Sector)
    want_cities = set(cities) if cities else None
    plan: dict[str, list[str]] = {}
    for s in reg.sites:
        if s.sector in want_sectors and (want_cities is None or s.city_code in want_cities):
            plan.setdefault(agent_id_for(s.sector, s.city_code), []).append(s.site_id)
    return plan


def build_agents(
    reg: Registry,
    plan: dict[str, list[str]],
    producer: ProducerFactory,
    topic_prefix: str,
    *,
    state_dir: Path,
    seed: int,
    silence: str = "random",
    signers: Mapping[str, Signer] | None = None,
    iec104_cities: Collection[str] = (),
    tick_s: float = PROVINCE_TICK_S,
    envelope_readings: int = PROVINCE_ENVELOPE_READINGS,
    envelope_delay_s: float = PROVINCE_ENVELOPE_DELAY_S,
    wal_bytes: int = PROVINCE_WAL_BYTES,
) -> list[Agent]:
    """``signers``: agent id -> its signer (``stream.provisioning.provision_province``); without
    one an agent sends unsigned envelopes, which an authenticating ingest dead-letters.
    ``iec104_cities``: the substation agents of these cities read their sites over IEC 104
    from simulated stations (collectors/iec104/simulated.py) instead of the feed directly.
    ``tick_s``: how often each simulated feed hands its due readings over (one buffer commit
    each); ``envelope_readings`` / ``envelope_delay_s``: the agents' envelope size and how long
    a live envelope waits to fill (the province's own values; ``agent.batch_max_*`` are a
    real agent's, sized for one site); ``wal_bytes``: each buffer's WAL size at which it is
    checkpointed."""
    delivery = Delivery(batch_max_readings=envelope_readings, batch_max_delay_s=envelope_delay_s)
    # one buffer thread and one send thread for all of them (run_agents shuts them down): a
    # pair per agent cost ~1.1 us of CPU per reading more in the 9-agent benchmark, mostly
    # hand-offs of the interpreter lock between dozens of threads and their kernel wake-ups
    threads = Threads.new("province")
    agents = []
    iec104 = {agent_id_for(Sector.SUBSTATION, c) for c in iec104_cities}
    for agent_id, sites in sorted(plan.items()):
        collectors: list[Collector]
        if agent_id in iec104:
            from collectors.iec104 import simulated

            collectors = simulated.build(agent_id, sites, reg, seed=seed, silence=silence)
        else:
            collectors = [
                SimulatedCollector(
                    f"{agent_id}-sim",
                    SimulatedConfig(sites=sites, seed=seed, tick_s=tick_s, silence=silence),  # type: ignore[arg-type]
                    reg,
                )
            ]
        buffer = Buffer(
            state_dir / f"{agent_id}.db",
            agent_id,
            max_bytes=PROVINCE_BUFFER_BYTES,
            max_age_s=PROVINCE_BUFFER_AGE_S,
            fsync="os",  # a demo on a developer machine: kill -9 safe, no fsync per tick
            # dozens of agents share one disk: a 1 MB WAL each instead of a real agent's 2 MB
            # keeps the state folder near the size of what is actually buffered
            checkpoint_bytes=wal_bytes,
        )
        agents.append(
            Agent(
                agent_id, collectors, buffer, producer, topic_prefix, delivery,
                # one producer shared by all agents of the process: pass a SharedProducer, so
                # a failure after a long outage replaces it once for all (ADR 0007)
                signer=(signers or {}).get(agent_id), threads=threads,
            )
        )  # fmt: skip
    return agents


async def run_agents(agents: list[Agent], stop: asyncio.Event) -> None:
    """Run the agents until ``stop``; then shut down the threads they shared."""
    for a in agents:
        a.validate()
    logger.info("%d agents running", len(agents))
    shared = {id(a.threads): a.threads for a in agents if not a.owns_threads}
    try:
        await asyncio.gather(*(a.run(stop) for a in agents))
    finally:
        for threads in shared.values():
            threads.shutdown()
