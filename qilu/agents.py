"""Agent provisioning: identity, signing key, Kafka SCRAM user and ACLs, ready-to-copy config.

Shared by ``qilu agents`` and the admin API (``/v1/admin/agents``). The database part lives in
:mod:`storage.agents` (with the audit rows), the broker part here; the design is
docs/adr/0010-agent-authentication.md.

Order of a change: database rows and audit row in an open transaction -> broker (SCRAM user
and ACLs, through the internal listener) -> commit. If the broker refuses, nothing is
committed. If the commit failed after the broker changed, the broker holds a user the
registry does not know: running the same command again repairs it (upserts, idempotent ACLs).

Secrets (the SCRAM password, the signing key) exist only in the returned object, to be shown
once; the database stores the public key and the broker a salted SCRAM hash.
"""

from __future__ import annotations

import logging
import secrets
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from qilu import signing
from qilu.contract import Sector
from qilu.errors import ServiceError
from qilu.settings import KafkaSettings, Settings

logger = logging.getLogger(__name__)
SCRAM_ITERATIONS = 8192  # Kafka's maximum is 16384; 4096 is the minimum for SHA-512


@dataclass(frozen=True, slots=True)
class Credentials:
    """What an agent needs, shown once."""

    agent_id: str
    key_no: int
    signing_key: str  # base64 Ed25519 private key
    kafka_password: str | None  # None when broker credentials are not managed


def topics_for(kafka: KafkaSettings, sectors: Sequence[str]) -> list[str]:
    return [f"{kafka.topic_prefix}.readings.{Sector(s).value}" for s in sectors]


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
        ACL,
        ACLOperation,
        ACLPermissionType,
        ResourcePattern,
        ResourceType,
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
        result = admin.create_acls(acls)
        if result["failed"]:
            _acl, err = result["failed"][0]
            raise ServiceError(
                f"kafka: ACL for {agent_id} refused ({err}); does the broker run the "
                "StandardAuthorizer? `qilu services up kafka` renders it (docs/adr/0010)"
            )
        _wait_for_acls(admin, agent_id, set(topics))
    finally:
        admin.close()


def _wait_for_acls(admin: Any, agent_id: str, topics: set[str], timeout_s: float = 60.0) -> None:
    """ACLs reach the broker's authorizer through the metadata log a moment after the
    controller accepted them: return once the broker lists them, so the agent's first
    connection is not refused."""
    from kafka.admin import (
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePatternFilter,
        ResourceType,
    )

    flt = ACLFilter(
        f"User:{agent_id}",
        None,
        ACLOperation.WRITE,
        ACLPermissionType.ALLOW,
        ResourcePatternFilter(ResourceType.TOPIC, None, ACLResourcePatternType.LITERAL),
    )
    deadline = time.monotonic() + timeout_s
    while True:
        acls, error = admin.describe_acls(flt)
        have = {a.resource_pattern.resource_name for a in acls}
        if topics <= have:
            return
        if time.monotonic() > deadline:
            raise ServiceError(
                f"kafka: the ACLs of {agent_id} did not appear in {timeout_s:.0f} s "
                f"(the broker lists {sorted(have)}; {error})"
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


def provision(
    settings: Settings,
    agent_id: str,
    *,
    sites: Sequence[str] = (),
    cities: Sequence[str] = (),
    sectors: Sequence[str] = (),
    actor: str,
    note: str = "",
) -> tuple[Any, Credentials]:
    """Create the agent (database, audit, broker). Returns (storage.agents.AgentRow, secrets)."""
    from storage import agents
    from storage.db import connect

    key = signing.generate_key()
    password = secrets.token_urlsafe(32) if settings.kafka.manage_agent_credentials else None
    with connect(settings.db) as conn, conn.transaction():
        chosen = agents.sites_matching(conn, site_ids=sites, cities=cities, sectors=sectors)
        if not chosen:
            raise agents.AgentError("no site matches; give --sites or --city/--sector filters")
        row = agents.provision(conn, agent_id, chosen, key.public, actor=actor, note=note)
        if password is not None:
            topics = topics_for(settings.kafka, agents.sectors_of(conn, chosen))
            broker_grant(settings.kafka, agent_id, password, topics)
    logger.info("agent %s provisioned: %d sites, key 1", agent_id, len(chosen))
    return row, Credentials(agent_id, 1, key.private_b64, password)


def rotate(
    settings: Settings, agent_id: str, *, actor: str, grace: timedelta
) -> tuple[Any, Credentials]:
    """New signing key and Kafka password; old keys accepted for ``grace`` more."""
    from storage import agents
    from storage.db import connect

    key = signing.generate_key()
    password = secrets.token_urlsafe(32) if settings.kafka.manage_agent_credentials else None
    with connect(settings.db) as conn, conn.transaction():
        row, key_no = agents.rotate(conn, agent_id, key.public, actor=actor, grace=grace)
        if password is not None:
            topics = topics_for(settings.kafka, agents.sectors_of(conn, row.sites))
            broker_grant(settings.kafka, agent_id, password, topics)
    logger.info("agent %s rotated to key %d", agent_id, key_no)
    return row, Credentials(agent_id, key_no, key.private_b64, password)


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
    return row


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
        "",
        "[kafka]",
        f'topic_prefix = "{k.topic_prefix}"',
    ]
    if creds.kafka_password is not None:
        lines += [
            f'bootstrap = "{k.agent_bootstrap}"',
            'security_protocol = "SASL_PLAINTEXT"   # SASL_SSL + ssl_cafile over untrusted links',
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
    return {a: signing.Signer(numbers[a], keys[a].private_b64) for a in numbers}
