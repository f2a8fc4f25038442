"""Least-outstanding-requests choice among an instance's ready replicas.

This is the base of every routing mode (see :mod:`inferd.gateway.router`): it owns the
outstanding counts and the cool-off of replicas that refused a connection, and its
:meth:`Balancer.choose` takes a ``prefix`` only so that every mode has one signature (the
proxy holds a :class:`Balancer` and need not know which mode it got); here it is ignored.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable

from inferd.gateway.route_loader import Upstream

COOL_OFF_SECONDS = 5.0
"""A replica that refused a connection is avoided this long (unless nothing else is left)."""


class Balancer:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None) -> None:
        """``clock`` and ``rng`` are injectable so that tests decide time and tie-breaks."""
        self.outstanding: defaultdict[str, int] = defaultdict(int)
        self._failed_at: dict[str, float] = {}
        self._clock = clock
        self._rng = rng or random.Random()

    def choose(self, upstreams: Iterable[Upstream], exclude: set[str], prefix: tuple[int, ...] = ()) -> Upstream | None:
        """The least-loaded replica not in ``exclude`` (``prefix`` is ignored in this mode)."""
        del prefix
        pool = self._pool(upstreams, exclude)
        return self._least(pool) if pool else None

    def _pool(self, upstreams: Iterable[Upstream], exclude: set[str]) -> list[Upstream]:
        """Candidates not excluded and not cooling off; all the non-excluded ones if every one is
        cooling off (a replica that refused once may be back, and trying beats a sure 503)."""
        candidates = [u for u in upstreams if u.replica_id not in exclude]
        now = self._clock()
        healthy = [u for u in candidates if now - self._failed_at.get(u.replica_id, -1e9) > COOL_OFF_SECONDS]
        return healthy or candidates

    def _least(self, pool: list[Upstream]) -> Upstream:
        """Fewest outstanding requests; ties at random so that idle replicas share the work."""
        fewest = min(self.outstanding[u.replica_id] for u in pool)
        return self._rng.choice([u for u in pool if self.outstanding[u.replica_id] == fewest])

    def acquire(self, upstream: Upstream) -> None:
        self.outstanding[upstream.replica_id] += 1

    def release(self, upstream: Upstream) -> None:
        self.outstanding[upstream.replica_id] -= 1

    def failed(self, upstream: Upstream) -> None:
        self._failed_at[upstream.replica_id] = self._clock()
