"""HTTPS for the control-plane API on a single machine.

The official client (pydo) refuses to send bearer tokens over plain http, so
``inferd serve`` terminates TLS itself with a certificate from a local CA that
the user trusts once. The CA is created once and never replaced behind the
user's back; only the server certificate is re-issued when needed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from inferd.pki.authority import (
    KeyPair,
    certificate_names,
    create_certificate_authority,
    issue_server_certificate,
)
from inferd.pki.sealing import atomic_write

LOCAL_CA_COMMON_NAME = "inferd local API CA"
DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")
RENEW_BEFORE = timedelta(days=30)

_CA_CERT = "api-ca.pem"
_CA_KEY = "api-ca.key"
_CERT = "api.pem"
_KEY = "api.key"


@dataclass(frozen=True)
class TLSFiles:
    """Paths of the PEM files a TLS server (and its clients) need."""

    ca_cert: Path
    cert: Path
    key: Path


def ensure_local_tls(directory: Path, *, hostnames: Sequence[str] = ()) -> TLSFiles:
    """Make sure ``directory`` holds a local CA and a fresh server certificate covering
    ``localhost``, ``127.0.0.1``, ``::1`` and ``hostnames``; reuse whatever is still good."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    files = TLSFiles(ca_cert=directory / _CA_CERT, cert=directory / _CERT, key=directory / _KEY)
    ca = _load_or_create_ca(files.ca_cert, directory / _CA_KEY)
    dns_names, ip_addresses = split_names([*DEFAULT_NAMES, *hostnames])
    wanted = {*dns_names, *ip_addresses}
    if not _leaf_is_usable(files, ca, wanted):
        leaf = issue_server_certificate(ca, dns_names=dns_names, ip_addresses=ip_addresses)
        atomic_write(files.key, leaf.key_pem, mode=0o600)
        atomic_write(files.cert, leaf.cert_pem, mode=0o644)
    return files


def split_names(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """Normalise and de-duplicate names into (DNS names, IP addresses).

    Unspecified addresses (``0.0.0.0``, ``::``) are bind-all addresses that no
    client connects to, so they are dropped rather than put in the certificate.
    """
    dns_names: list[str] = []
    ip_addresses: list[str] = []
    for raw in names:
        name = raw.strip().removeprefix("[").removesuffix("]")
        if not name:
            continue
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            _append_new(dns_names, name.lower().rstrip("."))
            continue
        if not ip.is_unspecified:
            _append_new(ip_addresses, str(ip))
    return dns_names, ip_addresses


def _load_or_create_ca(cert_path: Path, key_path: Path) -> KeyPair:
    """Load the CA, or create it when it was never (completely) written.

    The key is written before the certificate, so a lone key means creation
    was interrupted, and a lone certificate can't sign anything: both are
    replaced. A CA pair that exists but is unusable is an error rather than
    silently replaced, because the user may already trust it.
    """
    if cert_path.exists() and key_path.exists():
        ca = KeyPair(cert_pem=cert_path.read_bytes(), key_pem=key_path.read_bytes())
        if not _pair_matches(ca):
            raise ValueError(
                f"{cert_path} and {key_path} are not a matching certificate and key; "
                "remove both to create a new local CA (clients must then trust the new one)"
            )
        return ca
    ca = create_certificate_authority(LOCAL_CA_COMMON_NAME)
    atomic_write(key_path, ca.key_pem, mode=0o600)
    atomic_write(cert_path, ca.cert_pem, mode=0o644)
    return ca


def _leaf_is_usable(files: TLSFiles, ca: KeyPair, wanted: set[str]) -> bool:
    """True when the existing server certificate can be served as-is."""
    if not (files.cert.exists() and files.key.exists()):
        return False
    leaf = KeyPair(cert_pem=files.cert.read_bytes(), key_pem=files.key.read_bytes())
    if not _pair_matches(leaf):
        return False
    cert = x509.load_pem_x509_certificate(leaf.cert_pem)
    try:
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.cert_pem))
    except (ValueError, TypeError, InvalidSignature):
        return False
    if cert.not_valid_after_utc - datetime.now(UTC) < RENEW_BEFORE:
        return False
    present_dns, present_ips = split_names(certificate_names(leaf.cert_pem))
    return wanted <= {*present_dns, *present_ips}


def _pair_matches(pair: KeyPair) -> bool:
    """True when both PEMs parse and the private key belongs to the certificate."""
    try:
        cert = x509.load_pem_x509_certificate(pair.cert_pem)
        key = serialization.load_pem_private_key(pair.key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return _spki(key.public_key()) == _spki(cert.public_key())


def _spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _append_new(items: list[str], item: str) -> None:
    if item not in items:
        items.append(item)
