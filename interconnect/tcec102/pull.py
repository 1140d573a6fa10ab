"""Scheduled pulls from every operator: stations into the registry, statuses into Kafka.

Per operator with an ``endpoint_url`` and outbound keys, every ``pull_interval_s``:

1. ``query_stations_info``, all pages: a full pull first (after a start), then only what
   changed since the last successful pull began (``LastQueryTime``). The stations become an
   inventory (site ``tcec102.<OperatorID>.<StationID>``, one ``charging_pile`` per EquipmentID,
   ``tcec102.<OperatorID>.<EquipmentID>``) applied by the inventory import
   (:func:`storage.registry_admin.import_inventory`): dated, audited, adding and updating,
   never deleting, so a pile the operator stops reporting keeps its history. In the same
   transaction the connectors are linked to their piles and new sites given to the
   operator's agent (so the ingest accepts their readings). A pile whose connectors were
   linked by hand to a device registered otherwise (an inventory, an OCPP agent: ``qilu
   operators link`` with a ``device_id``) gets no second device: the link stays, so the
   pile is counted once. A station refused (an AreaCode
   outside the province, a field missing) is dead-lettered; the others are kept.
2. ``query_station_status`` for every station of the operator: each connector's status is
   kept (operator_connectors.status, stamped with the answer's arrival, replacing only an
   older one) and every pile of the answer gets its readings from all its connectors' last
   known statuses, the rule pushes follow (:func:`mapping.pile_readings`; an envelope per
   answer, signed by the operator's agent), which refreshes every pile's state whether or not
   it changed. Unknown connectors and stations are dead-lettered.

A failed pull (timeout, garbage, a refused token...) counts on the operator's
:class:`~interconnect.tcec102.client.Breaker` and on its link (``operator_links``); other
operators are not affected.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg

from interconnect.tcec102 import mapping
from interconnect.tcec102.client import Breaker, OperatorClient, PullError, Transport
from interconnect.tcec102.exchange import CST, ExchangeError, Ret
from interconnect.tcec102.produce import charging_producer
from interconnect.tcec102.secrets import OperatorSecrets, box
from qilu import signing
from qilu.catalog import load_catalog
from qilu.contract import Envelope, Sector, to_us
from qilu.inventory import Inventory
from qilu.registry import Device, Site
from qilu.settings import Settings
from storage import agents as agent_store
from storage import operators as store
from storage.db import connect
from storage.registry_admin import ImportSource, import_inventory
from stream.deadletter import DeadLetter

logger = logging.getLogger(__name__)
Produce = Callable[[Envelope, signing.Signer], None]  # returns once Kafka acknowledged
DeadLetters = Callable[[DeadLetter], None]


@dataclass(slots=True)
class PullReport:
    operator_id: str
    full: bool = False
    stations: int = 0
    sites_added: int = 0
    devices_added: int = 0
    connectors: int = 0
    statuses: int = 0
    refused: list[str] = field(default_factory=list)  # reasons
    error: str | None = None


def apply_stations(
    conn: psycopg.Connection[psycopg.rows.TupleRow],
    row: store.OperatorRow,
    stations: Sequence[mapping.Station],
    *,
    actor: str,
) -> tuple[int, int, int]:
    """Stations into the registry as an inventory import, connectors linked, sites given to
    the operator's agent; one transaction. Returns (sites added, devices added, connectors)."""
    op = row.operator_id
    inv = Inventory(Sector.CHARGING, None, rows=len(stations))
    links: list[store.ConnectorLink] = []
    linked = store.connectors(conn).get(op, {})
    kept: set[str] = set()  # devices linked by hand (`qilu operators link`)
    for st in stations:
        sid = mapping.site_id(op, st.station_id)
        inv.sites[sid] = Site(
            sid, Sector.CHARGING, st.city_code, st.name, public=st.public, networked=True
        )
        for eq in st.equipment:
            dev = mapping.device_id(op, eq.equipment_id)
            by_hand = {linked[c] for c in eq.connector_ids if linked.get(c, dev) != dev}
            if by_hand:
                # the same physical pile is registered already (an inventory, an OCPP agent)
                # and was linked to it explicitly: no second device, the link stays
                kept |= by_hand
                continue
            inv.devices[dev] = Device(dev, sid, "charging_pile")
            links.extend(
                store.ConnectorLink(c, eq.equipment_id, st.station_id, dev)
                for c in eq.connector_ids
            )
    digest = hashlib.sha256(
        json.dumps(sorted(inv.sites) + sorted(inv.devices)).encode()
    ).hexdigest()
    with conn.transaction():
        d = import_inventory(
            conn,
            inv,
            actor=actor,
            effective=datetime.now(CST).date(),
            source=ImportSource(f"tcec102/{op}/query_stations_info", digest),
            dry_run=False,
            # an operator's stations join the registry as it is: `qilu run` pulls from
            # simulated operators into its simulated registry (ADR 0013)
            ends_simulation=False,
        )
        if d.errors:
            raise PullError("registry_refused", "; ".join(str(e) for e in d.errors[:5]))
        n = store.link_connectors(conn, op, links)
        elsewhere = [
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT site_id FROM devices WHERE device_id = ANY(%s)", (sorted(kept),)
            )
        ]
        agent_store.change_sites(
            conn, row.agent_id, add=sorted({*inv.sites, *elsewhere}), actor=actor
        )
    return len(d.added_sites), len(d.added_devices), n


class Puller:
    """Pulls every due operator; keeps per-operator breakers and LastQueryTime in memory."""

    def __init__(
        self,
        settings: Settings,
        produce: Produce,
        dead_letter: DeadLetters,
        transport: Transport | None = None,
        *,
        timeout_s: float = 10.0,
        page_size: int = 500,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._box = box(settings)
        self._produce = produce
        self._dead_letter = dead_letter
        self._transport = transport
        self._timeout = timeout_s
        self._page_size = page_size
        self._clock = clock
        self._mono = monotonic
        self._cities = frozenset(load_catalog().city_codes)
        self.breakers: dict[str, Breaker] = {}
        self.last_query: dict[str, datetime] = {}
        self._due: dict[str, float] = {}
        self._clients: dict[str, OperatorClient] = {}
        self._boot = f"pull-{int(time.time())}"
        self._seq = 0

    def cycle(self, only: str | None = None, *, force: bool = False) -> list[PullReport]:
        """Pull every operator that is due (all of them with ``force``)."""
        with connect(self._settings.db) as conn:
            rows = [
                r
                for r in store.list_operators(conn)
                if r.endpoint_url and (only is None or r.operator_id == only)
            ]
        reports = []
        now = self._mono()
        for r in rows:
            breaker = self.breakers.setdefault(r.operator_id, Breaker())
            if not force and (now < self._due.get(r.operator_id, 0.0) or not breaker.allow(now)):
                continue
            self._due[r.operator_id] = now + r.pull_interval_s
            reports.append(self.pull_one(r))
        return reports

    def pull_one(self, row: store.OperatorRow) -> PullReport:
        op = row.operator_id
        report = PullReport(op)
        breaker = self.breakers.setdefault(op, Breaker())
        started = self._clock()
        delta = store.LinkDelta()
        try:
            secrets = self._box.open(op, row.sealed)
            self._pull(row, secrets, report)
        except PullError as exc:
            breaker.failure(self._mono())
            report.error = exc.reason
            delta.failures, delta.last_failure = 1, self._clock()
            delta.last_failure_reason = f"pull: {exc.reason}"
            if breaker.failures in (1, breaker.threshold):
                logger.warning("operator %s: pull failed (%s)", op, exc)
        else:
            if breaker.failures:
                logger.warning("operator %s: pulls succeed again", op)
            breaker.success()
            self.last_query[op] = started
            delta.last_pull = self._clock()
        with connect(self._settings.db) as conn, conn.transaction():
            store.record_links(conn, {op: delta})
        return report

    def _client(self, row: store.OperatorRow, secrets: OperatorSecrets) -> OperatorClient:
        if secrets.outbound is None:
            raise PullError("no_outbound_keys", "add them with `qilu operators rotate`")
        c = self._clients.get(row.operator_id)
        if c is None or c.operator_id != row.operator_id:
            c = self._clients[row.operator_id] = OperatorClient(
                row.operator_id,
                row.endpoint_url,
                secrets.outbound,
                self._settings.tcec102.platform_operator_id,
                self._transport,
                timeout_s=self._timeout,
                clock=self._clock,
            )
        return c

    def _pull(self, row: store.OperatorRow, secrets: OperatorSecrets, report: PullReport) -> None:
        op = row.operator_id
        client = self._client(row, secrets)
        since = self.last_query.get(op)
        report.full = since is None
        stations: list[mapping.Station] = []
        for page in client.stations(self._cities, since, self._page_size):
            stations.extend(page.stations)
            for exc in page.refused:
                self._refuse(op, "query_stations_info", exc, report)
        report.stations = len(stations)
        if stations:
            with connect(self._settings.db) as conn:
                report.sites_added, report.devices_added, report.connectors = apply_stations(
                    conn, row, stations, actor=f"tcec102:{op}"
                )
        with connect(self._settings.db) as conn:
            station_ids = [
                r[0]
                for r in conn.execute(
                    "SELECT DISTINCT station_id FROM operator_connectors"
                    " WHERE operator_id = %s AND station_id <> '' ORDER BY 1",
                    (op,),
                )
            ]
            known = store.connectors(conn).get(op, {})
        stations_known = set(station_ids)
        signer = signing.Signer(1, secrets.signing_key)
        for good, bad in client.statuses(station_ids):
            for exc in bad:
                self._refuse(op, "query_station_status", exc, report)
            at = self._clock()  # the answer's arrival
            pulled: dict[str, tuple[int, datetime]] = {}
            piles: set[str] = set()
            for sid, cs in good:
                dev = known.get(cs.connector_id)
                if dev is None or sid not in stations_known:
                    what = "connector" if dev is None else "station"
                    which = cs.connector_id if dev is None else sid
                    unknown = ExchangeError(
                        Ret.BUSINESS_PARAMETERS,
                        f"unknown_{what}",
                        f"{what.capitalize()}ID {which} is not a {what} of {op}",
                    )
                    self._refuse(op, "query_station_status", unknown, report)
                    continue
                pulled[cs.connector_id] = (cs.status, at)
                piles.add(dev)
                report.statuses += 1
            if not piles:
                continue
            # the pile's state by the pushes' rule: every connector's last known status
            # (the ones just pulled, and a newer push's where the endpoint kept one)
            with connect(self._settings.db) as conn, conn.transaction():
                store.record_statuses(conn, op, pulled)
                per_pile = store.pile_statuses(conn, op, piles)
            ts = to_us(at)
            self._seq += 1
            env = Envelope(row.agent_id, self._boot, self._seq, ts)
            for dev in sorted(per_pile):
                env.extend(mapping.pile_readings(dev, per_pile[dev], ts))
            try:
                self._produce(env, signer)
            except Exception as exc:  # kafka-python raises assorted types
                raise PullError("kafka", str(exc)[:200]) from exc

    def _refuse(self, op: str, interface: str, exc: ExchangeError, report: PullReport) -> None:
        report.refused.append(exc.reason)
        value = json.dumps({"operator": op, "interface": interface, "detail": exc.detail})
        self._dead_letter(
            DeadLetter(
                key=op.encode(),
                value=value.encode(),
                reason=f"tcec102_{exc.reason}",
                detail=exc.detail[:500],
                source=f"tcec102/{op}/{interface}",
            )
        )


class KafkaOut:
    """Synchronous produce for the puller: returns once Kafka acknowledged."""

    def __init__(self, settings: Settings) -> None:
        self._producer, self._topic, self._dlq = charging_producer(
            settings, "tcec102-pull", linger_ms=5
        )

    def produce(self, env: Envelope, signer: signing.Signer) -> None:
        value = env.encode()
        self._producer.send(
            self._topic, key=env.agent_id.encode(), value=value, headers=signer.headers(value)
        ).get(timeout=30)

    def dead_letter(self, letter: DeadLetter) -> None:
        self._producer.send(self._dlq, key=letter.key, value=letter.value, headers=letter.headers())

    def close(self) -> None:
        self._producer.flush(timeout=10)
        self._producer.close(timeout=10)
