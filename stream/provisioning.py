"""Agent provisioning: identity, signing key, Kafka SCRAM user and ACLs, ready-to-copy config.

Shared by ``qilu agents`` and the admin API (``/v1/admin/agents``). The database part lives in
:mod:`storage.agents` (with the audit rows), the broker part here; the design is
docs/adr/0010-agent-authentication.md. It sits with the stream stage, whose broker users and
ACLs it manages, below the API and the simulated province that call it
(docs/adr/0019-floors.md).

Order of a change: database rows and audit row in an open transaction -> broker (SCRAM user
and ACLs, through the internal listener) -> commit. If the broker refuses, nothing is
committed. If the commit failed after the broker changed, the broker holds a user the
registry does not know: running the same command again repairs it (upserts, idempotent ACLs).

Secrets (the SCRAM password, the signing key) exist only in the returned object, to be shown
once; the database stores the public key and the broker a salted SCRAM hash.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import secrets
import time
import warnings
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from qilu import signing
from qilu.contract import Sector, readings_topic_name, readings_topics_prefix
from qilu.errors import ConfigError, ServiceError
from qilu.fileio import write_atomic
from qilu.settings import Environment, KafkaSettings, Settings

logger = logging.getLogger(__name__)
SCRAM_ITERATIONS = 8192  # Kafka's maximum is 16384; 4096 is the minimum for SHA-512


@dataclass(frozen=True, slots=True)
class Credentials:
    """What an agent needs, shown once."""

    agent_id: str
    key_no: int
    signing_key: str  # base64 Ed25519 private key
    kafka_password: str | None  # None when broker credentials are not managed
    # where the agent serves its Prometheus metrics (None: not recorded, the agent's default)
    metrics_host: str | None = None
    metrics_port: int | None = None


def topics_for(kafka: KafkaSettings, sectors: Sequence[str]) -> list[str]:
    return [readings_topic_name(kafka.topic_prefix, Sector(s)) for s in sectors]


# ------------------------------------------------------------------------------ broker


def _admin(kafka: KafkaSettings) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # kafka-python 3.0 import time
        from kafka.admin import KafkaAdminClient

    try:
        return KafkaAdminClient(
            bootstrap_servers=kafka.bootstrap,
            client_id=f"{kafka.client_id}-agents-admin",
            request_timeout_ms=60_000,  # ACL and SCRAM changes go through the controller
        )
    except Exception as exc:  # kafka-python raises assorted types when no broker answers
        raise ServiceError(f"kafka admin at {kafka.bootstrap}: {exc}") from exc


def broker_grant(kafka: KafkaSettings, agent_id: str, password: str, topics: Sequence[str]) -> None:
    """Create or update the agent's SCRAM-SHA-512 user and allow it to write ``topics``
    (and nothing else: the broker denies what no ACL allows)."""
    from kafka.admin import (
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    admin = _admin(kafka)
    try:
        errors = admin.alter_user_scram_credentials(
            [
                UserScramCredentialUpsertion(
                    agent_id, ScramMechanism.SCRAM_SHA_512, password, iterations=SCRAM_ITERATIONS
                )
            ]
        )
        if errors.get(agent_id):
            raise ServiceError(f"kafka: SCRAM user {agent_id}: {errors[agent_id]}")
        _allow_writes(admin, agent_id, topics)
        _wait_for_acls(admin, agent_id, set(topics))
    finally:
        admin.close()


def broker_set_topics(kafka: KafkaSettings, agent_id: str, topics: Sequence[str]) -> None:
    """Let the agent's user write exactly ``topics`` among this platform's reading topics
    (``<prefix>.readings.*``): add the missing WRITE ACLs, delete the others, and return once
    the broker applies both. Idempotent; the SCRAM user and its password stay as they are."""
    from kafka.admin import (
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePatternFilter,
        ResourceType,
    )

    ours = readings_topics_prefix(kafka.topic_prefix)
    admin = _admin(kafka)
    try:
        _allow_writes(admin, agent_id, topics)
        held, _error = _write_acls(admin, agent_id)
        stale = sorted(t for t in held - set(topics) if t.startswith(ours))
        if stale:
            results = admin.delete_acls(
                [
                    ACLFilter(
                        f"User:{agent_id}",
                        "*",
                        ACLOperation.WRITE,
                        ACLPermissionType.ALLOW,
                        ResourcePatternFilter(
                            ResourceType.TOPIC, t, ACLResourcePatternType.LITERAL
                        ),
                    )
                    for t in stale
                ]
            )
            failed = [str(err) for _f, _acls, err in results if err is not None and err.errno]
            if failed:
                raise ServiceError(f"kafka: deleting ACLs of {agent_id}: {failed[0]}")
        _wait_for_acls(admin, agent_id, set(topics), gone=set(stale))
    finally:
        admin.close()


def _allow_writes(admin: Any, agent_id: str, topics: Sequence[str]) -> None:
    from kafka.admin import ACL, ACLOperation, ACLPermissionType, ResourcePattern, ResourceType

    acls = [
        ACL(
            f"User:{agent_id}",
            "*",
            ACLOperation.WRITE,
            ACLPermissionType.ALLOW,
            ResourcePattern(ResourceType.TOPIC, t),
        )
        for t in topics
    ]
    if not acls:
        return
    result = admin.create_acls(acls)
    if result["failed"]:
        _acl, err = result["failed"][0]
        raise ServiceError(
            f"kafka: ACL for {agent_id} refused ({err}); does the broker run the "
            "StandardAuthorizer? `qilu services up kafka` renders it (docs/adr/0010)"
        )


def _write_acls(admin: Any, agent_id: str) -> tuple[set[str], Any]:
    """The topics the broker lets the agent's user write (literal ACLs), and its error code."""
    from kafka.admin import (
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePatternFilter,
        ResourceType,
    )

    acls, error = admin.describe_acls(
        ACLFilter(
            f"User:{agent_id}",
            None,
            ACLOperation.WRITE,
            ACLPermissionType.ALLOW,
            ResourcePatternFilter(ResourceType.TOPIC, None, ACLResourcePatternType.LITERAL),
        )
    )
    return {a.resource_pattern.resource_name for a in acls}, error


def _wait_for_acls(
    admin: Any,
    agent_id: str,
    topics: AbstractSet[str],
    *,
    gone: AbstractSet[str] = frozenset(),
    timeout_s: float = 60.0,
) -> None:
    """ACLs reach the broker's authorizer through the metadata log a moment after the
    controller accepted them: return once the broker lists ``topics`` and no longer lists
    ``gone``, so the agent's next connection sees the change."""
    deadline = time.monotonic() + timeout_s
    while True:
        have, error = _write_acls(admin, agent_id)
        if topics <= have and not gone & have:
            return
        if time.monotonic() > deadline:
            raise ServiceError(
                f"kafka: the ACLs of {agent_id} did not settle in {timeout_s:.0f} s "
                f"(the broker lists {sorted(have)}, expected {sorted(topics)}; {error})"
            )
        time.sleep(0.2)


def broker_remove(kafka: KafkaSettings, agent_id: str) -> None:
    """Delete the agent's SCRAM user and every ACL of its principal."""
    from kafka.admin import (
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePatternFilter,
        ResourceType,
        ScramMechanism,
        UserScramCredentialDeletion,
    )

    admin = _admin(kafka)
    try:
        errors = admin.alter_user_scram_credentials(
            [UserScramCredentialDeletion(agent_id, ScramMechanism.SCRAM_SHA_512)]
        )
        err = errors.get(agent_id)
        if err and "ResourceNotFound" not in str(err):
            raise ServiceError(f"kafka: deleting SCRAM user {agent_id}: {err}")
        admin.delete_acls(
            [
                ACLFilter(
                    f"User:{agent_id}",
                    None,
                    ACLOperation.ANY,
                    ACLPermissionType.ANY,
                    ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY),
                )
            ]
        )
    finally:
        admin.close()


# ------------------------------------------------------------------------------ operations


def require_agent_tls(settings: Settings) -> None:
    """Production refuses to hand an agent a plaintext listener: agents reach the platform
    over cellular links and the internet (issue 18 item 4). Checked before anything is
    created, so a refusal leaves nothing half-provisioned."""
    k = settings.kafka
    if (
        settings.env is Environment.PRODUCTION
        and k.manage_agent_credentials
        and (k.agent_security_protocol != "SASL_SSL" or not k.agent_ssl_cafile)
    ):
        raise ConfigError(
            "kafka.agent_security_protocol",
            "production provisions agents for the SASL_SSL listener only: set "
            "QILU_KAFKA__AGENT_SECURITY_PROTOCOL=SASL_SSL and QILU_KAFKA__AGENT_SSL_CAFILE "
            "(the CA of `qilu pki`, docs/services.md)",
        )


def provision(
    settings: Settings,
    agent_id: str,
    *,
    sites: Sequence[str] = (),
    cities: Sequence[str] = (),
    sectors: Sequence[str] = (),
    actor: str,
    note: str = "",
    metrics_host: str = "127.0.0.1",
    metrics_port: int | None = None,
) -> tuple[Any, Credentials]:
    """Create the agent (database, audit, broker). Returns (storage.agents.AgentRow, secrets).

    ``metrics_host``: the agent's machine as Prometheus reaches it (the agent binds it);
    ``metrics_port``: None picks the lowest port above ``agent.metrics_port`` (the province's
    and an unprovisioned agent's default) that no active agent on that host holds."""
    from storage import agents
    from storage.db import connect

    require_agent_tls(settings)
    key = signing.generate_key()
    password = secrets.token_urlsafe(32) if settings.kafka.manage_agent_credentials else None
    with connect(settings.db) as conn, conn.transaction():
        chosen = agents.sites_matching(conn, site_ids=sites, cities=cities, sectors=sectors)
        if not chosen:
            raise agents.AgentError("no site matches; give --sites or --city/--sector filters")
        default = settings.agent.metrics_port
        port = metrics_port or agents.free_metrics_port(
            conn, metrics_host, default + 1, reserved=[default]
        )
        row = agents.provision(
            conn,
            agent_id,
            chosen,
            key.public,
            actor=actor,
            note=note,
            metrics=(metrics_host, port),
        )
        if password is not None:
            topics = topics_for(settings.kafka, agents.sectors_of(conn, chosen))
            broker_grant(settings.kafka, agent_id, password, topics)
    logger.info(
        "agent %s provisioned: %d sites, key 1, metrics at %s:%d",
        agent_id,
        len(chosen),
        metrics_host,
        port,
    )
    write_targets_if_configured(settings)
    return row, _credentials(row, 1, key.private_b64, password)


def update_sites(
    settings: Settings,
    agent_id: str,
    *,
    add_sites: Sequence[str] = (),
    remove_sites: Sequence[str] = (),
    add_sectors: Sequence[str] = (),
    remove_sectors: Sequence[str] = (),
    cities: Sequence[str] = (),
    actor: str,
) -> tuple[Any, Any]:
    """Change which sites (and so which sectors' topics) an existing agent may report for.

    ``add_sectors``: every site of these sectors (of ``cities`` when given);
    ``remove_sectors``: every site of the agent in these sectors (of ``cities`` when given).
    Database rows and the audit row (``agent.sites``) in one transaction, then the broker's
    WRITE ACLs set to the sectors of the resulting sites, then commit; the ingest follows
    from its next registry check (``ingest.agents_refresh_s``). Running the same change
    again is harmless and repairs the ACLs after a failed commit.
    Returns (before, after) as storage.agents.AgentRow."""
    from storage import agents
    from storage.db import connect

    if cities and not (add_sectors or remove_sectors):
        raise agents.AgentError("cities narrow the sectors to add or remove: name a sector too")
    with connect(settings.db) as conn, conn.transaction():
        add = agents.sites_matching(conn, site_ids=add_sites)
        if add_sectors:
            by_sector = agents.sites_matching(conn, cities=cities, sectors=add_sectors)
            if not by_sector:
                raise agents.AgentError(
                    f"no site of sector(s) {', '.join(add_sectors)}"
                    + (f" in {', '.join(cities)}" if cities else "")
                )
            add += by_sector
        remove = list(remove_sites)
        if remove_sectors:
            current = agents.get(conn, agent_id)
            held = list(current.sites) if current is not None else []
            in_sectors = set(agents.sites_matching(conn, cities=cities, sectors=remove_sectors))
            by_sector = [x for x in held if x in in_sectors]
            if current is not None and not by_sector:
                raise agents.AgentError(
                    f"agent {agent_id!r} has no site of sector(s) {', '.join(remove_sectors)}"
                    + (f" in {', '.join(cities)}" if cities else "")
                )
            remove += by_sector
        if not add and not remove:
            raise agents.AgentError("nothing to change: give sites or sectors to add or remove")
        before, after = agents.change_sites(
            conn, agent_id, add=sorted(set(add)), remove=sorted(set(remove)), actor=actor
        )
        if settings.kafka.manage_agent_credentials:
            topics = topics_for(settings.kafka, agents.sectors_of(conn, after.sites))
            broker_set_topics(settings.kafka, agent_id, topics)
    logger.info(
        "agent %s: sites %d -> %d (+%d -%d)",
        agent_id,
        len(before.sites),
        len(after.sites),
        len(set(after.sites) - set(before.sites)),
        len(set(before.sites) - set(after.sites)),
    )
    return before, after


def rotate(
    settings: Settings, agent_id: str, *, actor: str, grace: timedelta
) -> tuple[Any, Credentials]:
    """New signing key and Kafka password; old keys accepted for ``grace`` more."""
    from storage import agents
    from storage.db import connect

    require_agent_tls(settings)
    key = signing.generate_key()
    password = secrets.token_urlsafe(32) if settings.kafka.manage_agent_credentials else None
    with connect(settings.db) as conn, conn.transaction():
        row, key_no = agents.rotate(conn, agent_id, key.public, actor=actor, grace=grace)
        if password is not None:
            topics = topics_for(settings.kafka, agents.sectors_of(conn, row.sites))
            broker_grant(settings.kafka, agent_id, password, topics)
    logger.info("agent %s rotated to key %d", agent_id, key_no)
    return row, _credentials(row, key_no, key.private_b64, password)


def _credentials(row: Any, key_no: int, signing_key: str, password: str | None) -> Credentials:
    return Credentials(
        row.agent_id, key_no, signing_key, password, row.metrics_host, row.metrics_port
    )


def revoke(settings: Settings, agent_id: str, *, actor: str) -> Any:
    """Revoke now: the ingest refuses its records from its next registry check (seconds);
    the broker refuses new connections with its user (open ones end at their next
    re-authentication or when they drop)."""
    from storage import agents
    from storage.db import connect

    with connect(settings.db) as conn, conn.transaction():
        row = agents.revoke(conn, agent_id, actor=actor)
        if settings.kafka.manage_agent_credentials:
            broker_remove(settings.kafka, agent_id)
    logger.info("agent %s revoked", agent_id)
    write_targets_if_configured(settings)
    return row


def metrics_bind(scrape_host: str) -> str:
    """The address a provisioned agent binds its metrics endpoint to, from the address
    Prometheus scrapes it at (what provisioning records for file_sd): a loopback address is
    bound itself (an agent on the platform's machine stays private), anything else every interface
    (``0.0.0.0``, ``::`` for IPv6): a gateway behind NAT cannot bind the address Prometheus
    reaches it at, and a host name is no bind address."""
    try:
        ip = ipaddress.ip_address(scrape_host)
    except ValueError:
        return "0.0.0.0"  # noqa: S104 - a scraped endpoint on a remote gateway, on purpose
    if ip.is_loopback:
        return scrape_host
    return "::" if ip.version == 6 else "0.0.0.0"  # noqa: S104 - as above


def agent_toml(settings: Settings, creds: Credentials) -> str:
    """The ready-to-copy agent configuration (add collectors; see edge-agent/agent.sample.toml)."""
    k = settings.kafka
    lines = [
        f"# agent {creds.agent_id}: written once by `qilu agents provision`/`rotate`.",
        "# Keep this file readable by the agent's user only (it holds two secrets), or move the",
        "# secrets to QILU_EDGE__KAFKA__SASL_PASSWORD and QILU_EDGE__AUTH__SIGNING_KEY.",
        "",
        "[agent]",
        f'id = "{creds.agent_id}"',
    ]
    if creds.metrics_port is not None and creds.metrics_host is not None:
        bind = metrics_bind(creds.metrics_host)
        scrape = _hostport(creds.metrics_host, creds.metrics_port)
        lines.append(
            f"# Prometheus scrapes {scrape} (recorded at provisioning, listed in the platform's"
        )
        if bind == creds.metrics_host:
            lines.append("# file_sd targets), the address the agent binds.")
        else:
            lines += [
                "# file_sd targets). The agent binds metrics_host: every interface, since the",
                "# scrape address may be a router's (NAT: forward the port to this machine);",
                "# narrow it to the interface Prometheus comes in on if you like.",
            ]
        lines += [
            "# The port is this agent's alone on its host: two agents never share one.",
            f'metrics_host = "{bind}"',
            f"metrics_port = {creds.metrics_port}",
        ]
    lines += [
        "",
        "[kafka]",
        f'topic_prefix = "{k.topic_prefix}"',
    ]
    if creds.kafka_password is not None:
        lines += [
            f'bootstrap = "{k.agent_bootstrap}"',
            f'security_protocol = "{k.agent_security_protocol}"',
            *([f'ssl_cafile = "{k.agent_ssl_cafile}"'] if k.agent_ssl_cafile else []),
            'sasl_mechanism = "SCRAM-SHA-512"',
            f'sasl_username = "{creds.agent_id}"',
            f'sasl_password = "{creds.kafka_password}"',
        ]
    else:
        lines += [f'bootstrap = "{k.bootstrap}"']
    lines += [
        "",
        "[auth]",
        f"key_no = {creds.key_no}",
        f'signing_key = "{creds.signing_key}"',
        "",
        "[buffer]",
        'path = "/var/lib/qilu-agent/buffer.db"',
        "",
        "# [collectors.<name>] tables: see edge-agent/agent.sample.toml",
        "",
    ]
    return "\n".join(lines)


def provision_province(
    settings: Settings, plan: dict[str, list[str]], *, actor: str
) -> dict[str, signing.Signer]:
    """Bulk-provision the simulated agents of ``qilu agent province`` (a handful of
    statements whatever their number) and return their signers. They connect through the
    internal listener (one shared producer), so no SCRAM users are created."""
    from storage import agents
    from storage.db import connect

    keys = {a: signing.generate_key() for a in plan}
    with connect(settings.db) as conn, conn.transaction():
        numbers = agents.provision_simulated(
            conn, plan, {a: k.public for a, k in keys.items()}, actor=actor
        )
    logger.info("provisioned %d simulated agents", len(numbers))
    write_targets_if_configured(settings)
    return {a: signing.Signer(numbers[a], keys[a].private_b64) for a in numbers}


# ------------------------------------------------------------------------------ Prometheus targets


def file_sd(
    agents: Sequence[tuple[str, str, int]], province: tuple[str, int] | None
) -> list[dict[str, Any]]:
    """Prometheus file_sd target groups: one per provisioned agent (``agent_id`` label; the
    agents' own metrics carry an ``agent`` label already) and, when simulated agents are
    active, the province process's endpoint that serves all of them."""
    groups: list[dict[str, Any]] = [
        {"targets": [_hostport(host, port)], "labels": {"agent_id": agent_id}}
        for agent_id, host, port in agents
    ]
    if province is not None:
        groups.append({"targets": [_hostport(*province)], "labels": {"agent_id": "province"}})
    return groups


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def targets(settings: Settings) -> list[dict[str, Any]]:
    """The agents' file_sd target groups, from the agents table."""
    from storage import agents
    from storage.db import connect

    with connect(settings.db) as conn:
        found = agents.metrics_endpoints(conn)
    province = (settings.agent.metrics_host, settings.agent.metrics_port)
    return file_sd(found.agents, province if found.simulated else None)


def write_targets(settings: Settings, path: Path) -> int:
    """Write the file_sd JSON atomically (Prometheus may read it at any moment) and return
    the number of target groups."""
    groups = targets(settings)
    write_atomic(path, json.dumps(groups, indent=2) + "\n")
    return len(groups)


def write_targets_if_configured(settings: Settings) -> None:
    """After a change of agents: rewrite ``agent.targets_file`` when set. A failure is logged,
    not raised: the change is committed, and ``qilu agents targets`` writes the file again."""
    import psycopg

    path = settings.agent.targets_file
    if path is None:
        return
    try:
        n = write_targets(settings, path)
    except (OSError, psycopg.Error) as exc:
        logger.warning("agents' Prometheus targets not written to %s: %s", path, exc)
        return
    logger.info("agents' Prometheus targets: %d groups in %s", n, path)
