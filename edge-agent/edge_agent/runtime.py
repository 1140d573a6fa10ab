"""From a checked configuration to a running agent: collectors, buffer, producer, metrics.

Shared by ``qilu agent run`` and the lean entry point ``python -m edge_agent`` (what the
systemd unit starts on a Pi: it never imports the platform's server-side settings).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import signal
from collections.abc import Callable
from functools import partial
from typing import Any

from collectors import COLLECTOR_TYPES
from collectors.base import Collector
from edge_agent import lean
from edge_agent.agent import Agent, Delivery, Producer, new_producer
from edge_agent.buffer import Buffer, requeue_quarantine
from edge_agent.config import AgentConfig
from qilu.contract import Sector
from qilu.errors import ConfigError, RetryableError

logger = logging.getLogger(__name__)

# the server extra's packages a collector may need: the simulated collector's registry is built
# from the target catalog, pydantic models (pyproject.toml; an edge install has none of them)
PLATFORM_PACKAGES = frozenset({"pydantic", "pydantic_core", "pydantic_settings"})


def collector_class(name: str, type_name: str) -> type[Collector]:
    """A registered type (``collectors.COLLECTOR_TYPES``) or ``package.module:Class``."""
    target = COLLECTOR_TYPES.get(type_name, type_name)
    module, sep, attr = target.partition(":")
    if not sep:
        known = ", ".join(sorted(COLLECTOR_TYPES))
        raise ConfigError(f"collectors.{name}.type", f"unknown type {type_name!r} (known: {known})")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in PLATFORM_PACKAGES:
            raise _needs_platform(name, type_name, exc) from exc
        raise ConfigError(f"collectors.{name}.type", f"cannot load {target!r}: {exc}") from exc
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"collectors.{name}.type", f"cannot load {target!r}: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Collector)):
        raise ConfigError(f"collectors.{name}.type", f"{target!r} is not a Collector")
    return cls


def _needs_platform(name: str, type_name: str, exc: ModuleNotFoundError) -> ConfigError:
    return ConfigError(
        f"collectors.{name}.type",
        f"{type_name!r} needs the platform's packages ({exc.name}), which the edge install "
        "leaves out: pip install 'qilu-telemetry[server]'",
    )


def build_collectors(cfg: AgentConfig) -> list[Collector]:
    """Instantiate and validate every configured collector (no I/O)."""
    out: list[Collector] = []
    registry: Any = None
    for name, table in cfg.collectors.items():
        cls = collector_class(name, str(table["type"]))
        factory = getattr(cls, "from_config", None)
        if factory is None:
            raise ConfigError(f"collectors.{name}.type", f"{cls.__name__} has no from_config")
        kwargs: dict[str, Any] = {}
        if "agent_id" in inspect.signature(factory).parameters:  # context: collectors/base.py
            kwargs["agent_id"] = cfg.agent.id
        if "registry" in inspect.signature(factory).parameters:
            if registry is None:
                from qilu.registry import generate

                try:
                    registry = generate(cfg.simulation.seed, cfg.simulation.scale)
                except ModuleNotFoundError as exc:  # the catalog's pydantic, on a Pi
                    if (exc.name or "").split(".")[0] not in PLATFORM_PACKAGES:
                        raise
                    raise _needs_platform(name, str(table["type"]), exc) from exc
            kwargs["registry"] = registry
        collector: Collector = factory(name, table, **kwargs)
        collector.validate()
        out.append(collector)
    return out


def delivery_of(cfg: AgentConfig) -> Delivery:
    d = cfg.delivery
    return Delivery(
        batch_max_readings=d.batch_max_readings,
        batch_max_delay_s=d.batch_max_delay_s,
        backlog_rate=d.backlog_rate,
        live_window_s=d.live_window_s,
        max_in_flight_bytes=d.max_in_flight_bytes,
        retry_initial_s=d.retry_initial_s,
        retry_max_s=d.retry_max_s,
        group_commit_s=cfg.buffer.group_commit_s,
    )


def build_agent(cfg: AgentConfig, *, producer: Callable[[], Producer] | None = None) -> Agent:
    collectors = build_collectors(cfg)
    b = cfg.buffer
    buffer = Buffer(
        b.path,
        cfg.agent.id,
        max_bytes=b.max_bytes,
        max_age_s=b.max_age_s,
        policy=b.policy,
        fsync=b.fsync,
        quarantine_max_share=b.quarantine_max_share,
    )
    k = cfg.kafka
    factory = producer or partial(
        new_producer,
        k.bootstrap,
        cfg.client_id,
        request_timeout_s=k.request_timeout_s,
        delivery_timeout_s=k.delivery_timeout_s,
        security=cfg.kafka_security(),
    )
    signer = None
    if cfg.auth.key_no:
        from qilu.signing import Signer

        signer = Signer(cfg.auth.key_no, cfg.auth.signing_key)
    else:  # the named opt-out (config.py refuses a missing key without it)
        logger.warning(
            "agent %s: auth.unsigned = true: envelopes go unsigned; only a platform whose "
            "ingest does not authenticate accepts them",
            cfg.agent.id,
        )
    return Agent(
        cfg.agent.id,
        collectors,
        buffer,
        factory,
        k.topic_prefix,
        delivery_of(cfg),
        signer=signer,
    )


def describe(cfg: AgentConfig, collectors: list[Collector]) -> list[str]:
    """What ``check-config`` prints about a valid configuration."""
    b, d = cfg.buffer, cfg.delivery
    lines = [
        f"agent {cfg.agent.id}: configuration OK ({cfg.source or 'no file'})",
        f"  kafka     {cfg.kafka.bootstrap} ({cfg.kafka.security_protocol}"
        + (f" as {cfg.kafka.sasl_username}" if cfg.kafka.sasl_username else "")
        + f"), topics {cfg.kafka.topic_prefix}.readings.<sector>",
        "  auth      "
        + (
            f"envelopes signed with key {cfg.auth.key_no}"
            if cfg.auth.key_no
            else "UNSIGNED (auth.unsigned = true: only for a platform whose ingest does not "
            "authenticate; an authenticating one dead-letters every envelope)"
        ),
        f"  buffer    {b.path}: at most {b.max_bytes / 2**20:.0f} MiB and "
        f"{b.max_age_s / 3600:.1f} h, {b.policy}, fsync {b.fsync} "
        f"(hand-overs within {b.group_commit_s * 1000:.0f} ms share a commit; refused "
        f"envelopes at most {b.quarantine_max_share:.0%} of it)",
        f"  delivery  {d.batch_max_readings} readings / {d.batch_max_delay_s:g} s per envelope, "
        f"backlog {'uncapped' if d.backlog_rate <= 0 else f'{d.backlog_rate:g} readings/s'}",
        "  metrics   "
        + (
            f"http://{cfg.agent.metrics_host}:{cfg.agent.metrics_port}/metrics"
            if cfg.agent.metrics_port
            else "off"
        ),
    ]
    if cfg.platform.url:
        lines.append(f"  platform  {cfg.platform.url} (devices checked at start)")
    lines += [f"  collector {c.name}: {c.type_name}" for c in collectors]
    return lines


def requeue(cfg: AgentConfig, sectors: list[Sector] | None = None) -> list[str]:
    """Clear the quarantine of the agent's buffer (all sectors, or ``sectors``): what the
    command prints. The envelopes are sent again, unchanged, from the agent's next start."""
    done = requeue_quarantine(cfg.buffer.path, cfg.agent.id, sectors)
    if not done:
        return [f"agent {cfg.agent.id}: nothing quarantined in {cfg.buffer.path}"]
    lines = [
        f"agent {cfg.agent.id}: requeued {q.envelopes} envelopes ({q.readings} readings) of "
        f"sector {q.sector.value} (were {q.reason})"
        for q in done
    ]
    return [
        *lines,
        "they are sent from the agent's next start (restart it, e.g. systemctl restart "
        "qilu-agent); refused again, they return to the quarantine",
    ]


def check_online(cfg: AgentConfig, collectors: list[Collector]) -> list[str]:
    """``check-config --online``: what it prints when every configured device is registered
    and the agent's own; otherwise ConfigError naming the collector, listing the problems.
    RetryableError when the platform cannot be reached."""
    from edge_agent import online

    if not cfg.platform.url:
        raise ConfigError("platform.url", "--online needs the platform's API address")
    checked, problems = online.check(cfg, collectors)
    if problems:
        first = problems[0].key  # named once: the error names it already
        listed = "; ".join(
            p.message if p.key == first else f"{p.key}: {p.message}" for p in problems[:20]
        )
        more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
        raise ConfigError(problems[0].key, f"{len(problems)} device problem(s): {listed}{more}")
    return [
        f"  online    {checked} devices checked at {cfg.platform.url}: all registered, at the "
        "agent's sites"
    ]


def check_at_start(cfg: AgentConfig, collectors: list[Collector]) -> None:
    """When the platform can tell (``[platform] url`` and a signing key): refuse to start with
    devices of sectors the agent is not provisioned for (the broker would refuse their
    topic); log the other problems once. The platform out of reach: start anyway."""
    if not (cfg.platform.url and cfg.auth.key_no):
        return
    from edge_agent import online

    try:
        _, problems = online.check(cfg, collectors)
    except RetryableError as exc:
        logger.warning("agent %s: devices not checked with the platform: %s", cfg.agent.id, exc)
        return
    foreign = [p for p in problems if p.kind == "foreign_sector"]
    if foreign:
        listed = "; ".join(p.message for p in foreign[:10])
        raise ConfigError(foreign[0].key, f"{len(foreign)} device(s) refused: {listed}")
    for p in problems:
        logger.warning("agent %s: %s: %s", cfg.agent.id, p.key, p.message)


def run(cfg: AgentConfig) -> int:
    """Run one agent until SIGINT/SIGTERM."""
    lean.defer_kafka_init()
    agent = build_agent(cfg)
    check_at_start(cfg, agent.collectors)
    if cfg.agent.metrics_port:
        from edge_agent import metrics

        metrics.serve(cfg.agent.metrics_host, cfg.agent.metrics_port)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await agent.run(stop)

    try:
        asyncio.run(main())
    finally:
        agent.close_producer()
    return 0
