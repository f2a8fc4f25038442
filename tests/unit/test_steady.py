"""The pure skip rule (controller/steady.py): which instances a reconcile pass may leave alone."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from inferd.controller.plan import ReplicaStatus
from inferd.controller.steady import InstanceView, Memory, ReplicaView, remember, settled
from inferd.runtime.base import Phase, ReplicaState

T0 = datetime(2026, 1, 1, tzinfo=UTC)
READY = ReplicaState(Phase.READY, "http://127.0.0.1:9000", "local")


def replica(rid: str = "r1", **changes: object) -> ReplicaView:
    base = ReplicaView(id=rid, status=ReplicaStatus.READY, handle=f"local:{rid}", phase="ready", phase_since=T0,
                       stop_requested_at=None, engine="llama.cpp", endpoint="http://127.0.0.1:9000", node="local",
                       detail=None)
    return replace(base, **changes)  # type: ignore[arg-type]


def instance(iid: str = "i1", *replicas: ReplicaView, **changes: object) -> InstanceView:
    base = InstanceView(id=iid, status="active", status_reason=None, live_deployment_id="d1",
                        pending_deployment_id=None, replicas=replicas or (replica(),))
    return replace(base, **changes)  # type: ignore[arg-type]


def test_an_active_instance_with_every_replica_ready_is_settled() -> None:
    view = instance("i1", replica("a"), replica("b"))
    assert settled(view, (READY, READY))


@pytest.mark.parametrize("changes", [
    {"status": "provisioning"}, {"status": "updating"}, {"status": "deleting"}, {"status": "error"},
    {"status_reason": "not enough capacity"},  # waits for units that other instances may free
    {"pending_deployment_id": "d2"}, {"live_deployment_id": None}, {"replicas": ()},
])
def test_anything_but_active_and_live_is_not_settled(changes: dict[str, Any]) -> None:
    view = instance(**changes)
    assert not settled(view, view.states({"r1": READY}))


@pytest.mark.parametrize("changes", [
    {"status": ReplicaStatus.STARTING},  # startup timeout
    {"status": ReplicaStatus.FAILED, "handle": None},  # backoff
    {"status": ReplicaStatus.STOPPING, "stop_requested_at": T0},  # drain, SIGTERM, SIGKILL
    {"status": ReplicaStatus.STOPPED, "handle": None},
    {"handle": None},
    {"stop_requested_at": T0},
    {"phase": "starting"},  # decide would record the new phase
    {"endpoint": "http://127.0.0.1:9001"},  # decide would record the runtime's endpoint
    {"node": "elsewhere"},
    {"detail": "downloading 50%"},
])
def test_a_replica_on_a_timer_or_not_recorded_as_reported_unsettles(changes: dict[str, Any]) -> None:
    assert not settled(instance("i1", replica(**changes)), (READY,))


@pytest.mark.parametrize("state", [
    None,  # not asked, or the runtime does not know it
    ReplicaState(Phase.STARTING, "http://127.0.0.1:9000", "local"),
    ReplicaState(Phase.EXITED, "http://127.0.0.1:9000", "local", "the model server exited: killed"),
    ReplicaState(Phase.LOST, detail="no such process"),
])
def test_a_runtime_report_other_than_ready_unsettles(state: ReplicaState | None) -> None:
    assert not settled(instance(), (state,))


def test_a_runtime_report_without_endpoint_or_node_keeps_what_is_recorded() -> None:
    assert settled(instance(), (ReplicaState(Phase.READY),))


def test_settled_only_when_two_reconciles_in_a_row_read_the_same() -> None:
    """The first reconcile may have written something (an accelerator, a status); only a second
    one that reads the same rows and states shows that nothing is left to do."""
    view = instance()
    first = remember(None, view, (READY,))
    assert not first.settled
    assert remember(first, view, (READY,)).settled
    assert not remember(first, replace(view, status_reason="x"), (READY,)).settled
    assert not remember(first, view, (ReplicaState(Phase.READY, "http://127.0.0.1:9001", "local"),)).settled
    unsettled = remember(None, instance(status="provisioning"), (READY,))
    assert not remember(unsettled, instance(status="provisioning"), (READY,)).settled


def settle(memory: Memory, view: InstanceView, observed: dict[str, ReplicaState]) -> None:
    for _ in range(2):
        memory.index(view)
        memory.reconciled(view, view.states(observed))


def test_memory_skips_a_settled_instance_until_the_feed_or_the_runtime_reports_a_change() -> None:
    memory = Memory()
    steady, busy = instance("i1", replica("a")), instance("i2", replica("b", status=ReplicaStatus.STARTING))
    observed = {"a": READY, "b": ReplicaState(Phase.STARTING, "http://127.0.0.1:9001", "local")}
    memory.note_changed(["i1", "i2"])  # the first pass: both new
    assert memory.due == {"i1", "i2"}
    settle(memory, steady, observed)
    settle(memory, busy, observed)
    assert memory.due == {"i2"}  # starting: reconciled every pass (its startup timeout runs)
    assert memory.handles == {"a": "local:a", "b": "local:b"}  # both are still observed every pass
    assert memory.runtime_changed(observed) == set()

    killed = {**observed, "a": ReplicaState(Phase.EXITED, "http://127.0.0.1:9000", "local", "killed")}
    assert memory.runtime_changed(killed) == {"i1"}
    memory.note_changed(["i1"])  # e.g. an update through the API
    assert memory.due == {"i1", "i2"}


def test_memory_forgets_deleted_instances_and_their_replicas() -> None:
    memory = Memory()
    settle(memory, instance("i1", replica("a")), {"a": READY})
    memory.forget("i1")
    assert memory.known() == set() and memory.handles == {}
    assert memory.runtime_changed({"a": READY}) == set()


def test_a_full_read_finds_what_the_feed_missed() -> None:
    memory = Memory()
    view = instance("i1", replica("a"))
    settle(memory, view, {"a": READY})
    settle(memory, instance("i2", replica("b")), {"b": READY})
    assert memory.due == set()
    changed = instance("i1", replica("a", handle="local:other"))  # e.g. written by another controller
    assert memory.stale({"i1": changed}) == {"i1"}  # i2 is gone from the read: forgotten
    assert memory.known() == {"i1"}
    assert memory.stale({"i1": view}) == {"i1"}  # still due until reconciled


def test_a_re_read_of_a_settled_instance_is_not_a_change_of_its_replicas() -> None:
    memory = Memory()
    view = instance("i1", replica("a"))
    settle(memory, view, {"a": READY})
    assert memory.stale({"i1": view}) == set()
    memory.index(view)  # the full pass indexes every view it read
    assert memory.runtime_changed({"a": READY}) == set()


def test_a_failed_reconcile_starts_over() -> None:
    memory = Memory()
    view = instance("i1", replica("a"))
    settle(memory, view, {"a": READY})
    memory.failed("i1")
    assert memory.due == {"i1"}
    memory.reconciled(view, (READY,))
    assert memory.due == {"i1"}  # one good reconcile is not yet a repeat
    memory.reconciled(view, (READY,))
    assert memory.due == set()


def test_clear_forgets_everything() -> None:
    memory = Memory()
    settle(memory, instance("i1", replica("a")), {"a": READY})
    memory.clear()
    assert memory.known() == set() and memory.handles == {} and memory.memos == {}


def test_a_report_equal_to_the_last_one_leaves_what_changed_due() -> None:
    memory = Memory()
    settle(memory, instance("i1", replica("a")), {"a": READY})
    killed = {"a": ReplicaState(Phase.EXITED, "http://127.0.0.1:9000", "local", "killed")}
    assert memory.runtime_changed(killed) == {"i1"}
    assert memory.runtime_changed(dict(killed)) == set()  # nothing new since the last report
    assert memory.due == {"i1"}  # but it stays due until a reconcile finds it settled

