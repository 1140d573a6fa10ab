"""Operator administration shared by ``qilu operators`` and ``/v1/admin/operators``.

Adding an operator creates its row, its platform-side agent (the identity its readings carry
through Kafka; an Ed25519 key whose private half is sealed with the other secrets) and the
key set it must present to us (inbound), generated here and returned once. The key set we
present when we call it (outbound) is what the operator gave us; it is optional (no pulls
without it). Rotating replaces the inbound keys (and the outbound ones when given) and
retires every token issued before. The database part and its audit rows are
:mod:`storage.operators`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from interconnect.tcec102.exchange import KeySet
from interconnect.tcec102.secrets import OperatorSecrets, box, random_keyset
from qilu import signing
from qilu.settings import Settings
from storage import agents as agent_store
from storage import operators as store
from storage.db import connect

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Shown:
    """What an operator needs to connect, shown once."""

    row: store.OperatorRow
    inbound: KeySet
    base_url: str

    def as_json(self) -> dict[str, Any]:
        return {
            "OperatorID": self.row.operator_id,
            "key_no": self.row.key_no,
            "endpoint": self.base_url,
            "interfaces": [
                f"{self.base_url}/query_token",
                f"{self.base_url}/notification_stationStatus",
            ],
            **self.inbound.as_dict(),
        }


def _base_url(settings: Settings) -> str:
    """The endpoint URL handed to operators: tcec102.public_url, else the API's own address
    (which is only right on one machine: api.host may be 0.0.0.0)."""
    if settings.tcec102.public_url:
        return settings.tcec102.public_url.rstrip("/")
    return f"http://{settings.api.host}:{settings.api.port}{settings.tcec102.path_prefix}"


def add(
    settings: Settings,
    operator_id: str,
    *,
    name: str,
    endpoint_url: str,
    site_ids: Sequence[str],
    cities: Sequence[str],
    outbound: KeySet | None,
    actor: str,
    pull_interval_s: int = 300,
) -> Shown:
    sealer = box(settings)
    key = signing.generate_key()
    secrets = OperatorSecrets(random_keyset(), outbound, key.private_b64)
    with connect(settings.db) as conn, conn.transaction():
        sites = agent_store.sites_matching(
            conn, site_ids=site_ids, cities=cities, sectors=["charging"] if cities else []
        )
        if not sites and not endpoint_url:
            raise store.OperatorError(
                "an operator needs at least one charging site to report for (--sites, "
                "--city), or an endpoint URL to pull its stations from"
            )
        row = store.add(
            conn,
            operator_id,
            name=name,
            endpoint_url=endpoint_url,
            sites=sites,
            agent_public_key=key.public,
            sealed=sealer.seal(operator_id, secrets),
            actor=actor,
            pull_interval_s=pull_interval_s,
        )
    logger.info("operator %s added with %d sites", operator_id, len(sites))
    return Shown(row, secrets.inbound, _base_url(settings))


def rotate(settings: Settings, operator_id: str, *, outbound: KeySet | None, actor: str) -> Shown:
    sealer = box(settings)
    with connect(settings.db) as conn, conn.transaction():
        before = store.get(conn, operator_id)
        if before is None:
            raise store.OperatorError(f"no operator {operator_id!r}; add it first")
        old = sealer.open(operator_id, before.sealed)
        secrets = OperatorSecrets(
            random_keyset(), outbound if outbound is not None else old.outbound, old.signing_key
        )
        row = store.rotate(conn, operator_id, sealed=sealer.seal(operator_id, secrets), actor=actor)
    logger.info("operator %s rotated to key %d", operator_id, row.key_no)
    return Shown(row, secrets.inbound, _base_url(settings))


def revoke(settings: Settings, operator_id: str, *, actor: str) -> store.OperatorRow:
    with connect(settings.db) as conn, conn.transaction():
        return store.revoke(conn, operator_id, actor=actor)
