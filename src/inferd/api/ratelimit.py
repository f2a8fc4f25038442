"""Per-token request budgets: ``per_hour`` and ``per_minute``, as DigitalOcean documents.

Counts live in this process's memory, in fixed windows that start at a key's first request.
Several API processes behind one balancer each enforce the budget separately (see
docs/operations.md); a shared store would trade a database write per request for exactness.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


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
