"""Least-outstanding-requests choice among an instance's ready replicas."""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Iterable

from inferd.gateway.routes import Upstream

COOL_OFF_SECONDS = 5.0
"""A replica that refused a connection is avoided this long (unless nothing else is left)."""


class Balancer:
    def __init__(self) -> None:
        self.outstanding: defaultdict[str, int] = defaultdict(int)
        self._failed_at: dict[str, float] = {}

    def choose(self, upstreams: Iterable[Upstream], exclude: set[str]) -> Upstream | None:
        candidates = [u for u in upstreams if u.replica_id not in exclude]
        if not candidates:
            return None
        now = time.monotonic()
        healthy = [u for u in candidates if now - self._failed_at.get(u.replica_id, -1e9) > COOL_OFF_SECONDS]
        pool = healthy or candidates
        fewest = min(self.outstanding[u.replica_id] for u in pool)
        return random.choice([u for u in pool if self.outstanding[u.replica_id] == fewest])

    def acquire(self, upstream: Upstream) -> None:
        self.outstanding[upstream.replica_id] += 1

    def release(self, upstream: Upstream) -> None:
        self.outstanding[upstream.replica_id] -= 1

    def failed(self, upstream: Upstream) -> None:
        self._failed_at[upstream.replica_id] = time.monotonic()
