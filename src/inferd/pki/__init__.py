"""Certificates and secrets at rest: per-instance CAs, sealed secrets, local API TLS.

Depends only on the standard library and ``cryptography``.
"""

from inferd.pki.authority import (
    KeyPair,
    certificate_expires_at,
    certificate_names,
    create_certificate_authority,
    issue_server_certificate,
)
from inferd.pki.local_tls import TLSFiles, ensure_local_tls
from inferd.pki.sealing import (
    SealError,
    SecretBox,
    generate_key_string,
    load_or_create_key_file,
)

__all__ = [
    "KeyPair",
    "SealError",
    "SecretBox",
    "TLSFiles",
    "certificate_expires_at",
    "certificate_names",
    "create_certificate_authority",
    "ensure_local_tls",
    "generate_key_string",
    "issue_server_certificate",
    "load_or_create_key_file",
]
