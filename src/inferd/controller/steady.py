"""Pure: which instances a reconcile pass may skip, because nothing about them can have changed.

A pass used to read every instance's rows and run its decision, every 0.5 s: with 1,000 steady
instances, thousands of queries a second that confirm that nothing changed. ``Memory`` keeps, per
instance, what its last reconcile read (an ``InstanceView`` of its rows) and what the runtime
reported (``ReplicaState`` per replica), and a pass reconciles only the instances that

- the change feed (``store.changes``) reports: database triggers record the API's creates,
  updates and deletes, and the controller's own writes of statuses, endpoints and replicas;
- the runtime now reports differently (a killed process shows in the next pass);
- are not *settled* (``settled``): anything but ``active`` with nothing pending and every replica
  ``ready`` and recorded as the runtime reports it. Only a settled instance has no timer running
  in ``observe``/``decide`` (startup and placing timeouts, drain, backoff) and no dependence on
  other instances (capacity is only consulted to create or start a replica), so its decision is
  a no-op that stays one until its rows or its replicas' states change;
- on a full pass (the feed's first poll, its backstop every ``FULL_PASS_SECONDS``, a lost track),
  read differently from the memo: the backstop that no missed change lasts for ever.

A memo becomes settled only when two reconciles in a row read the same rows and states: then the
first one wrote nothing the second could act on (statuses, phases, endpoints, handles are all in the
view), so skipping the third is exactly what running it would do. Everything else is reconciled
every pass, as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from inferd.controller.observe import Seen
from inferd.controller.plan import ReplicaStatus
from inferd.domain.status import InstanceStatus
from inferd.runtime.base import Phase, ReplicaState

States = tuple[ReplicaState | None, ...]
"""The runtime's report of each replica of a view, in the view's order (None: not asked or not known)."""


@dataclass(frozen=True)
class ReplicaView(Seen):
    """What a replica's row says: what ``judge`` reads (a :class:`Seen`), and what ``decide``
    records from the runtime, which a settled replica must match."""

    endpoint: str | None = None
    node: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class InstanceView:
    """An instance's rows as one reconcile reads them: its status and deployments, its replicas."""

    id: str
    status: str
    status_reason: str | None
    live_deployment_id: str | None
    pending_deployment_id: str | None
    replicas: tuple[ReplicaView, ...] = ()

    def states(self, observed: Mapping[str, ReplicaState]) -> States:
        return tuple(observed.get(r.id) for r in self.replicas)


@dataclass(frozen=True)
class Memo:
    view: InstanceView
    states: States
    settled: bool
    """Skipped while the feed and the runtime report nothing new about it."""


def settled(view: InstanceView, states: States) -> bool:
    """The instance serves as its live spec asks and nothing about it runs on a timer."""
    if view.status != InstanceStatus.ACTIVE.value or view.status_reason is not None:
        return False
    if view.pending_deployment_id is not None or view.live_deployment_id is None or not view.replicas:
        return False
    for replica, state in zip(view.replicas, states, strict=True):
        if replica.status is not ReplicaStatus.READY or replica.handle is None or replica.stop_requested_at is not None:
            return False
        if state is None or state.phase is not Phase.READY or replica.phase != Phase.READY.value:
            return False
        if (state.endpoint or replica.endpoint) != replica.endpoint or (state.node or replica.node) != replica.node:
            return False  # decide would record the runtime's report: not a no-op yet
        if state.detail != replica.detail:
            return False
    return True


def remember(previous: Memo | None, view: InstanceView, states: States) -> Memo:
    """The memo after a reconcile that read ``view`` and ``states``: settled only on a repeat."""
    repeated = previous is not None and previous.view == view and previous.states == states
    return Memo(view, states, repeated and settled(view, states))


class Memory:
    """What the controller knows between passes; no I/O. Every known instance is either settled
    (a memo with ``settled``) or ``due``: reconciled in the next pass whatever happens. An instance
    leaves ``due`` only through a reconcile that finds it settled."""

    def __init__(self) -> None:
        self.memos: dict[str, Memo] = {}
        self.due: set[str] = set()
        self.handles: dict[str, str] = {}
        """``replica_id → handle`` of every known instance's replicas: what the runtime is asked about."""
        self._owner: dict[str, str] = {}
        self._indexed: dict[str, InstanceView] = {}
        self._states: dict[str, ReplicaState | None] = {}
        """Each replica's state at its instance's last reconcile."""
        self._observed: Mapping[str, ReplicaState] = {}

    def clear(self) -> None:
        """Forget everything: the next pass reads and reconciles every instance."""
        for table in (self.memos, self.handles, self._owner, self._indexed, self._states):
            table.clear()
        self.due.clear()
        self._observed = {}

    def known(self) -> set[str]:
        return set(self.memos) | self.due

    def count(self) -> int:
        """``len(known())`` without building it (``due`` is small when most instances are steady)."""
        return len(self.memos) + sum(1 for i in self.due if i not in self.memos)

    def note_changed(self, instance_ids: Iterable[str]) -> None:
        """The change feed reports them: reconcile them next (also ones never seen: created)."""
        self.due.update(instance_ids)

    def stale(self, views: Mapping[str, InstanceView]) -> set[str]:
        """A full read: known instances gone from it are forgotten; those read differently from
        their memo (a change the feed missed) or not settled become due. Returns the due ones."""
        for instance_id in self.known() - views.keys():
            self.forget(instance_id)
        for instance_id, view in views.items():
            memo = self.memos.get(instance_id)
            if memo is None or not memo.settled or (memo.view is not view and memo.view != view):
                self.due.add(instance_id)
        return set(self.due)

    def index(self, view: InstanceView) -> None:
        """``view`` was just read: its replicas' handles are what the runtime is asked about."""
        if self._indexed.get(view.id) is view:
            return
        self._unindex(view.id, keep={r.id for r in view.replicas})
        self._indexed[view.id] = view
        for replica in view.replicas:
            self._owner[replica.id] = view.id
            if replica.handle:
                self.handles[replica.id] = replica.handle

    def forget(self, instance_id: str) -> None:
        """The instance no longer exists."""
        self._unindex(instance_id)
        self.memos.pop(instance_id, None)
        self.due.discard(instance_id)

    def runtime_changed(self, observed: Mapping[str, ReplicaState]) -> set[str]:
        """Instances whose replicas the runtime reports differently from their last reconcile; they
        become due. A report equal to the previous one changes nothing: whatever differed then is
        due since (one dict comparison, in C, instead of a loop over every replica)."""
        if observed == self._observed:
            return set()
        self._observed = observed
        last, owner = self._states, self._owner
        found = {owner[rid] for rid, state in observed.items()
                 if (before := last.get(rid)) is not state and before != state and rid in owner}
        self.due |= found
        return found

    def reconciled(self, view: InstanceView, states: States) -> Memo:
        memo = remember(self.memos.get(view.id), view, states)
        self.memos[view.id] = memo
        for replica, state in zip(view.replicas, states, strict=True):
            self._states[replica.id] = state
        if memo.settled:
            self.due.discard(view.id)
        else:
            self.due.add(view.id)
        return memo

    def failed(self, instance_id: str) -> None:
        """Its reconcile did not finish: read it again and start over towards settled."""
        self.memos.pop(instance_id, None)
        self.due.add(instance_id)

    def _unindex(self, instance_id: str, keep: set[str] | frozenset[str] = frozenset()) -> None:
        """Drop the instance's replicas from the index; the last states of those in ``keep`` stay
        (a re-read of a settled instance must not look like a change of its replicas)."""
        view = self._indexed.pop(instance_id, None)
        for replica in view.replicas if view else ():
            self._owner.pop(replica.id, None)
            self.handles.pop(replica.id, None)
            if replica.id not in keep:
                self._states.pop(replica.id, None)
