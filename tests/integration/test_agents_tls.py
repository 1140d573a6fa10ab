"""The agents' listener over TLS (SASL_SSL) on a broker of our own, with a CA of `qilu pki`.

An agent configured as provisioning writes it (SASL/SCRAM over TLS, ``ssl_cafile`` = the
platform's CA) writes a record; a client trusting another CA is refused at the handshake,
and so is one that speaks plaintext SASL to the TLS listener. The shared broker is untouched.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.cli import main
from qilu import pki
from qilu.settings import Settings
from stream import provisioning
from stream.topics import ensure_topics, readings_topics
from tests.integration.faults import private_kafka, read_topic

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaProducer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    assert main(["pki", "init", "--dir", str(d)]) == 0
    assert main(["pki", "issue", "--dir", str(d), "--name", "127.0.0.1"]) == 0
    return d


@pytest.fixture(scope="module")
def tls_kafka(base_settings: Settings, pki_dir: Path) -> Iterator[tuple[str, str]]:
    with private_kafka(base_settings, agent_tls_dir=pki_dir) as broker:
        yield broker.bootstrap, broker.agent_bootstrap


_CONNECT = """
import sys, warnings
warnings.simplefilter("ignore")
from kafka import KafkaProducer
from kafka.errors import KafkaError
try:
    KafkaProducer(bootstrap_servers=sys.argv[1], security_protocol=sys.argv[2],
                  sasl_mechanism="SCRAM-SHA-512", sasl_plain_username=sys.argv[3],
                  sasl_plain_password=sys.argv[4], ssl_cafile=sys.argv[5] or None,
                  bootstrap_timeout_ms=8000).close()
except KafkaError as exc:
    print(type(exc).__name__)
    sys.exit(3)
"""


def connects(bootstrap: str, protocol: str, user: str, password: str, cafile: str) -> bool:
    """In a child process: kafka-python leaves a failed bootstrap's sockets open."""
    r = subprocess.run(
        [sys.executable, "-c", _CONNECT, bootstrap, protocol, user, password, cafile],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return r.returncode == 0


def test_agent_writes_over_tls_and_verifies_the_broker(
    base_settings: Settings, tls_kafka: tuple[str, str], pki_dir: Path, tmp_path: Path
) -> None:
    internal, agents_bootstrap = tls_kafka
    kafka = base_settings.kafka.model_copy(
        update={
            "bootstrap": internal,
            "agent_bootstrap": agents_bootstrap,
            "topic_prefix": f"t{uuid.uuid4().hex[:8]}",
            "agent_security_protocol": "SASL_SSL",
            "agent_ssl_cafile": str(pki_dir / "ca.crt"),
        }
    )
    ensure_topics(kafka)
    topic = readings_topics(kafka)[0]
    password = uuid.uuid4().hex
    provisioning.broker_grant(kafka, "tls-agent", password, [topic])
    producer = KafkaProducer(
        bootstrap_servers=agents_bootstrap,
        security_protocol="SASL_SSL",
        ssl_cafile=str(pki_dir / "ca.crt"),  # hostname checked too (kafka-python's default)
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username="tls-agent",
        sasl_plain_password=password,
        acks="all",
        enable_idempotence=True,
        bootstrap_timeout_ms=10_000,
    )
    try:
        producer.send(topic, key=b"tls-agent", value=b"over tls").get(timeout=30)
    finally:
        producer.close(timeout=10)
    assert [r.value for r in read_topic(kafka, topic)] == [b"over tls"]

    other = pki.new_ca("not the platform")
    (tmp_path / "other.crt").write_bytes(other.cert_pem)
    ca = str(pki_dir / "ca.crt")
    assert connects(agents_bootstrap, "SASL_SSL", "tls-agent", password, ca)  # the control
    assert not connects(
        agents_bootstrap, "SASL_SSL", "tls-agent", password, str(tmp_path / "other.crt")
    )
    assert not connects(agents_bootstrap, "SASL_PLAINTEXT", "tls-agent", password, "")


def test_provisioning_writes_the_tls_settings_into_the_agent_config(
    base_settings: Settings,
) -> None:
    kafka = base_settings.kafka.model_copy(
        update={"agent_security_protocol": "SASL_SSL", "agent_ssl_cafile": "/etc/qilu/ca.crt"}
    )
    s = base_settings.model_copy(update={"kafka": kafka})
    creds = provisioning.Credentials(
        agent_id="gw-9", key_no=1, signing_key="k" * 43, kafka_password="pw"
    )
    text = provisioning.agent_toml(s, creds)
    assert 'security_protocol = "SASL_SSL"' in text
    assert 'ssl_cafile = "/etc/qilu/ca.crt"' in text
