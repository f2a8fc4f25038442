"""Pure rules of the scale-out work: what runtime reports mean, cluster inventory, GPU placement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from inferd.controller.launch import NotLaunchable, replica_request
from inferd.controller.observe import Seen, Timeouts, judge, needs_in_flight
from inferd.controller.plan import ReplicaStatus
from inferd.domain.catalog import AcceleratorKind, Catalog, CatalogError
from inferd.domain.inventory import cluster_counts, unit_demand, units_on_node
from inferd.runtime.base import Phase, ReplicaState
from inferd.store.replicas import lowest_free_unit

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
T = Timeouts(startup=180, placing=300, drain=2, stop=60)


def seen(status: ReplicaStatus = ReplicaStatus.STARTING, *, handle: str | None = "h", phase: str | None = None,
         since: datetime | None = None, stop_at: datetime | None = None) -> Seen:
    return Seen("r1", status, handle, phase, since, stop_at)


def test_ready_report_makes_the_replica_ready() -> None:
    verdict = judge(seen(), ReplicaState(Phase.READY, "http://10.0.0.2:4000", "10.0.0.2"), None, NOW, T)
    assert verdict.status is ReplicaStatus.READY and verdict.state and verdict.state.endpoint == "http://10.0.0.2:4000"


@pytest.mark.parametrize("phase", [Phase.EXITED, Phase.LOST])
def test_an_ended_replica_fails_and_its_handle_is_freed(phase: Phase) -> None:
    verdict = judge(seen(ReplicaStatus.READY), ReplicaState(phase, detail="node 10.0.0.3 died"), None, NOW, T)
    assert verdict.status is ReplicaStatus.FAILED and verdict.kill and verdict.forget
    assert "node 10.0.0.3 died" in (verdict.error or "")
    assert verdict.error is not None and verdict.error.startswith("lost: ") == (phase is Phase.LOST)


def test_startup_timeout_counts_from_the_engine_launch_not_the_download() -> None:
    long_ago = NOW - timedelta(seconds=1000)
    downloading = judge(seen(phase="downloading", since=long_ago), ReplicaState(Phase.DOWNLOADING), None, NOW, T)
    assert downloading.status is ReplicaStatus.STARTING  # a long download is not a hang
    # the phase just changed to starting: the clock starts now
    fresh = judge(seen(phase="downloading", since=long_ago), ReplicaState(Phase.STARTING), None, NOW, T)
    assert fresh.status is ReplicaStatus.STARTING
    stuck = judge(seen(phase="starting", since=long_ago), ReplicaState(Phase.STARTING), None, NOW, T)
    assert stuck.status is ReplicaStatus.FAILED and stuck.kill and "not ready within 180 s" in (stuck.error or "")


def test_startup_timeout_is_per_engine() -> None:
    """vLLM loads and compiles for minutes: 1000 s of ``starting`` fails llama.cpp, not vLLM."""
    timeouts = Timeouts(startup=180, placing=300, drain=2, stop=60, startup_by_engine={"vllm": 1200})
    started = NOW - timedelta(seconds=1000)
    starting = ReplicaState(Phase.STARTING, "http://h:1", "h", detail="Loading weights")
    llama = Seen("r1", ReplicaStatus.STARTING, "h", "starting", started, None, engine="llama.cpp")
    vllm = Seen("r2", ReplicaStatus.STARTING, "h", "starting", started, None, engine="vllm")
    assert judge(llama, starting, None, NOW, timeouts).status is ReplicaStatus.FAILED
    assert judge(vllm, starting, None, NOW, timeouts).status is ReplicaStatus.STARTING
    late = Seen("r2", ReplicaStatus.STARTING, "h", "starting", NOW - timedelta(seconds=1201), None, engine="vllm")
    assert judge(late, starting, None, NOW, timeouts).error == "not ready within 1200 s"


def test_waiting_for_room_too_long_fails() -> None:
    stuck = judge(seen(phase="placing", since=NOW - timedelta(seconds=301)), ReplicaState(Phase.PLACING), None, NOW, T)
    assert stuck.status is ReplicaStatus.FAILED and "no node with room" in (stuck.error or "")


def test_draining_waits_then_terminates_when_idle_then_kills() -> None:
    stopping = ReplicaStatus.STOPPING
    running = ReplicaState(Phase.READY)
    just = seen(stopping, stop_at=NOW)
    assert not needs_in_flight(just, NOW, T)
    assert not judge(just, running, None, NOW, T).terminate
    later = seen(stopping, stop_at=NOW - timedelta(seconds=3))
    assert needs_in_flight(later, NOW, T)
    assert not judge(later, running, 2, NOW, T).terminate  # still busy
    assert judge(later, running, 0, NOW, T).terminate
    overdue = seen(stopping, stop_at=NOW - timedelta(seconds=2 + 60 + 11))
    assert judge(overdue, running, 5, NOW, T).kill
    gone = judge(later, ReplicaState(Phase.EXITED), None, NOW, T)
    assert gone.gone and gone.kill  # the runtime frees what it still holds (an actor)


def test_nothing_known_changes_nothing() -> None:
    assert judge(seen(), None, None, NOW, T).status is ReplicaStatus.STARTING
    assert judge(seen(ReplicaStatus.FAILED, handle=None), ReplicaState(Phase.LOST), None, NOW, T).status is ReplicaStatus.FAILED


def _kind(**values: object) -> AcceleratorKind:
    return AcceleratorKind.model_validate({"slug": "gpu-h100x1", "region": "nyc2", "count": 2, "name_prefix": "gpu", **values})


def test_cluster_counts_from_node_resources() -> None:
    gpu = _kind(gpus_per_unit=2, ray_accelerator_type="H100", capacity_from="cluster")
    slot = AcceleratorKind.model_validate({"slug": "cpu-slot", "region": "nyc2", "count": 0, "name_prefix": "slot",
                                           "ray_resource": "inferd-cpu-slot", "capacity_from": "cluster"})
    assert unit_demand(gpu) == {"GPU": 2.0, "accelerator_type:H100": 0.001}
    h100_node = {"CPU": 64, "GPU": 8, "accelerator_type:H100": 1}
    a100_node = {"CPU": 64, "GPU": 8, "accelerator_type:A100": 1}
    cpu_node = {"CPU": 2, "inferd-cpu-slot": 2}
    assert units_on_node(gpu, h100_node) == 4
    assert units_on_node(gpu, a100_node) == 0
    assert units_on_node(slot, cpu_node) == 2 and units_on_node(slot, h100_node) == 0
    catalog = Catalog.model_validate({"regions": [{"slug": "nyc2"}], "accelerators": [gpu.model_dump(), slot.model_dump()]})
    counts = cluster_counts(catalog, [h100_node, a100_node, cpu_node, cpu_node])
    assert counts == {("gpu-h100x1", "nyc2"): 4, ("cpu-slot", "nyc2"): 4}
    assert catalog.with_counts(counts).capacity("gpu-h100x1", "nyc2") == 4
    assert catalog.with_counts({}).capacity("cpu-slot", "nyc2") == 0  # nothing reported yet: no units


def test_each_local_unit_owns_its_gpus() -> None:
    kind = _kind(gpus_per_unit=2, count=2)
    assert [kind.unit_devices(u) for u in (0, 1)] == [(0, 1), (2, 3)]
    listed = _kind(gpus_per_unit=1, count=2, devices=[4, 6])
    assert [listed.unit_devices(u) for u in (0, 1)] == [(4,), (6,)]
    assert _kind().unit_devices(0) == ()  # a CPU kind has none
    with pytest.raises(ValueError, match="need 4 devices, 2 listed"):
        _kind(gpus_per_unit=2, count=2, devices=[0, 1])
    assert lowest_free_unit([0, 2, None]) == 1


def test_replica_request_carries_placement_and_keeps_the_token_out_of_repr() -> None:
    catalog = Catalog.from_document({
        "regions": [{"slug": "nyc2"}],
        "accelerators": [{"slug": "gpu-h100x2", "region": "nyc2", "count": 2, "name_prefix": "gpu", "engine": "vllm",
                          "gpus_per_unit": 2, "ray_accelerator_type": "H100", "cpus_per_unit": 8}],
        "models": [{"slug": "org/m", "name": "M", "accelerator_slugs": ["gpu-h100x2"], "sources": {"vllm": "hf:org/m"}}],
    })
    request = replica_request(catalog, replica_id="r", instance_id="i", model_slug="org/m", accelerator_slug="gpu-h100x2",
                              region="nyc2", unit=1, hf_token="hf_secret", max_download_bytes=None)
    assert request.devices == (2, 3) and request.gpus == 2 and request.num_cpus == 8
    assert dict(request.resources) == {"accelerator_type:H100": 0.001}  # GPUs go as num_gpus, not a resource
    assert "hf_secret" not in repr(request)
    with pytest.raises(NotLaunchable):
        replica_request(catalog, replica_id="r", instance_id="i", model_slug="org/gone", accelerator_slug="gpu-h100x2",
                        region="nyc2", unit=0, hf_token=None, max_download_bytes=None)


def test_catalog_rejects_unknown_capacity_source() -> None:
    with pytest.raises(CatalogError):
        Catalog.from_document({"regions": [{"slug": "a"}], "accelerators": [
            {"slug": "x", "region": "a", "count": 1, "name_prefix": "x", "capacity_from": "magic"}]})
