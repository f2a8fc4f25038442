"""Secrets encrypted at rest: Hugging Face tokens, per-instance CA private keys.

Tokens look like ``v1:<urlsafe base64 of nonce || AES-256-GCM ciphertext>``.
The version prefix leaves room to rotate keys or algorithms later without
guessing what an old token is.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16
_VERSION = "v1"
_ASSOCIATED_DATA = b"inferd-secretbox:" + _VERSION.encode()
"""Binds ciphertexts to this format so they can't be replayed as another version's."""


class SealError(ValueError):
    """A token or key is malformed, tampered with, or belongs to another key."""


class SecretBox:
    """Authenticated encryption with one 32-byte key; never returns unauthenticated bytes."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise SealError(f"a secret key must be {KEY_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(key)

    @classmethod
    def from_key_string(cls, key_string: str) -> SecretBox:
        """Build from the urlsafe-base64 form that :func:`generate_key_string` returns."""
        return cls(_decode_key(key_string))

    @staticmethod
    def generate_key_string() -> str:
        """Same as the module-level :func:`generate_key_string`."""
        return generate_key_string()

    def seal(self, plaintext: str | bytes) -> str:
        """Encrypt ``plaintext`` (str is UTF-8 encoded) into an ASCII token."""
        data = plaintext.encode("utf-8") if isinstance(plaintext, str) else bytes(plaintext)
        nonce = os.urandom(_NONCE_BYTES)  # random 96-bit nonces: safe far beyond our volumes
        sealed = self._aead.encrypt(nonce, data, _ASSOCIATED_DATA)
        return f"{_VERSION}:{base64.urlsafe_b64encode(nonce + sealed).decode('ascii')}"

    def open(self, token: str) -> bytes:
        """Decrypt a token from :meth:`seal`; raise :class:`SealError` on any mismatch."""
        blob = _decode_token(token)
        try:
            return self._aead.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], _ASSOCIATED_DATA)
        except InvalidTag:
            raise SealError("token was tampered with or sealed with another key") from None

    def open_text(self, token: str) -> str:
        """Like :meth:`open`, decoded as UTF-8."""
        try:
            return self.open(token).decode("utf-8")
        except UnicodeDecodeError:
            raise SealError("sealed secret is not UTF-8 text") from None


    def seal_json(self, value: dict[str, str]) -> str:
        """A small JSON object (e.g. an instance's provider tokens), sealed as one value."""
        return self.seal(json.dumps(value))

    def open_json(self, token: str | None) -> dict[str, str]:
        """The object ``seal_json`` sealed; nothing sealed yet is an empty object."""
        return dict(json.loads(self.open_text(token))) if token else {}
    def __repr__(self) -> str:
        return "SecretBox(<key redacted>)"


def generate_key_string() -> str:
    """A fresh random key in urlsafe base64 (the same shape as a Fernet key)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def load_or_create_key_file(path: Path) -> str:
    """Return the key string stored at ``path``, creating the file (mode 0600) if missing.

    If two processes race to create it, both end up with the winner's key, so
    nothing is ever sealed with a key that was thrown away.
    """
    try:
        return _read_key_file(path)
    except FileNotFoundError:
        pass
    key = generate_key_string()
    if atomic_write(path, f"{key}\n".encode("ascii"), mode=0o600, replace=False):
        return key
    return _read_key_file(path)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600, replace: bool = True) -> bool:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one.

    The temporary file is created with ``mode`` from the start (never briefly
    world-readable) in the same directory, then renamed into place. With
    ``replace=False`` an existing file is left alone and False is returned.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        _write_new_file(tmp, data, mode)
        if not _move_into_place(tmp, path, replace=replace):
            return False
        _fsync_directory(path.parent)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _write_new_file(path: Path, data: bytes, mode: int) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, mode)
    with open(fd, "wb") as handle:
        if hasattr(os, "fchmod"):
            os.fchmod(handle.fileno(), mode)  # the umask may have removed bits we want
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _move_into_place(tmp: Path, path: Path, *, replace: bool) -> bool:
    if replace:
        os.replace(tmp, path)
        return True
    try:
        os.link(tmp, path)  # atomic "create if absent", unlike os.replace
    except FileExistsError:
        return False
    except OSError:  # filesystem without hard links: best effort
        if path.exists():
            return False
        os.replace(tmp, path)
    return True


def _fsync_directory(directory: Path) -> None:
    """Persist the rename itself, so a crash can't lose a freshly created key."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_key_file(path: Path) -> str:
    raw = path.read_bytes()
    try:
        key_string = raw.decode("ascii").strip()
        _decode_key(key_string)
    except (UnicodeDecodeError, SealError):
        raise SealError(
            f"{path} does not hold a valid inferd secret key "
            f"({KEY_BYTES} random bytes, urlsafe base64); fix or remove it"
        ) from None
    return key_string


def _decode_key(key_string: str) -> bytes:
    try:
        key = base64.b64decode(key_string.strip(), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise SealError("secret key is not valid urlsafe base64") from None
    if len(key) != KEY_BYTES:
        raise SealError(f"secret key must decode to {KEY_BYTES} bytes, got {len(key)}")
    return key


def _decode_token(token: str) -> bytes:
    if not isinstance(token, str):
        raise SealError("sealed token must be a str")
    version, sep, body = token.partition(":")
    if not sep:
        raise SealError("sealed token has no version prefix")
    if version != _VERSION:
        raise SealError(f"unsupported sealed token version {version!r}")
    try:
        blob = base64.b64decode(body, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise SealError("sealed token is not valid base64") from None
    if base64.urlsafe_b64encode(blob).decode("ascii") != body:
        # Lenient base64 ignores unused trailing bits; insist on one spelling per token.
        raise SealError("sealed token is not in canonical form")
    if len(blob) < _NONCE_BYTES + _TAG_BYTES:
        raise SealError("sealed token is truncated")
    return blob
