"""Dead letters an operator can read, against the real Kafka + PostgreSQL pipeline.

Bad records go through the real ingest; ``qilu deadletters`` (the CLI entry point) and
``/v1/admin/deadletters`` must say what was refused, by reason, agent and device, show the
record decoded, and count a batch read again (a second consumer group over the same topics)
only once.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from kafka import KafkaProducer

from api.app import create_app
from api.cli import create_key
from ops.cli import main
from qilu.contract import Envelope, Reading, Sector
from qilu.registry import Device, Registry, Site
from qilu.settings import Settings
from storage.db import connect
from storage.registry_store import load_registry
from stream.cli import build_consumer
from stream.provisioning import provision_province
from stream.topics import group_lag, readings_topic, readings_topics
from tests.helpers import scalar, wait_for

pytestmark = pytest.mark.integration
AGENT = "agent-dl"
GARBAGE = b"\x92\x01"  # a msgpack array, not an envelope


def registry() -> Registry:
    reg = Registry()
    reg.sites.append(Site("CHG-D-1", Sector.CHARGING, "370200", "D1", public=True, networked=True))
    reg.devices += [
        Device("CHG-D-1-01", "CHG-D-1", "charging_pile"),
        Device("CHG-D-1-02", "CHG-D-1", "charging_pile"),
    ]
    return reg


@dataclass
class Refused:
    settings: Settings
    bad: bytes  # the envelope with refused readings


def commit_at_beginning(settings: Settings) -> None:
    """Commit the broker's oldest offsets of the readings topics for the settings' group."""
    from kafka import KafkaConsumer
    from kafka.structs import OffsetAndMetadata, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap,
        group_id=settings.ingest.group_id,
        enable_auto_commit=False,
    )
    try:
        parts = [
            TopicPartition(t, p)
            for t in readings_topics(settings.kafka)
            for p in consumer.partitions_for_topic(t) or ()
        ]
        begins = consumer.beginning_offsets(parts)
        consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in begins.items()})
    finally:
        consumer.close(autocommit=False)


@pytest.fixture
def refused(settings: Settings, start_ingest: Callable[[], object]) -> Refused:
    """Three bad records through the real ingest: undecodable bytes, an unsigned envelope and
    an envelope with two refused readings among two good ones."""
    with connect(settings.db) as conn:
        load_registry(conn, registry())
    signer = provision_province(settings, {AGENT: ["CHG-D-1"]}, actor="test")[AGENT]
    start_ingest()
    now = time.time_ns() // 1000
    env = Envelope(AGENT, "boot-1", 0, now)
    env.add(Reading("CHG-D-1-01", "power_kw", now, 7.0))
    env.add(Reading("CHG-D-1-01", "power_kw", now - 1, 5000.0))  # above 1000 kW
    env.add(Reading("CHG-D-1-02", "power_kw", now, 11.0))
    env.add(Reading("NO-SUCH-DEVICE", "power_kw", now, 1.0))
    bad = env.encode()
    unsigned = Envelope(AGENT, "boot-1", 1, now)
    unsigned.add(Reading("CHG-D-1-02", "power_kw", now - 5, 3.0))
    unsigned.add(Reading("CHG-D-1-02", "power_kw", now - 6, 3.0))
    topic = readings_topic(settings.kafka, Sector.CHARGING)
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap, acks="all")
    producer.send(topic, key=AGENT.encode(), value=GARBAGE)
    producer.send(topic, key=AGENT.encode(), value=bad, headers=signer.headers(bad))
    producer.send(topic, key=AGENT.encode(), value=unsigned.encode())
    producer.flush()
    producer.close()
    wait_for(
        lambda: (
            scalar(settings.db, "SELECT coalesce(sum(records), 0) FROM deadletter_summary") >= 4
            and group_lag(settings.kafka, settings.ingest.group_id, readings_topics(settings.kafka))
            == 0
        ),
        timeout=120,
        what="the refusals to be summed and the offsets committed",
    )
    return Refused(settings, bad)


@pytest.fixture
def cli_env(refused: Refused, monkeypatch: pytest.MonkeyPatch) -> Refused:
    """``qilu ...`` in this process, pointed at the test's database and topics."""
    s = refused.settings
    monkeypatch.setenv("QILU_DB__NAME", s.db.name)
    monkeypatch.setenv("QILU_KAFKA__BOOTSTRAP", s.kafka.bootstrap)
    monkeypatch.setenv("QILU_KAFKA__TOPIC_PREFIX", s.kafka.topic_prefix)
    return refused


def qilu_json(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, object]]:
    capsys.readouterr()
    assert main([*args, "--json"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def groups(rows: list[dict[str, object]], *keys: str) -> dict[tuple[object, ...], tuple[int, int]]:
    return {
        tuple(r[k] for k in keys): (int(r["records"]), int(r["readings"]))  # type: ignore[call-overload]
        for r in rows
    }


EXPECTED = {
    ("malformed", AGENT, ""): (1, 0),  # the agent from the record key
    ("unsigned", AGENT, ""): (1, 2),  # both readings of the envelope
    ("value_out_of_range", AGENT, "CHG-D-1-01"): (1, 1),
    ("unknown_device", AGENT, "NO-SUCH-DEVICE"): (1, 1),
}


def test_summary_tail_and_show_say_what_was_refused(
    cli_env: Refused, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = qilu_json(capsys, "deadletters", "summary", "--by", "reason,agent,device")
    assert groups(rows, "reason", "agent", "device") == EXPECTED
    by_reason = qilu_json(capsys, "deadletters", "summary", "--by", "reason")
    assert groups(by_reason, "reason") == {(k[0],): v for k, v in EXPECTED.items()}
    only = qilu_json(capsys, "deadletters", "summary", "--by", "device", "--reason", "unsigned")
    assert groups(only, "device") == {("",): (1, 2)}
    unknown = next(r for r in rows if r["reason"] == "unknown_device")
    assert str(unknown["example_source"]).startswith(
        readings_topic(cli_env.settings.kafka, Sector.CHARGING) + "/"
    )
    assert unknown["example_detail"] == "'NO-SUCH-DEVICE'"

    letters = qilu_json(capsys, "deadletters", "tail", "-n", "10")
    assert sorted(str(x["reason"]) for x in letters) == [
        "malformed",
        "rejected_readings",
        "unsigned",
    ]
    assert {x["agent_id"] for x in letters} == {AGENT}
    (mixed,) = qilu_json(capsys, "deadletters", "tail", "--reason", "rejected_readings")
    capsys.readouterr()
    assert main(["deadletters", "show", str(mixed["dead_letter"])]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["reason"] == "rejected_readings"
    assert shown["envelope"]["agent_id"] == AGENT
    marks = [(r["device_id"], r.get("refused")) for r in shown["readings"]]
    assert marks == [
        ("CHG-D-1-01", None),
        ("CHG-D-1-01", "value_out_of_range"),
        ("CHG-D-1-02", None),
        ("NO-SUCH-DEVICE", "unknown_device"),
    ]
    (garbage,) = qilu_json(capsys, "deadletters", "tail", "--reason", "malformed")
    capsys.readouterr()
    assert main(["deadletters", "show", str(garbage["dead_letter"])]) == 0
    assert json.loads(capsys.readouterr().out)["hex"] == GARBAGE.hex()
    assert main(["deadletters", "show", "0/999999"]) == 1


def test_a_batch_read_again_is_counted_once(refused: Refused) -> None:
    """A second consumer group reads every record again (as after a crash between the database
    commit and the offset commit): readings and summary stay as they were."""
    s = refused.settings
    before = scalar(
        s.db, "SELECT sum(records) * 1000 + sum(refused_readings) FROM deadletter_summary"
    )
    stored = scalar(s.db, "SELECT count(*) FROM readings")
    again = s.model_copy(
        update={"ingest": s.ingest.model_copy(update={"group_id": f"g{uuid.uuid4().hex[:10]}"})}
    )
    # its committed offsets at the beginning, behind the database's: the crash's state (a
    # group without committed offsets would resume from the database's and read nothing)
    commit_at_beginning(again)
    stop = threading.Event()
    consumer, pool = build_consumer(again, stop)
    thread = threading.Thread(target=consumer.run, name="ingest-again", daemon=True)
    thread.start()
    try:
        wait_for(
            lambda: (
                group_lag(again.kafka, again.ingest.group_id, readings_topics(again.kafka)) == 0
            ),
            what="the second group to read every record",
        )
    finally:
        stop.set()
        thread.join(timeout=30)
        pool.close()
    assert scalar(s.db, "SELECT count(*) FROM readings") == stored == 2
    assert (
        scalar(s.db, "SELECT sum(records) * 1000 + sum(refused_readings) FROM deadletter_summary")
        == before
        == 4 * 1000 + 4
    )


@pytest.fixture
def api(refused: Refused) -> Iterator[tuple[TestClient, dict[str, str]]]:
    _, admin = create_key(refused.settings, name="dl-admin", scopes=["admin"], rate=100_000)
    with TestClient(create_app(refused.settings)) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200, 30, what="API ready")
        yield client, {"Authorization": f"Bearer {admin}"}


def test_admin_api_answers_the_summary_and_the_records(
    api: tuple[TestClient, dict[str, str]], refused: Refused
) -> None:
    client, auth = api
    resp = client.get(
        "/v1/admin/deadletters",
        params=[("by", "reason"), ("by", "agent"), ("by", "device")],
        headers=auth,
    )
    assert resp.status_code == 200, resp.text
    assert groups(resp.json(), "reason", "agent_id", "device_id") == EXPECTED
    resp = client.get("/v1/admin/deadletters", params={"by": "agent"}, headers=auth)
    assert [(r["agent_id"], r["records"], r["readings"], r["reason"]) for r in resp.json()] == [
        (AGENT, 4, 4, None)
    ]
    resp = client.get(
        "/v1/admin/deadletters/records", params={"reason": "rejected_readings"}, headers=auth
    )
    assert resp.status_code == 200, resp.text
    (rec,) = resp.json()
    one = client.get(f"/v1/admin/deadletters/records/{rec['dead_letter']}", headers=auth)
    assert one.status_code == 200, one.text
    assert [r.get("refused") for r in one.json()["readings"]] == [
        None,
        "value_out_of_range",
        None,
        "unknown_device",
    ]
    assert client.get("/v1/admin/deadletters/records/0/999999", headers=auth).status_code == 404
    _, reader = create_key(refused.settings, name="dl-reader", scopes=["telemetry:read"])
    denied = client.get("/v1/admin/deadletters", headers={"Authorization": f"Bearer {reader}"})
    assert denied.status_code == 403


def test_ingest_logs_each_agent_and_reason_once_not_per_record(
    refused: Refused, caplog: pytest.LogCaptureFixture
) -> None:
    s = refused.settings
    producer = KafkaProducer(bootstrap_servers=s.kafka.bootstrap, acks="all")
    topic = readings_topic(s.kafka, Sector.CHARGING)
    for _ in range(3):
        producer.send(topic, key=AGENT.encode(), value=GARBAGE)
    producer.flush()
    producer.close()
    wait_for(
        lambda: (
            scalar(s.db, "SELECT sum(records) FROM deadletter_summary WHERE reason = 'malformed'")
            == 4
            and group_lag(s.kafka, s.ingest.group_id, readings_topics(s.kafka)) == 0
        ),
        what="the three more malformed records to be summed",
    )
    lines = [
        r.getMessage()
        for phase in ("setup", "call")
        for r in caplog.get_records(phase)
        if r.name == "stream.ingest" and r.getMessage().startswith(f"refused from agent {AGENT!r}")
    ]
    reasons = sorted(line.split(": ", 1)[1].split(" since")[0] for line in lines)
    # one line per (agent, reason), with what the batch refused; the three later malformed
    # records come within the interval: counted, not logged
    assert reasons == ["1 malformed", "1 unknown_device", "1 unsigned", "1 value_out_of_range"]


def test_summary_as_a_table_and_prune(cli_env: Refused, capsys: pytest.CaptureFixture[str]) -> None:
    s = cli_env.settings
    capsys.readouterr()
    assert main(["deadletters", "summary", "--by", "reason"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["reason", "records", "readings"]
    assert {line.split()[0] for line in lines[1:]} == {r for r, _, _ in EXPECTED}
    rows = scalar(s.db, "SELECT count(*) FROM deadletter_summary")
    with connect(s.db) as conn:  # a minute from two days ago, as if the ingest wrote it then
        conn.execute(
            "INSERT INTO deadletter_summary SELECT bucket - interval '2 days', agent_id, reason,"
            " device_id, records, refused_readings, example_source, example_detail"
            " FROM deadletter_summary WHERE reason = 'malformed'"
        )
        conn.commit()
    three_days = qilu_json(capsys, "deadletters", "summary", "--since", "3d", "--by", "reason")
    assert groups(three_days, "reason")[("malformed",)] == (2, 0)
    assert main(["deadletters", "prune", "--older-than", "1d"]) == 0
    assert capsys.readouterr().out.startswith("deleted 1 summary row(s) before ")
    assert scalar(s.db, "SELECT count(*) FROM deadletter_summary") == rows
    three_days = qilu_json(capsys, "deadletters", "summary", "--since", "3d", "--by", "reason")
    assert groups(three_days, "reason") == {(k[0],): v for k, v in EXPECTED.items()}
