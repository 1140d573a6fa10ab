"""The platform's own certificate authority, for TLS between edge agents and Kafka.

Agents reach the broker over cellular links and the internet (issue 18 item 4): the agents'
SASL listener runs SASL_SSL with a certificate this CA signs, and every agent verifies the
broker against the CA's certificate (``kafka.ssl_cafile`` in its configuration; kafka-python
checks the chain and the host name). The CA is the platform's, not a public one: nothing but
our agents needs to trust it, and it never signs anything else.

- :func:`new_ca`: an EC P-256 key and a self-signed CA certificate (``ca_days``, default ten
  years, path length 0);
- :func:`issue_server`: a server certificate for the broker's names and addresses
  (subjectAltName), signed by the CA, valid ``days`` (default 397);
- :func:`needs_renewal`: whether a certificate expires within ``within_days``; rotation is
  issuing a new server certificate under the same CA (agents keep trusting it) and
  restarting the listener; a new CA means giving every agent the new CA certificate first.

Pure: bytes in, bytes out; :mod:`ops.pki_cli` reads and writes the files.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from qilu.errors import ConfigError

CA_DAYS = 3650
SERVER_DAYS = 397  # what public CAs may issue at most: forces a yearly rotation
RENEW_WITHIN_DAYS = 30


@dataclass(frozen=True)
class KeyPair:
    """A private key (PKCS#8 PEM, unencrypted: stored 0600) and its certificate (PEM)."""

    key_pem: bytes
    cert_pem: bytes

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def new_ca(name: str = "Qilu Telemetry agents CA", *, days: int = CA_DAYS) -> KeyPair:
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(_pem(key), cert.public_bytes(serialization.Encoding.PEM))


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    if not names:
        raise ConfigError("pki names", "a server certificate needs at least one name or address")
    entries: list[x509.GeneralName] = []
    for n in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            entries.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(entries)


def issue_server(ca: KeyPair, names: list[str], *, days: int = SERVER_DAYS) -> KeyPair:
    """A TLS server certificate for ``names`` (host names or IP addresses), signed by ``ca``."""
    san = _san(names)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ConfigError("pki ca key", "the CA key is not an EC key made by `qilu pki init`")
    ca_cert = ca.cert
    if days > (ca_cert.not_valid_after_utc - datetime.now(UTC)).days:
        raise ConfigError("pki days", f"{days} days outlive the CA; renew the CA first")
    key = _key()
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return KeyPair(_pem(key), cert.public_bytes(serialization.Encoding.PEM))


def expires_in_days(cert_pem: bytes, *, now: datetime | None = None) -> float:
    cert = x509.load_pem_x509_certificate(cert_pem)
    return (cert.not_valid_after_utc - (now or datetime.now(UTC))).total_seconds() / 86_400


def needs_renewal(
    cert_pem: bytes, *, within_days: float = RENEW_WITHIN_DAYS, now: datetime | None = None
) -> bool:
    return expires_in_days(cert_pem, now=now) <= within_days


def names_of(cert_pem: bytes) -> list[str]:
    """The subjectAltName entries of a certificate, as text."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(v) for v in san.get_values_for_type(x509.IPAddress)] + list(
        san.get_values_for_type(x509.DNSName)
    )
