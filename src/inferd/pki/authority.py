"""Per-instance certificate authorities and the server certificates they sign.

Each Dedicated Inference instance gets its own CA so that a client can pin
trust to exactly one instance's private endpoint: the API hands out the CA
certificate, and the endpoint serves a leaf certificate signed by it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CLOCK_SKEW = timedelta(minutes=5)
"""Back-date ``not_valid_before`` so peers with a slightly slow clock accept new certificates."""

_MAX_COMMON_NAME = 64  # RFC 5280 ub-common-name


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its unencrypted PKCS#8 PEM private key.

    The key is plain on purpose: callers decide how to protect it at rest
    (see :mod:`inferd.pki.sealing`).
    """

    cert_pem: bytes
    key_pem: bytes

    def __repr__(self) -> str:  # keep private keys out of logs and tracebacks
        return f"KeyPair(cert_pem=<{len(self.cert_pem)} bytes>, key_pem=<redacted>)"


def create_certificate_authority(common_name: str, *, valid_days: int = 3650) -> KeyPair:
    """Create a self-signed CA that may sign leaf certificates only (path length 0)."""
    _require_positive(valid_days)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    not_before = _now() - CLOCK_SKEW
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert_pem=_cert_to_pem(cert), key_pem=_key_to_pem(key))


def issue_server_certificate(
    ca: KeyPair,
    *,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str] = (),
    valid_days: int = 397,
) -> KeyPair:
    """Issue a TLS server certificate for the given names, signed by ``ca``.

    397 days is the longest lifetime browsers accept for server certificates.
    The leaf never outlives its CA, since it could not be verified afterwards.
    """
    _require_positive(valid_days)
    if isinstance(dns_names, str) or isinstance(ip_addresses, str):
        raise TypeError("dns_names and ip_addresses must be lists of names, not a single str")
    if not dns_names and not ip_addresses:
        raise ValueError("a server certificate needs at least one DNS name or IP address")
    ca_cert, ca_key = _load_authority(ca)
    ips = [ipaddress.ip_address(address) for address in ip_addresses]
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _leaf_subject(str(dns_names[0]) if dns_names else str(ips[0]))
    not_before = _now() - CLOCK_SKEW
    not_after = min(not_before + timedelta(days=valid_days), ca_cert.not_valid_after_utc)
    san = x509.SubjectAlternativeName(
        [x509.DNSName(name) for name in dns_names] + [x509.IPAddress(ip) for ip in ips]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        # RFC 5280 4.2.1.6: the SAN must be critical when the subject is empty.
        .add_extension(san, critical=len(subject) == 0)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_identifier(ca_cert), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return KeyPair(cert_pem=_cert_to_pem(cert), key_pem=_key_to_pem(key))


def certificate_expires_at(cert_pem: bytes) -> datetime:
    """The certificate's ``not_valid_after`` as an aware UTC datetime."""
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc


def certificate_names(cert_pem: bytes) -> set[str]:
    """DNS names and IP addresses (as ``str(ip_address)``) in the certificate's SAN."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    names = set(san.get_values_for_type(x509.DNSName))
    return names | {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}


def _load_authority(ca: KeyPair) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Parse the CA and refuse pairs that could only produce unverifiable leaves."""
    cert = x509.load_pem_x509_certificate(ca.cert_pem)
    key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key must be an EC private key")
    if _public_der(key.public_key()) != _public_der(cert.public_key()):
        raise ValueError("the CA private key does not match the CA certificate")
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise ValueError("the issuing certificate is not a CA")
    return cert, key


def _leaf_subject(first_name: str) -> x509.Name:
    """CN = first name, or an empty subject when the name is too long for a CN."""
    if len(first_name) > _MAX_COMMON_NAME:
        return x509.Name([])
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, first_name)])


def _authority_key_identifier(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """Reuse the CA's own SKI so chain builders can match issuer and leaf exactly."""
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _public_der(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _cert_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_to_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _require_positive(valid_days: int) -> None:
    if valid_days <= 0:
        raise ValueError("valid_days must be positive")


def _now() -> datetime:
    return datetime.now(UTC)
