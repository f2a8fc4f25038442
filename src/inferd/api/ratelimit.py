"""Per-token request budgets: ``per_hour`` and ``per_minute``, as DigitalOcean documents, and
the client address that unauthenticated requests are counted by.

Counts live in this process's memory, in fixed windows that start at a key's first request.
Several API processes behind one balancer each enforce the budget separately (see
docs/operations.md); a shared store would trade a database write per request for exactness.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset: int
    """Epoch seconds when the budget that matters next is refilled."""

    def headers(self) -> list[tuple[str, str]]:
        return [
            ("ratelimit-limit", str(self.limit)),
            ("ratelimit-remaining", str(self.remaining)),
            ("ratelimit-reset", str(self.reset)),
        ]


@dataclass
class _Window:
    started: float
    count: int = 0


class RateLimiter:
    def __init__(self, per_hour: int, per_minute: int, clock: Callable[[], float] = time.time) -> None:
        self.per_hour = per_hour
        self.per_minute = per_minute
        self._clock = clock
        self._hours: dict[str, _Window] = {}
        self._minutes: dict[str, _Window] = {}
        self._lock = threading.Lock()
        self._hits = 0

    @staticmethod
    def _current(windows: dict[str, _Window], key: str, now: float, length: float) -> _Window:
        window = windows.get(key)
        if window is None or now >= window.started + length:
            window = windows[key] = _Window(started=now)
        return window

    def hit(self, key: str) -> Decision:
        """Count one request for ``key`` unless a budget is spent; rejected requests are free."""
        now = self._clock()
        with self._lock:
            self._hits += 1
            if self._hits % 10_000 == 0:
                self._forget_expired(now)
            hour = self._current(self._hours, key, now, 3600)
            minute = self._current(self._minutes, key, now, 60)
            hour_reset = int(hour.started + 3600)
            if hour.count >= self.per_hour:
                return Decision(False, self.per_hour, 0, hour_reset)
            if minute.count >= self.per_minute:
                return Decision(False, self.per_hour, self.per_hour - hour.count, int(minute.started + 60) + 1)
            hour.count += 1
            minute.count += 1
            return Decision(True, self.per_hour, self.per_hour - hour.count, hour_reset)

    def _forget_expired(self, now: float) -> None:
        for windows, length in ((self._hours, 3600), (self._minutes, 60)):
            for key in [k for k, w in windows.items() if now >= w.started + length]:
                del windows[key]


# -- who the client is ---------------------------------------------------------------------
_MAX_HOPS = 32
"""Forwarded chains longer than this are cut (their oldest, leftmost entries are never needed)."""


class ClientAddresses:
    """The address unauthenticated requests are counted by.

    The socket peer, unless the peer is a trusted proxy (``INFERD_TRUSTED_PROXIES``): then the
    forwarded chain is read from the right, and the first address that is not itself a trusted
    proxy is the client. Everything left of it was written by the client and is ignored, so
    a client cannot choose its own address by sending ``X-Forwarded-For``. ``X-Forwarded-For``
    is read when present, else ``Forwarded`` (RFC 7239 ``for=``).
    """

    def __init__(self, trusted: Iterable[IPv4Network | IPv6Network]) -> None:
        self.trusted = tuple(trusted)

    def is_trusted(self, address: str) -> bool:
        ip = _ip(address)
        return ip is not None and any(ip in network for network in self.trusted)

    def client(self, peer: str | None, headers: Iterable[tuple[bytes, bytes]]) -> str:
        if peer is None:
            return "unknown"
        if not self.trusted or not self.is_trusted(peer):
            return peer
        hops = _forwarded_chain(headers)
        for hop in reversed(hops):
            if not self.is_trusted(hop):
                return hop
        return hops[0] if hops else peer

    def scheme(self, peer: str | None, headers: Iterable[tuple[bytes, bytes]], default: str) -> str:
        """``X-Forwarded-Proto`` of a trusted proxy (it terminated TLS), else ``default``."""
        if peer is None or not self.trusted or not self.is_trusted(peer):
            return default
        for name, value in headers:
            if name == b"x-forwarded-proto":
                proto = value.decode("latin-1").split(",")[-1].strip().lower()
                if proto in ("http", "https"):
                    return proto
        return default


def _ip(value: str) -> IPv4Address | IPv6Address | None:
    try:
        ip = ip_address(value)
    except ValueError:
        return None
    return ip.ipv4_mapped or ip if isinstance(ip, IPv6Address) else ip


def _forwarded_chain(headers: Iterable[tuple[bytes, bytes]]) -> list[str]:
    """Client addresses of ``X-Forwarded-For`` (or else ``Forwarded``), oldest first, normalized."""
    xff: list[str] = []
    forwarded: list[str] = []
    for name, value in headers:
        if name == b"x-forwarded-for":
            xff.extend(value.decode("latin-1").split(","))
        elif name == b"forwarded":
            for element in value.decode("latin-1").split(","):
                for pair in element.split(";"):
                    key, _, item = pair.partition("=")
                    if key.strip().lower() == "for":
                        forwarded.append(item)
    raw = xff if xff else forwarded
    return [_normalize(hop) for hop in raw[-_MAX_HOPS:] if hop.strip()]


def _normalize(hop: str) -> str:
    """``"[2001:db8::1]:4711"`` → ``2001:db8::1``, ``1.2.3.4:80`` → ``1.2.3.4``; an obfuscated or
    ``unknown`` identifier is kept (cut to 64 characters) and counts as one client."""
    text = hop.strip().strip('"').strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    ip = _ip(text)
    return str(ip) if ip is not None else text[:64]
