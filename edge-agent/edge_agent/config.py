"""The agent's TOML configuration: sections, defaults, environment overrides, validation.

    [agent]       id, metrics endpoint
    [kafka]       brokers, topic prefix, timeouts, SASL/SCRAM credentials (docs/adr/0010)
    [auth]        the key that signs every envelope (printed once by `qilu agents provision`);
                  ``unsigned = true`` is the explicit opt-out for a development platform
                  whose ingest does not authenticate (``ingest.authenticate`` off)
    [buffer]      the durable buffer: path, disk bound, age bound, full policy, fsync policy
    [delivery]    batching, in-flight window, backlog rate cap, retry backoff
    [simulation]  registry seed and scale (only for collectors of type "simulated")
    [platform]    the platform's API (optional): ``check-config --online`` and the check at
                  start ask it whether the configured devices exist and are the agent's own
    [collectors.<name>]  one table per collector, ``type = "<registered type>"`` or
                  ``"package.module:Class"``; the other keys belong to that collector

Every key can be overridden from the environment: ``QILU_EDGE__<SECTION>__<KEY>``, e.g.
``QILU_EDGE__BUFFER__MAX_BYTES=536870912`` or ``QILU_EDGE__COLLECTORS__PILES__PORT=9000``.
Values are read as TOML values when they parse as one, else as strings. :func:`load` checks
everything without I/O and raises ConfigError naming the key; the sample is
``edge-agent/agent.sample.toml``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from qilu.errors import ConfigError
from qilu.schema import apply_env, bounds, build

ENV_PREFIX = "QILU_EDGE__"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class AgentSection:
    id: str
    metrics_host: str = "127.0.0.1"
    metrics_port: int = field(default=9102, metadata=bounds(0, 65535))  # 0: no endpoint


@dataclass(frozen=True, slots=True)
class KafkaSection:
    bootstrap: str = "127.0.0.1:19092"
    topic_prefix: str = "qilu"
    client_id: str = ""  # default: the agent id
    request_timeout_s: float = field(default=10.0, metadata=bounds(positive=True))
    delivery_timeout_s: float = field(default=30.0, metadata=bounds(positive=True))
    buffer_memory: int = field(default=4 * MIB, metadata=bounds(256 * 1024))
    # the agents' listener: SASL_PLAINTEXT (loopback, private networks) or SASL_SSL (TLS)
    security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-512"] = "SCRAM-SHA-512"
    sasl_username: str = ""  # the agent id, as provisioned
    sasl_password: str = ""  # better from QILU_EDGE__KAFKA__SASL_PASSWORD than in the file
    ssl_cafile: str = ""  # SASL_SSL: the CA that signed the broker's certificate


@dataclass(frozen=True, slots=True)
class AuthSection:
    key_no: int = field(default=0, metadata=bounds(0))  # 0: no key (see ``unsigned``)
    signing_key: str = ""  # base64 Ed25519 key; better from QILU_EDGE__AUTH__SIGNING_KEY
    # the named opt-out: send unsigned envelopes, which an authenticating ingest dead-letters
    # (reason ``unsigned``); only for development platforms with ingest.authenticate off
    unsigned: bool = False


@dataclass(frozen=True, slots=True)
class BufferSection:
    path: str = "/var/lib/qilu-agent/buffer.db"
    # disk bound: database + write-ahead log together never exceed it
    max_bytes: int = field(default=256 * MIB, metadata=bounds(8 * MIB))
    max_age_s: float = field(default=7 * 86_400.0, metadata=bounds(positive=True))
    policy: Literal["drop_oldest", "drop_newest"] = "drop_oldest"
    # envelopes the broker refused (the quarantine) hold at most this share of max_bytes;
    # past it the oldest are evicted, counted and reported as a gap (quarantine_full)
    quarantine_max_share: float = field(default=0.25, metadata=bounds(0.01, 0.9))
    # batch: fsync every commit (power-loss safe); os: leave flushing to the OS (kill -9 safe)
    fsync: Literal["batch", "os"] = "batch"
    # hand-overs within this window share one commit (and one fsync); 0: commit each at once
    group_commit_s: float = field(default=0.05, metadata=bounds(0, 1))


@dataclass(frozen=True, slots=True)
class DeliverySection:
    batch_max_readings: int = field(default=500, metadata=bounds(1, 20_000))
    batch_max_delay_s: float = field(default=1.0, metadata=bounds(positive=True))
    backlog_rate: float = field(default=0.0, metadata=bounds(0))  # readings/s; 0 = uncapped
    live_window_s: float = field(default=10.0, metadata=bounds(positive=True))
    max_in_flight_bytes: int = field(default=MIB, metadata=bounds(64 * 1024))
    retry_initial_s: float = field(default=0.5, metadata=bounds(positive=True))
    retry_max_s: float = field(default=30.0, metadata=bounds(positive=True))


@dataclass(frozen=True, slots=True)
class SimulationSection:
    seed: int = 1
    scale: float = field(default=0.02, metadata=bounds(positive=True))


@dataclass(frozen=True, slots=True)
class PlatformSection:
    url: str = ""  # the platform's API, e.g. "https://qilu.example.cn"; "": no online checks
    timeout_s: float = field(default=10.0, metadata=bounds(positive=True))


@dataclass(frozen=True, slots=True)
class AgentConfig:
    agent: AgentSection
    kafka: KafkaSection = field(default_factory=KafkaSection)
    buffer: BufferSection = field(default_factory=BufferSection)
    delivery: DeliverySection = field(default_factory=DeliverySection)
    simulation: SimulationSection = field(default_factory=SimulationSection)
    auth: AuthSection = field(default_factory=AuthSection)
    platform: PlatformSection = field(default_factory=PlatformSection)
    collectors: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = ""  # the file it came from, for messages

    @property
    def client_id(self) -> str:
        return self.kafka.client_id or self.agent.id

    def kafka_security(self) -> dict[str, str]:
        """kafka-python's security options for the producer."""
        k = self.kafka
        if k.security_protocol == "PLAINTEXT":
            return {}
        out = {
            "security_protocol": k.security_protocol,
            "sasl_mechanism": k.sasl_mechanism,
            "sasl_plain_username": k.sasl_username,
            "sasl_plain_password": k.sasl_password,
        }
        if k.ssl_cafile:
            out["ssl_cafile"] = k.ssl_cafile
        return out


def parse(
    table: Mapping[str, Any], *, environ: Mapping[str, str] | None = None, source: str = ""
) -> AgentConfig:
    """A parsed TOML table (plus environment overrides) -> AgentConfig, or ConfigError."""
    data: dict[str, Any] = _deep_copy(table)
    apply_env(data, os.environ if environ is None else environ, ENV_PREFIX)
    if "source" in data:
        raise ConfigError("source", "unknown key")
    if "agent" not in data:
        raise ConfigError("agent.id", "is required (an [agent] table with id = ...)")
    cfg = build(AgentConfig, {**data, "source": source}, "")
    if not _ID.match(cfg.agent.id):
        raise ConfigError("agent.id", f"{cfg.agent.id!r}: use 1-128 of A-Z a-z 0-9 . _ -")
    if not cfg.kafka.bootstrap.strip():
        raise ConfigError("kafka.bootstrap", "is empty")
    if cfg.delivery.retry_max_s < cfg.delivery.retry_initial_s:
        raise ConfigError("delivery.retry_max_s", "must be at least delivery.retry_initial_s")
    if not cfg.buffer.path:
        raise ConfigError("buffer.path", "is empty")
    if cfg.platform.url and not re.match(r"^https?://[^/\s]+", cfg.platform.url):
        raise ConfigError("platform.url", f"{cfg.platform.url!r}: use http(s)://host[:port]")
    _check_credentials(cfg)
    if not cfg.collectors:
        raise ConfigError("collectors", "no collector configured: add a [collectors.<name>]")
    for name, table_ in cfg.collectors.items():
        if not _ID.match(name):
            raise ConfigError(f"collectors.{name}", "collector names use A-Z a-z 0-9 . _ -")
        if not isinstance(table_.get("type"), str) or not table_["type"]:
            raise ConfigError(f"collectors.{name}.type", 'is required (e.g. "ocpp")')
    return cfg


def _check_credentials(cfg: AgentConfig) -> None:
    """SASL user and password together; signing key number and key together, key decodable."""
    if cfg.kafka.security_protocol != "PLAINTEXT":
        if not cfg.kafka.sasl_username:
            raise ConfigError("kafka.sasl_username", "is required with SASL (the agent id)")
        if not cfg.kafka.sasl_password:
            raise ConfigError("kafka.sasl_password", "is required with SASL")
    a = cfg.auth
    if a.unsigned and (a.key_no or a.signing_key):
        raise ConfigError("auth.unsigned", "true, but key_no/signing_key are set: choose one")
    if not a.unsigned and not a.key_no and not a.signing_key:
        raise ConfigError(
            "auth",
            "no signing key: the platform refuses unsigned envelopes (dead-letter reason "
            "`unsigned`). Set key_no and signing_key as `qilu agents provision` printed them "
            "(the key better from QILU_EDGE__AUTH__SIGNING_KEY), or `unsigned = true` only for "
            "a development platform whose ingest does not authenticate",
        )
    if (a.key_no == 0) != (not a.signing_key):
        raise ConfigError("auth", "set both key_no and signing_key")
    if cfg.auth.signing_key:
        from qilu.signing import load_private_key

        load_private_key(cfg.auth.signing_key, key="auth.signing_key")


def load(path: str | Path, *, environ: Mapping[str, str] | None = None) -> AgentConfig:
    """Read and check a TOML file; ConfigError names the key (or the file for syntax errors)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), f"cannot read the configuration file: {exc.strerror}") from exc
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(p), f"not valid TOML: {exc}") from exc
    return parse(table, environ=environ, source=str(p))


def _deep_copy(table: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in table.items()}
