"""The platform's CA (qilu/pki.py): a real TLS handshake verifies the broker's certificate
against the CA, and fails against another CA or another name; expiry and rotation."""

from __future__ import annotations

import socket
import ssl
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from ops.cli import main
from qilu import pki
from qilu.errors import ConfigError


@pytest.fixture(scope="module")
def ca() -> pki.KeyPair:
    return pki.new_ca()


def handshake(tmp_path: Path, server: pki.KeyPair, cafile: bytes, host: str) -> str:
    """TLS from a client trusting ``cafile`` to a loopback server presenting ``server``;
    the negotiated version, or the client's error."""
    (tmp_path / "s.key").write_bytes(server.key_pem)
    (tmp_path / "s.crt").write_bytes(server.cert_pem)
    (tmp_path / "ca.crt").write_bytes(cafile)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(tmp_path / "s.crt", tmp_path / "s.key")
    cctx = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))  # verifies chain + name
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        port = lsock.getsockname()[1]

        def serve() -> None:
            conn, _ = lsock.accept()
            try:
                with sctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass  # the client refused us: what some cases expect

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        try:
            with (
                socket.create_connection(("127.0.0.1", port)) as raw,
                cctx.wrap_socket(raw, server_hostname=host) as tls,
            ):
                version = tls.version() or "?"
                tls.sendall(b"x")
                return version
        except ssl.SSLCertVerificationError as exc:
            return f"refused: {exc.verify_message}"
        finally:
            t.join(timeout=5)


def test_agent_verifies_the_broker_against_the_platform_ca(ca: pki.KeyPair, tmp_path: Path) -> None:
    broker = pki.issue_server(ca, ["127.0.0.1", "kafka.qilu.example"])
    assert pki.names_of(broker.cert_pem) == ["127.0.0.1", "kafka.qilu.example"]
    assert handshake(tmp_path, broker, ca.cert_pem, "127.0.0.1").startswith("TLS")
    assert handshake(tmp_path, broker, ca.cert_pem, "kafka.qilu.example").startswith("TLS")


def test_another_ca_or_another_name_is_refused(ca: pki.KeyPair, tmp_path: Path) -> None:
    broker = pki.issue_server(ca, ["127.0.0.1"])
    other = pki.new_ca("someone else")
    assert handshake(tmp_path, broker, other.cert_pem, "127.0.0.1").startswith("refused")
    assert "mismatch" in handshake(tmp_path, broker, ca.cert_pem, "kafka.elsewhere.example")


def test_expiry_and_renewal(ca: pki.KeyPair) -> None:
    broker = pki.issue_server(ca, ["127.0.0.1"], days=40)
    assert 39.9 < pki.expires_in_days(broker.cert_pem) <= 40
    assert not pki.needs_renewal(broker.cert_pem, within_days=30)
    later = datetime.now(UTC) + timedelta(days=15)
    assert pki.needs_renewal(broker.cert_pem, within_days=30, now=later)
    with pytest.raises(ConfigError, match="outlive the CA"):
        pki.issue_server(ca, ["127.0.0.1"], days=pki.CA_DAYS + 1)
    with pytest.raises(ConfigError, match="at least one name"):
        pki.issue_server(ca, [])
    ca_cert = ca.cert
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_cli_init_issue_rotate_files_and_modes(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    assert main(["pki", "init", "--dir", str(d)]) == 0
    assert main(["pki", "init", "--dir", str(d)]) == 2  # an existing CA is kept
    assert main(["pki", "issue", "--dir", str(d), "--name", "127.0.0.1"]) == 0
    first = (d / "broker.crt").read_bytes()
    assert main(["pki", "issue", "--dir", str(d), "--renew-within-days", "30"]) == 0
    assert (d / "broker.crt").read_bytes() == first  # 397 days left: kept
    assert main(["pki", "issue", "--dir", str(d), "--renew-within-days", "400"]) == 0
    assert (d / "broker.crt").read_bytes() != first  # rotated under the same CA
    for secret in ("ca.key", "broker.key", "broker.pem"):
        assert (d / secret).stat().st_mode & 0o077 == 0, secret
    pem = (d / "broker.pem").read_bytes()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pem.count(b"BEGIN CERTIFICATE") == 2  # the chain: broker, then the CA


def test_agents_listener_is_sasl_ssl_with_a_keystore() -> None:
    from ops.services import render

    plain = render.kafka_server_properties(
        host="127.0.0.1", port=1, controller_port=2, agent_port=3, log_dir=Path("/d")
    )
    assert "AGENTS:SASL_PLAINTEXT" in str(plain["listener.security.protocol.map"])
    tls = render.kafka_server_properties(
        host="127.0.0.1",
        port=1,
        controller_port=2,
        agent_port=3,
        log_dir=Path("/d"),
        agent_keystore=Path("/pki/broker.pem"),
    )
    assert "AGENTS:SASL_SSL" in str(tls["listener.security.protocol.map"])
    assert "PLAINTEXT:PLAINTEXT" in str(tls["listener.security.protocol.map"])  # internal
    assert tls["listener.name.agents.ssl.keystore.type"] == "PEM"
    assert tls["listener.name.agents.ssl.keystore.location"] == "/pki/broker.pem"


def test_production_refuses_to_provision_agents_for_a_plaintext_listener() -> None:
    from qilu.settings import KafkaSettings, Settings
    from stream.provisioning import provision, require_agent_tls

    prod = {"env": "production", "db": {"password": "a-real-one"}}
    plain = Settings(**prod)  # type: ignore[arg-type]  # other processes do not care
    with pytest.raises(ConfigError, match=r"kafka\.agent_security_protocol"):
        require_agent_tls(plain)
    with pytest.raises(ConfigError, match="SASL_SSL"):  # refused before any connection
        provision(plain, "gw-1", sites=["s"], actor="test")
    no_ca = plain.model_copy(update={"kafka": KafkaSettings(agent_security_protocol="SASL_SSL")})
    with pytest.raises(ConfigError):
        require_agent_tls(no_ca)  # TLS without the CA to verify the broker with
    require_agent_tls(
        plain.model_copy(
            update={
                "kafka": KafkaSettings(
                    agent_security_protocol="SASL_SSL", agent_ssl_cafile="/etc/qilu/ca.crt"
                )
            }
        )
    )
    require_agent_tls(Settings())  # development: loopback SASL_PLAINTEXT is fine
