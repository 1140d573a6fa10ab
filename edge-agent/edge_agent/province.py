"""A simulated province: one agent per (sector, city) over a generated registry, in one process.

Each logical agent has its own identity, boot id and sequence, as separate Pi gateways would;
they share one Kafka producer (one process, one set of broker connections).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from collectors.simulated.collector import SimulatedCollector, SimulatedConfig
from kafka import KafkaProducer

from edge_agent.agent import Agent
from qilu.contract import Sector
from qilu.devices import KINDS
from qilu.registry import Registry
from qilu.settings import AgentSettings, KafkaSettings

logger = logging.getLogger(__name__)


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
    producer: KafkaProducer,
    kafka: KafkaSettings,
    cfg: AgentSettings,
    *,
    seed: int,
    silence: str = "random",
) -> list[Agent]:
    sector_of = {d.device_id: KINDS[d.kind].sector for d in reg.devices}
    agents = []
    for agent_id, sites in sorted(plan.items()):
        collector = SimulatedCollector(
            f"{agent_id}-sim",
            SimulatedConfig(sites=sites, seed=seed, silence=silence),  # type: ignore[arg-type]
            reg,
        )
        agents.append(Agent(agent_id, [collector], sector_of, producer, kafka, cfg))
    return agents


async def run_agents(agents: list[Agent], stop: asyncio.Event) -> None:
    for a in agents:
        a.validate()
    logger.info("%d agents running", len(agents))
    await asyncio.gather(*(a.run(stop) for a in agents))
