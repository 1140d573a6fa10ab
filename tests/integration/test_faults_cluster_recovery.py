"""The cluster profile under faults, part two: a broker back empty, a broker cut off.

Three KRaft brokers with the cluster profile's configuration, each in a network namespace
of the test's own (``faults.private_kafka_cluster(net=...)``, ``tests/integration/netns.py``:
three "machines" on a bridge), topics with three replicas and ``min.insync.replicas=2``, the
ledger's producer (``acks=all``, idempotent) and ``qilu ingest`` (static membership) in the
root namespace, reaching the brokers through the bridge. Both scenarios end with every
acknowledged reading stored exactly once (docs/faults.md):

- **back empty**: the leader of the ledger topic's partition 0 is SIGKILLed, its log dir
  thrown away (a replaced disk, a rebuilt machine), and it is started again, formatted anew;
  it must fetch every partition it holds from the others until it is in sync everywhere
  (re-replication), while the partitions it led take writes on the survivors throughout;
- **partition**: the leader of partition 0 is cut off the network (its link down: nothing
  in or out, TCP connections just stall) for ``QILU_FAULTS_PARTITION_S`` seconds and then
  reconnected; the controllers fence it (no heartbeats), the survivors take its partitions
  over and keep acknowledging writes, and once back it truncates what only it had (never
  acknowledged: ``acks=all`` needs two in-sync replicas) and rejoins the in-sync replicas.

Seconds reported (targets: writes back within 10 s of the loss): ``produce_resumed_s``
(fault to the first acknowledged write on a partition the broker led), ``stored_resumed_s``
(to the first such reading stored), ``in_sync_again_s`` (the broker started or reconnected,
to it being in sync on every partition of the ledger topic). ``bench/cluster_faults.py
--scenario empty|partition`` repeats them into bench/results/cluster_faults.json.
"""

from __future__ import annotations

import contextlib
import functools
import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from qilu.ports import free_port
from qilu.settings import REPO_ROOT, Settings, load
from stream.topics import ensure_topics
from tests.helpers import wait_for
from tests.integration.faults import (
    IngestProcess,
    Ledger,
    LedgerProducer,
    PrivateKafkaCluster,
    Tally,
    TcpProxy,
    acks_on,
    assert_exactly_once,
    describe,
    dropped_sockets_collected,  # noqa: F401 - autouse
    env_number,
    fault_marks,
    in_sync_everywhere,
    private_kafka_cluster,
    quiet_kafka_client,  # noqa: F401 - autouse
    register_devices,
    stop_and_drain,
    stored_any,
    unauthenticated,
    wait_writable,
)
from tests.integration.netns import HostNet, host_net

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.admin import KafkaAdminClient

pytestmark = fault_marks(int(env_number("QILU_FAULTS_TIMEOUT_S", 600)))


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The conftest settings, with unsigned envelopes accepted (faults.unauthenticated)."""
    return unauthenticated(settings)


BROKER_HOSTS = (1, 2, 3)
INGEST_HOSTS = (4, 5, 6)
API_HOSTS = (7, 8)


@pytest.fixture(scope="module")
def hosts() -> Iterator[HostNet]:
    """Eight "machines" (network namespaces on a bridge): three brokers, three ingest
    processes, two API processes; removed afterwards in every case."""
    with host_net(8) as net:
        yield net
    assert not net.leftovers(), net.leftovers()


@pytest.fixture(scope="module")
def cluster(hosts: HostNet) -> Iterator[PrivateKafkaCluster]:
    """One cluster for the module's scenarios (each leaves all three brokers in sync)."""
    with private_kafka_cluster(load(), net=hosts) as c:
        yield c


class Scenario:
    """The ledger flowing through ``cluster`` into the test's database: producer, ingest."""

    def __init__(self, settings: Settings, cluster: PrivateKafkaCluster, log: Path) -> None:
        self.rate = env_number("QILU_FAULTS_CLUSTER_RATE", 2_000)
        self.cluster = cluster
        kafka = settings.kafka.model_copy(update={"bootstrap": cluster.bootstrap})
        self.s = settings.model_copy(update={"kafka": kafka})
        ensure_topics(kafka)
        self.ledger = Ledger(register_devices(self.s.db), int(self.rate * 240))
        self.producer = LedgerProducer(self.ledger, kafka, rate=self.rate)
        self.topic = self.producer.topic
        wait_writable(kafka, self.topic)
        self.before = describe(cluster.bootstrap, self.topic)
        assert all(len(p["replica_nodes"]) == 3 for p in self.before), self.before
        self.ingest = IngestProcess(self.s, log, QILU_INGEST__GROUP_INSTANCE_ID="cluster-ingest")
        self.victim: int = self.before[0]["leader_id"]
        self.led = {p["partition_index"] for p in self.before if p["leader_id"] == self.victim}

    def start(self, *, ingest: bool = True) -> None:
        self.producer.start()
        if not ingest:
            return
        self.ingest.start()
        wait_for(lambda: self.ledger.acked >= self.rate * 5, 120, "five seconds of readings")
        wait_for(
            lambda: stored_any(self.s, self.ledger, acks_on(self.ledger, {0})),
            120,
            "ingest storing",
        )

    def writes_resume(self, since: float) -> tuple[float, float]:
        """Seconds from ``since`` to the first acknowledged write on a partition the victim
        led (after this call began), and to the first such reading stored."""
        acked_before = len(acks_on(self.ledger, self.led))
        wait_for(
            lambda: len(acks_on(self.ledger, self.led)) > acked_before,
            90,
            "writes to its partitions",
        )
        produced = time.monotonic() - since
        fresh = acks_on(self.ledger, self.led)[acked_before:]
        wait_for(lambda: stored_any(self.s, self.ledger, fresh), 90, "those writes stored")
        return produced, time.monotonic() - since

    def leaders_without_victim(self) -> list[dict[str, object]]:
        """The victim's partitions as the survivors report them now."""
        parts = describe(self.cluster.bootstrap_without(self.victim), self.topic)
        return [p for p in parts if p["partition_index"] in self.led]

    def finish(self, scenario: str, **extra: object) -> Tally:
        stop_and_drain(self.producer, self.s.kafka, self.s.ingest.group_id, join_s=60)
        self.ingest.stop()
        return self.ledger.tally(
            scenario,
            self.s.db,
            killed_broker=self.victim,
            partitions_it_led=sorted(self.led),
            producer_failures=self.producer.failures,
            **extra,
        )

    def stop(self) -> None:
        self.producer.stop_event.set()
        self.ingest.stop()
        self.producer.join(timeout=30)


def test_broker_back_empty_is_refilled_by_the_others_nothing_lost(
    settings: Settings, cluster: PrivateKafkaCluster, tmp_path: Path
) -> None:
    sc = Scenario(settings, cluster, tmp_path / "ingest.log")
    victim = sc.victim
    try:
        sc.start()
        cluster.kill(victim)
        killed_at = time.monotonic()
        produce_resumed_s, stored_resumed_s = sc.writes_resume(killed_at)
        during = sc.leaders_without_victim()
        cluster.wipe(victim)
        assert not cluster.svc.server(f"kafka-{victim}").data_dir.exists()
        restarted_at = time.monotonic()
        cluster.start(victim)  # formats the empty log dir, waits until it answers
        answered_s = time.monotonic() - restarted_at
        wait_for(
            lambda: in_sync_everywhere(cluster.bootstrap, sc.topic, victim),
            180,
            f"broker {victim} in sync on every partition again",
        )
        in_sync_again_s = time.monotonic() - restarted_at
        offsets_topic_in_sync(cluster.bootstrap, victim)
        time.sleep(5.0)  # readings keep flowing with all three in sync
        t = sc.finish(
            "cluster_broker_back_empty",
            produce_resumed_s=round(produce_resumed_s, 2),
            stored_resumed_s=round(stored_resumed_s, 2),
            answered_after_restart_s=round(answered_s, 2),
            in_sync_again_s=round(in_sync_again_s, 2),
        )
    finally:
        sc.stop()
    assert_exactly_once(t, sc.ingest)
    for p in during:  # the survivors led its partitions while it was gone
        assert p["leader_id"] not in (victim, -1), during
    # the broker that came back empty holds every partition of the topic again: its fresh
    # log dir has the partition folders with the records fetched from the others
    data = cluster.svc.server(f"kafka-{victim}").data_dir
    for p in describe(cluster.bootstrap, sc.topic):
        logs = list((data / f"{sc.topic}-{p['partition_index']}").glob("*.log"))
        assert logs, p
        assert sum(f.stat().st_size for f in logs) > 0, p


def test_broker_cut_off_the_network_nothing_lost_rejoins(
    settings: Settings, cluster: PrivateKafkaCluster, hosts: HostNet, tmp_path: Path
) -> None:
    hold_s = env_number("QILU_FAULTS_PARTITION_S", 20)
    sc = Scenario(settings, cluster, tmp_path / "ingest.log")
    victim = sc.victim
    cut = False
    try:
        sc.start()
        hosts.cut(victim)
        cut, cut_at = True, time.monotonic()
        produce_resumed_s, stored_resumed_s = sc.writes_resume(cut_at)
        during = sc.leaders_without_victim()
        time.sleep(max(0.0, hold_s - (time.monotonic() - cut_at)))  # bounded: then healed
        hosts.heal(victim)
        cut, healed_at = False, time.monotonic()
        wait_for(
            lambda: in_sync_everywhere(cluster.bootstrap, sc.topic, victim),
            180,
            f"broker {victim} in sync on every partition again",
        )
        in_sync_again_s = time.monotonic() - healed_at
        offsets_topic_in_sync(cluster.bootstrap, victim)
        time.sleep(5.0)
        t = sc.finish(
            "cluster_broker_partitioned",
            partitioned_s=round(healed_at - cut_at, 2),
            produce_resumed_s=round(produce_resumed_s, 2),
            stored_resumed_s=round(stored_resumed_s, 2),
            in_sync_again_s=round(in_sync_again_s, 2),
        )
    finally:
        if cut:
            hosts.heal(victim)
        sc.stop()
    assert_exactly_once(t, sc.ingest)
    for p in during:  # cut off, it led nothing the others could see
        assert p["leader_id"] not in (victim, -1), during
        assert victim not in p["isr_nodes"], during


def offsets_topic_in_sync(bootstrap: str, node_id: int) -> None:
    """Wait until ``node_id`` is in sync on every partition of ``__consumer_offsets`` too.

    The module's scenarios share the cluster, each leaving its broker in sync. The groups'
    topic has 50 partitions, which a broker back empty refetches after the scenario's own;
    a group join or an offset commit writes there with acks=all and min.insync.replicas 2,
    so the next scenario's group, its coordinator on a partition still short of replicas
    when another broker is out, could not form (a CI run's several-hosts scenario waited
    180 s for its members without one joining)."""
    wait_for(
        lambda: in_sync_everywhere(bootstrap, "__consumer_offsets", node_id),
        180,
        f"broker {node_id} in sync on every partition of __consumer_offsets",
    )


def group_assignment(bootstrap: str, group: str, topic: str) -> dict[str, list[int]]:
    """Per client host (the address the broker sees a member connect from), the partitions
    of ``topic`` the group assigned to it."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="fault-describe")
    try:
        described = admin.describe_groups([group])[group]
    finally:
        admin.close()
    out: dict[str, list[int]] = {}
    for m in described["members"]:
        host = str(m["client_host"]).lstrip("/")
        assigned = (m.get("member_assignment") or {}).get("assigned_partitions", [])
        parts = [p for a in assigned if a["topic"] == topic for p in a["partitions"]]
        out[host] = sorted(out.get(host, []) + parts)
    return out


def settled(bootstrap: str, group: str, topic: str, want_hosts: set[str]) -> bool:
    """Does the group spread every partition of ``topic`` over exactly ``want_hosts``,
    each holding at least one?"""
    try:
        got = group_assignment(bootstrap, group, topic)
    except Exception:  # noqa: BLE001 - a rebalance in progress answers with assorted errors
        return False
    every = sorted(p for parts in got.values() for p in parts)
    return set(got) == want_hosts and all(got.values()) and every == list(range(6))


def api_readings(url: str, device: str, start: str, end: str) -> object:
    q = urllib.parse.urlencode({"resolution": "raw", "start": start, "end": end, "limit": 1000})
    target = f"{url}/v1/devices/{device}/readings?{q}"
    with urllib.request.urlopen(target, timeout=30) as r:  # noqa: S310 - http, our own API
        return json.load(r)


def test_ingest_and_api_on_several_hosts_partitions_spread_and_move_when_one_goes(
    settings: Settings, cluster: PrivateKafkaCluster, hosts: HostNet, tmp_path: Path
) -> None:
    """Three ingest processes on three "hosts" (namespaces 4-6) in one consumer group share
    the partitions; one host goes off the network and its partitions move to the other two
    (after the group's session timeout: 45 s, the member is dynamic here), readings flowing
    exactly once throughout; two API processes on two more hosts answer the same."""
    sc = Scenario(settings, cluster, tmp_path / "unused.log")
    group = sc.s.ingest.group_id
    procs: list[subprocess.Popen[bytes]] = []
    cut: int | None = None
    with TcpProxy(settings.db.port, host=hosts.gateway) as db_proxy:
        # the hosts reach the test's database through the bridge
        remote_db = sc.s.db.model_copy(update={"host": hosts.gateway, "port": db_proxy.port})
        remote = sc.s.model_copy(update={"db": remote_db})
        ingests = {
            h: IngestProcess(
                remote, tmp_path / f"ingest-{h}.log", wrap=functools.partial(hosts.wrap, h)
            )
            for h in INGEST_HOSTS
        }
        try:
            sc.start(ingest=False)
            for ing in ingests.values():
                ing.start()
            all_three = {hosts.address(h) for h in INGEST_HOSTS}
            try:
                wait_for(
                    lambda: settled(cluster.bootstrap, group, sc.topic, all_three), 180, "spread"
                )
            except AssertionError as exc:
                logs = "\n".join(f"{h}: {i.log_text()[-2000:]}" for h, i in ingests.items())
                offsets = describe(cluster.bootstrap, "__consumer_offsets")
                short = [p for p in offsets if len(p["isr_nodes"]) < 3]
                raise AssertionError(
                    f"{exc}; offsets partitions short of replicas {short}\n{logs}"
                ) from exc
            spread = group_assignment(cluster.bootstrap, group, sc.topic)
            wait_for(lambda: stored_any(sc.s, sc.ledger, acks_on(sc.ledger, {0, 5})), 120, "rows")
            gone = INGEST_HOSTS[1]
            hosts.cut(gone)
            # the database notices the vanished client (in production: the server's TCP
            # keepalives, docs/faults.md); until it does, the transaction the host had open
            # holds its row locks, among them the moved partitions' stored offsets
            db_proxy.cut_client(hosts.address(gone))
            cut, cut_at = gone, time.monotonic()
            rest = all_three - {hosts.address(gone)}
            wait_for(lambda: settled(cluster.bootstrap, group, sc.topic, rest), 180, "moved")
            moved_after_s = time.monotonic() - cut_at
            after = group_assignment(cluster.bootstrap, group, sc.topic)
            acked = len(sc.ledger.offsets)
            wait_for(lambda: len(sc.ledger.offsets) > acked + 20, 60, "more readings")
            try:
                stop_and_drain(sc.producer, sc.s.kafka, group, join_s=60)
            except AssertionError as exc:
                state = group_assignment(cluster.bootstrap, group, sc.topic)
                logs = "\n".join(f"{h}: {i.log_text()[-2000:]}" for h, i in ingests.items())
                raise AssertionError(f"{exc}; group now {state}\n{logs}") from exc
            # two API processes on two more hosts, the same database
            port = free_port()
            for h in API_HOSTS:
                argv = [sys.executable, "-m", "ops.cli", "--log-level", "WARNING", "api"]
                argv += ["--host", hosts.address(h), "--port", str(port)]
                env = {
                    **ingests[INGEST_HOSTS[0]].env,
                    "QILU_API__ANONYMOUS_SCOPES": '["coverage:read", "telemetry:read"]',
                }
                with (tmp_path / f"api-{h}.log").open("ab") as log:
                    procs.append(
                        subprocess.Popen(
                            hosts.wrap(h, argv), env=env, stdout=log, stderr=log, cwd=REPO_ROOT
                        )
                    )
            urls = [f"http://{hosts.address(h)}:{port}" for h in API_HOSTS]
            for url in urls:
                wait_for(lambda url=url: answers(f"{url}/readyz"), 120, f"{url} ready")
            t0 = datetime.fromtimestamp(sc.ledger.t0_us / 1e6, UTC)
            start = t0.isoformat().replace("+00:00", "Z")
            end = (t0 + timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
            device = sc.ledger.devices[0]
            answers_by_api = [api_readings(url, device, start, end) for url in urls]
        finally:
            if cut is not None:
                hosts.heal(cut)
            for p in procs:
                p.terminate()
            for p in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=20)
                if p.poll() is None:
                    p.kill()
                    p.wait()
            sc.producer.stop_event.set()
            for ing in ingests.values():
                ing.kill()
            sc.producer.join(timeout=30)
    t = sc.ledger.tally(
        "cluster_ingest_hosts",
        sc.s.db,
        spread={h: len(p) for h, p in spread.items()},
        after={h: len(p) for h, p in after.items()},
        host_gone=hosts.address(gone),
        moved_after_s=round(moved_after_s, 2),
    )
    assert t.lost == 0, "\n".join(i.log_text()[-1500:] for i in ingests.values())
    assert t.duplicates == 0
    assert t.rows == t.ledger
    # the partitions were spread over the three hosts, then over the two left
    assert set(spread) == all_three, spread
    assert set(after) == rest, after
    assert sorted(p for ps in after.values() for p in ps) == list(range(6))
    # the two API hosts serve the same readings, those the ingest stored
    first, second = answers_by_api
    assert first == second
    assert isinstance(first, dict)
    assert first["items"], first
    with psycopg.connect(sc.s.db.conninfo(), prepare_threshold=None) as conn:
        row = conn.execute(
            "SELECT count(*) FROM readings JOIN devices USING (device_pk)"
            " WHERE device_id = %s AND ts >= %s AND ts < %s",
            (device, t0, t0 + timedelta(seconds=30)),
        ).fetchone()
    assert row is not None
    assert len(first["items"]) == row[0]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - http, our own API
            return int(r.status) == 200
    except (urllib.error.URLError, OSError):
        return False
