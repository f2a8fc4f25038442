"""TLS of the private listener: each instance's leaf certificate, chosen by SNI.

The leaf is issued by the instance's own CA (the one ``GET …/ca`` returns) for the host name of
its private endpoint, so a client that trusts that CA, and only that CA, can connect.
"""

from __future__ import annotations

import logging
import re
import ssl
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlsplit

from inferd.gateway.route_loader import Snapshot
from inferd.pki import KeyPair, SecretBox, issue_server_certificate

log = logging.getLogger("inferd.gateway")
INSTANCE_HOST = re.compile(r"^(?P<id>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})-(?P<kind>public|private)\.")


def private_host(template: str, instance_id: str) -> str:
    return urlsplit(template.format(id=instance_id)).hostname or ""


class InstanceCertificates:
    def __init__(self, secrets: SecretBox, private_template: str, default_cert: Path, default_key: Path) -> None:
        self._secrets = secrets
        self._template = private_template
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._lock = threading.Lock()
        self._directory = Path(tempfile.mkdtemp(prefix="inferd-gateway-tls-"))  # mode 0700
        self.default = self._context(default_cert, default_key)
        self.default.sni_callback = self._pick

    @staticmethod
    def _context(cert: Path, key: Path) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key)
        return context

    def prepare(self, snapshot: Snapshot) -> None:
        """Issue leaves for instances seen for the first time (off the handshake path)."""
        for instance in snapshot.instances.values():
            if instance.id in self._contexts or not instance.ca_key_sealed:
                continue
            try:
                ca = KeyPair(instance.ca_cert_pem.encode(), self._secrets.open(instance.ca_key_sealed))
                leaf = issue_server_certificate(ca, dns_names=[private_host(self._template, instance.id)])
                cert, key = self._directory / f"{instance.id}.pem", self._directory / f"{instance.id}.key"
                cert.write_bytes(leaf.cert_pem + ca.cert_pem)
                key.touch(mode=0o600)
                key.write_bytes(leaf.key_pem)
                context = self._context(cert, key)
                key.unlink()  # loaded: keep no private key on disk
            except Exception:
                log.exception("cannot prepare the TLS certificate of instance %s", instance.id)
                continue
            with self._lock:
                self._contexts[instance.id] = context

    def _pick(self, connection: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        match = INSTANCE_HOST.match(server_name or "")
        context = self._contexts.get(match.group("id")) if match else None
        if context is not None:
            connection.context = context
