"""Pure: what a replica's row and its runtime's report mean for the replica.

The reconciler gathers the I/O (``Runtime.observe``, in-flight counts for draining replicas)
first; ``judge`` turns it into a ``Verdict`` that ``decide`` applies inside a transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from inferd.controller.plan import ReplicaStatus
from inferd.runtime.base import Phase, ReplicaState

KILL_GRACE_SECONDS = 10.0
"""Between SIGTERM and SIGKILL of a replica being stopped."""


@dataclass(frozen=True)
class Timeouts:
    startup: float
    """Seconds an engine may take from launch to answering its health check."""
    placing: float
    """Seconds a replica may wait for a node with room before it counts as failed."""
    drain: float
    stop: float
    startup_by_engine: Mapping[str, float] = field(default_factory=dict)
    """Engines that take longer (vLLM: minutes on a GPU) than ``startup``."""

    def startup_for(self, engine: str | None) -> float:
        return self.startup_by_engine.get(engine or "", self.startup)


@dataclass(frozen=True)
class Seen:
    """What the row says about a replica."""

    id: str
    status: ReplicaStatus
    handle: str | None
    phase: str | None
    phase_since: datetime | None
    stop_requested_at: datetime | None
    engine: str | None = None


@dataclass(frozen=True)
class Verdict:
    status: ReplicaStatus
    state: ReplicaState | None = None
    """The runtime's report, recorded on the row (endpoint, node, phase, detail)."""
    error: str | None = None
    gone: bool = False
    """Removed from the store (a stopped replica whose engine has ended)."""
    terminate: bool = False
    kill: bool = False
    forget: bool = False
    """The handle no longer runs anything: clear it (and free what the runtime still holds)."""


def judge(seen: Seen, state: ReplicaState | None, in_flight: int | None, now: datetime, timeouts: Timeouts) -> Verdict:
    if seen.status is ReplicaStatus.STOPPING:
        return _stopping(seen, state, in_flight, now, timeouts)
    if seen.status in (ReplicaStatus.FAILED, ReplicaStatus.STOPPED) or seen.handle is None or state is None:
        return Verdict(seen.status)
    if state.phase is Phase.READY:
        return Verdict(ReplicaStatus.READY, state)
    if state.phase in (Phase.EXITED, Phase.LOST):
        reason = state.detail or ("the model server exited" if state.phase is Phase.EXITED else "lost by the runtime")
        if state.phase is Phase.LOST:
            reason = f"lost: {reason}"
        return Verdict(ReplicaStatus.FAILED, state, error=reason, kill=True, forget=True)
    since = seen.phase_since if seen.phase == state.phase.value and seen.phase_since else now
    waited = (now - since).total_seconds()
    startup = timeouts.startup_for(seen.engine)
    if state.phase is Phase.STARTING and waited > startup:
        return Verdict(ReplicaStatus.FAILED, state, error=f"not ready within {int(startup)} s",
                       kill=True, forget=True)
    if state.phase is Phase.PLACING and waited > timeouts.placing:
        return Verdict(ReplicaStatus.FAILED, state, error=f"no node with room within {int(timeouts.placing)} s",
                       kill=True, forget=True)
    return Verdict(ReplicaStatus.STARTING if seen.status is not ReplicaStatus.READY else ReplicaStatus.READY, state)


def _stopping(seen: Seen, state: ReplicaState | None, in_flight: int | None, now: datetime, t: Timeouts) -> Verdict:
    """Out of the route table for ``drain`` seconds; SIGTERM once idle (at most ``stop`` later);
    SIGKILL ``KILL_GRACE_SECONDS`` after that; gone once the engine has ended."""
    if seen.handle is None or state is None or state.phase in (Phase.EXITED, Phase.LOST):
        return Verdict(ReplicaStatus.STOPPING, state, gone=True, kill=seen.handle is not None)
    waited = (now - (seen.stop_requested_at or now)).total_seconds()
    idle = waited >= t.drain and not in_flight
    return Verdict(
        ReplicaStatus.STOPPING,
        state,
        terminate=idle or waited >= t.drain + t.stop,
        kill=waited >= t.drain + t.stop + KILL_GRACE_SECONDS,
    )


def needs_in_flight(seen: Seen, now: datetime, timeouts: Timeouts) -> bool:
    """Only a draining replica past its drain period is asked how busy it is."""
    if seen.status is not ReplicaStatus.STOPPING or seen.handle is None:
        return False
    return (now - (seen.stop_requested_at or now)).total_seconds() >= timeouts.drain
