"""Bearer token values, their hashes and formats.

Tokens are 256-bit random values, so a plain SHA-256 is enough to store them: it cannot be
brute-forced, and looking a token up by its hash keeps the comparison timing-independent of
the secret itself.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string

API_TOKEN_PREFIX = "dop_v1_"
"""Prefix of personal access tokens, as DigitalOcean issues them."""
ACCEPTED_API_TOKEN_PREFIXES = ("dop_v1_", "doo_v1_")
"""Personal and OAuth access token prefixes are both accepted by the API."""
INSTANCE_TOKEN_PREFIX = "di_"

_API_TOKEN = re.compile(r"^do[po]_v1_[0-9a-f]{64}$")
_INSTANCE_TOKEN = re.compile(r"^di_[0-9a-f]{48}$")


def new_api_token() -> str:
    return API_TOKEN_PREFIX + secrets.token_hex(32)


def new_instance_token() -> str:
    return INSTANCE_TOKEN_PREFIX + secrets.token_hex(24)


def is_api_token(value: str) -> bool:
    return bool(_API_TOKEN.match(value))


def is_instance_token(value: str) -> bool:
    return bool(_INSTANCE_TOKEN.match(value))


def bearer_value(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer …`` header (both planes parse it the same way)."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def hash_token(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def hashes_match(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def accelerator_name(prefix: str) -> str:
    """A readable unique-enough name such as ``mi300x1-ghfpsf``, as the reference shows."""
    suffix = "".join(secrets.choice(string.ascii_lowercase) for _ in range(6))
    return f"{prefix}-{suffix}"
