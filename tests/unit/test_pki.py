"""inferd.pki: real certificates, real TLS handshakes over loopback, real files."""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from inferd.pki import (
    KeyPair,
    SealError,
    SecretBox,
    certificate_expires_at,
    certificate_names,
    create_certificate_authority,
    ensure_local_tls,
    generate_key_string,
    issue_server_certificate,
    load_or_create_key_file,
)

# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def ca() -> KeyPair:
    return create_certificate_authority("test CA A")


@pytest.fixture(scope="module")
def other_ca() -> KeyPair:
    return create_certificate_authority("test CA B")


@pytest.fixture(scope="module")
def leaf(ca: KeyPair) -> KeyPair:
    return issue_server_certificate(ca, dns_names=["localhost", "svc.example"], ip_addresses=["127.0.0.1", "::1"])


def load(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@contextmanager
def tls_server(cert: Path, key: Path) -> Iterator[int]:
    """Serve TLS on 127.0.0.1 in a thread; each successful handshake gets b"ok"."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile=cert, keyfile=key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError):
                pass  # the client rejected us: that's what some tests expect

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def handshake(port: int, cafile: Path, server_hostname: str) -> bytes:
    """Connect like a strict client would and return what the server sent."""
    context = ssl.create_default_context(cafile=str(cafile))
    context.verify_flags |= ssl.VERIFY_X509_STRICT  # the default from Python 3.13 on
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=server_hostname) as tls:
            return tls.recv(2)


@pytest.fixture()
def served_leaf(tmp_path: Path, leaf: KeyPair) -> Iterator[int]:
    with tls_server(write(tmp_path / "leaf.pem", leaf.cert_pem), write(tmp_path / "leaf.key", leaf.key_pem)) as port:
        yield port


# ---------------------------------------------------------------- authority


def test_ca_is_a_path_length_zero_ca(ca: KeyPair) -> None:
    cert = load(ca.cert_pem)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign and usage.value.digital_signature
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert cert.subject == cert.issuer
    cert.verify_directly_issued_by(cert)  # self-signed
    assert cert.not_valid_before_utc < datetime.now(UTC) - timedelta(minutes=4)
    assert ca.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # unencrypted PKCS#8


def test_cas_get_distinct_keys_and_serials(ca: KeyPair, other_ca: KeyPair) -> None:
    assert load(ca.cert_pem).serial_number != load(other_ca.cert_pem).serial_number
    assert ca.key_pem != other_ca.key_pem


def test_leaf_is_issued_by_its_ca_only(ca: KeyPair, other_ca: KeyPair, leaf: KeyPair) -> None:
    cert = load(leaf.cert_pem)
    cert.verify_directly_issued_by(load(ca.cert_pem))
    with pytest.raises((ValueError, InvalidSignature)):
        cert.verify_directly_issued_by(load(other_ca.cert_pem))


def test_leaf_extensions(ca: KeyPair, leaf: KeyPair) -> None:
    cert = load(leaf.cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "localhost"
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = load(ca.cert_pem).extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    assert certificate_names(leaf.cert_pem) == {"localhost", "svc.example", "127.0.0.1", "::1"}


def test_leaf_passes_a_strict_rfc5280_verifier(ca: KeyPair, leaf: KeyPair) -> None:
    store = verification.Store([load(ca.cert_pem)])
    for subject in (x509.DNSName("svc.example"), x509.IPAddress(ipaddress.ip_address("::1"))):
        verifier = verification.PolicyBuilder().store(store).build_server_verifier(subject)
        chain = verifier.verify(load(leaf.cert_pem), [])
        assert chain[-1] == load(ca.cert_pem)


def test_leaf_validity_and_expiry_helper(ca: KeyPair) -> None:
    short = issue_server_certificate(ca, dns_names=["a.example"], valid_days=10)
    expires = certificate_expires_at(short.cert_pem)
    assert expires.tzinfo is not None
    assert timedelta(days=9) < expires - datetime.now(UTC) < timedelta(days=10)


def test_leaf_never_outlives_its_ca() -> None:
    brief_ca = create_certificate_authority("brief", valid_days=30)
    cert = issue_server_certificate(brief_ca, dns_names=["x.example"])
    assert certificate_expires_at(cert.cert_pem) <= certificate_expires_at(brief_ca.cert_pem)


def test_ip_only_leaf_uses_the_ip_as_common_name(ca: KeyPair) -> None:
    cert = load(issue_server_certificate(ca, dns_names=[], ip_addresses=["10.0.0.7"]).cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "10.0.0.7"


def test_name_too_long_for_a_common_name_still_works(ca: KeyPair) -> None:
    name = "0123456789abcdef0123456789abcdef0123-private.inferd.example.internal"
    cert = load(issue_server_certificate(ca, dns_names=[name]).cert_pem)
    assert len(cert.subject) == 0
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical
    assert certificate_names(cert.public_bytes(serialization.Encoding.PEM)) == {name}


def test_leaf_needs_a_name(ca: KeyPair) -> None:
    with pytest.raises(ValueError):
        issue_server_certificate(ca, dns_names=[])


def test_bad_ip_and_mismatched_ca_are_rejected(ca: KeyPair, other_ca: KeyPair, leaf: KeyPair) -> None:
    with pytest.raises(ValueError):
        issue_server_certificate(ca, dns_names=["a"], ip_addresses=["not-an-ip"])
    with pytest.raises(ValueError, match="does not match"):
        issue_server_certificate(KeyPair(ca.cert_pem, other_ca.key_pem), dns_names=["a"])
    with pytest.raises(ValueError, match="not a CA"):
        issue_server_certificate(leaf, dns_names=["a"])


def test_key_pair_repr_hides_the_key(ca: KeyPair) -> None:
    assert "PRIVATE" not in repr(ca) and "redacted" in repr(ca)


# ---------------------------------------------------------------- real TLS


def test_tls_handshake_with_the_right_ca(tmp_path: Path, ca: KeyPair, served_leaf: int) -> None:
    cafile = write(tmp_path / "ca.pem", ca.cert_pem)
    assert handshake(served_leaf, cafile, "localhost") == b"ok"
    assert handshake(served_leaf, cafile, "svc.example") == b"ok"
    assert handshake(served_leaf, cafile, "127.0.0.1") == b"ok"


def test_tls_handshake_with_another_ca_fails(tmp_path: Path, other_ca: KeyPair, served_leaf: int) -> None:
    cafile = write(tmp_path / "other.pem", other_ca.cert_pem)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(served_leaf, cafile, "localhost")


@pytest.mark.parametrize("name", ["evil.example", "10.9.9.9"])
def test_tls_handshake_for_a_name_not_in_the_certificate_fails(
    tmp_path: Path, ca: KeyPair, served_leaf: int, name: str
) -> None:
    cafile = write(tmp_path / "ca.pem", ca.cert_pem)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(served_leaf, cafile, name)


# ---------------------------------------------------------------- sealing


def test_secret_box_round_trip() -> None:
    box = SecretBox.from_key_string(generate_key_string())
    token = box.seal("hf_secret_token ✓")
    assert token.isascii() and token.startswith("v1:")
    assert "hf_secret" not in token
    assert box.open_text(token) == "hf_secret_token ✓"
    assert box.open(box.seal(b"\x00\xff raw")) == b"\x00\xff raw"
    assert box.open(box.seal(b"")) == b""
    assert box.seal("same") != box.seal("same")  # fresh nonce every time


def test_tampered_token_is_rejected() -> None:
    box = SecretBox(os.urandom(32))
    token = box.seal("secret")
    body = bytearray(token.encode())
    for position in range(3, len(body)):  # every character, padding included
        tampered = body.copy()
        tampered[position] = ord("A") if tampered[position] != ord("A") else ord("B")
        with pytest.raises(SealError):
            box.open(tampered.decode())
    for broken in ("", "v1:", "v1:!!!", "v2:" + token[3:], token[3:], token[:20]):
        with pytest.raises(SealError):
            box.open(broken)


def test_token_from_another_key_is_rejected() -> None:
    token = SecretBox.from_key_string(generate_key_string()).seal("secret")
    with pytest.raises(SealError):
        SecretBox.from_key_string(generate_key_string()).open(token)


def test_seal_error_is_a_value_error() -> None:
    assert issubclass(SealError, ValueError)


@pytest.mark.parametrize("bad", ["", "short", "x" * 44, generate_key_string()[:-4]])
def test_invalid_key_strings_are_rejected(bad: str) -> None:
    with pytest.raises(SealError):
        SecretBox.from_key_string(bad)


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "secret.key"
    key = load_or_create_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key_file(path) == key
    assert list(path.parent.iterdir()) == [path]  # no temp files left behind
    token = SecretBox.from_key_string(key).seal("x")
    assert SecretBox.from_key_string(load_or_create_key_file(path)).open_text(token) == "x"


def test_key_file_whitespace_is_ignored(tmp_path: Path) -> None:
    key = generate_key_string()
    path = write(tmp_path / "secret.key", f"  {key}\n\n".encode())
    assert load_or_create_key_file(path) == key


@pytest.mark.parametrize("content", [b"", b"not a key\n", b"\xff\xfe", generate_key_string().encode()[:20]])
def test_invalid_key_file_is_an_error(tmp_path: Path, content: bytes) -> None:
    path = write(tmp_path / "secret.key", content)
    with pytest.raises(SealError, match="secret.key"):
        load_or_create_key_file(path)
    assert path.read_bytes() == content  # never overwritten


def test_key_file_is_private_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "secret.key"
        load_or_create_key_file(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# ---------------------------------------------------------------- local TLS


def snapshot(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def test_local_tls_creates_the_files(tmp_path: Path) -> None:
    files = ensure_local_tls(tmp_path / "tls", hostnames=["api.example", "10.1.2.3", "0.0.0.0"])
    assert sorted(snapshot(tmp_path / "tls")) == ["api-ca.key", "api-ca.pem", "api.key", "api.pem"]
    for key in (files.key, tmp_path / "tls" / "api-ca.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert load(files.ca_cert.read_bytes()).subject.rfc4514_string() == "CN=inferd local API CA"
    names = certificate_names(files.cert.read_bytes())
    assert names == {"localhost", "127.0.0.1", "::1", "api.example", "10.1.2.3"}
    load(files.cert.read_bytes()).verify_directly_issued_by(load(files.ca_cert.read_bytes()))


def test_local_tls_serves_a_real_handshake(tmp_path: Path) -> None:
    files = ensure_local_tls(tmp_path, hostnames=[])
    with tls_server(files.cert, files.key) as port:
        assert handshake(port, files.ca_cert, "localhost") == b"ok"
        assert handshake(port, files.ca_cert, "127.0.0.1") == b"ok"


def test_local_tls_reuses_files(tmp_path: Path) -> None:
    ensure_local_tls(tmp_path, hostnames=["api.example"])
    before = snapshot(tmp_path)
    ensure_local_tls(tmp_path, hostnames=["API.example."])  # same name, other spelling
    ensure_local_tls(tmp_path, hostnames=[])  # a subset is still covered
    assert snapshot(tmp_path) == before


def test_local_tls_new_hostname_reissues_only_the_leaf(tmp_path: Path) -> None:
    ensure_local_tls(tmp_path, hostnames=[])
    before = snapshot(tmp_path)
    files = ensure_local_tls(tmp_path, hostnames=["box.lan", "192.168.1.5"])
    after = snapshot(tmp_path)
    assert after["api-ca.pem"] == before["api-ca.pem"] and after["api-ca.key"] == before["api-ca.key"]
    assert after["api.pem"] != before["api.pem"] and after["api.key"] != before["api.key"]
    assert {"box.lan", "192.168.1.5", "localhost"} <= certificate_names(files.cert.read_bytes())
    load(after["api.pem"]).verify_directly_issued_by(load(before["api-ca.pem"]))


def test_local_tls_renews_a_leaf_that_expires_soon(tmp_path: Path) -> None:
    files = ensure_local_tls(tmp_path, hostnames=[])
    ca = KeyPair((tmp_path / "api-ca.pem").read_bytes(), (tmp_path / "api-ca.key").read_bytes())
    soon = issue_server_certificate(ca, dns_names=["localhost"], ip_addresses=["127.0.0.1", "::1"], valid_days=20)
    write(files.cert, soon.cert_pem)
    write(files.key, soon.key_pem)
    ensure_local_tls(tmp_path, hostnames=[])
    assert certificate_expires_at(files.cert.read_bytes()) > datetime.now(UTC) + timedelta(days=300)
    assert (tmp_path / "api-ca.pem").read_bytes() == ca.cert_pem


def test_local_tls_repairs_a_broken_leaf_and_keeps_the_ca(tmp_path: Path, other_ca: KeyPair) -> None:
    files = ensure_local_tls(tmp_path, hostnames=[])
    ca_pem = files.ca_cert.read_bytes()
    foreign = issue_server_certificate(other_ca, dns_names=["localhost"], ip_addresses=["127.0.0.1", "::1"])
    cases = {
        "missing key": lambda: files.key.unlink(),
        "garbage cert": lambda: write(files.cert, b"garbage"),
        "key of another cert": lambda: write(files.key, foreign.key_pem),
        "signed by another CA": lambda: (write(files.cert, foreign.cert_pem), write(files.key, foreign.key_pem)),
    }
    for label, damage in cases.items():
        damage()
        ensure_local_tls(tmp_path, hostnames=[])
        cert = load(files.cert.read_bytes())
        cert.verify_directly_issued_by(load(ca_pem))
        assert files.ca_cert.read_bytes() == ca_pem, label


def test_local_tls_refuses_to_replace_a_broken_ca(tmp_path: Path, other_ca: KeyPair) -> None:
    ensure_local_tls(tmp_path, hostnames=[])
    write(tmp_path / "api-ca.key", other_ca.key_pem)
    with pytest.raises(ValueError, match="api-ca"):
        ensure_local_tls(tmp_path, hostnames=[])


def test_local_tls_finishes_an_interrupted_ca_creation(tmp_path: Path) -> None:
    ensure_local_tls(tmp_path, hostnames=[])
    old_ca = (tmp_path / "api-ca.pem").read_bytes()
    (tmp_path / "api-ca.pem").unlink()  # as if we crashed between writing the key and the cert
    files = ensure_local_tls(tmp_path, hostnames=[])
    new_ca = files.ca_cert.read_bytes()
    assert new_ca != old_ca
    load(files.cert.read_bytes()).verify_directly_issued_by(load(new_ca))


def test_sealed_json_round_trip() -> None:
    from inferd.pki import SecretBox, generate_key_string

    box = SecretBox.from_key_string(generate_key_string())
    sealed = box.seal_json({"hugging_face_token": "hf_x"})
    assert "hf_x" not in sealed
    assert box.open_json(sealed) == {"hugging_face_token": "hf_x"}
    assert box.open_json(None) == {}
