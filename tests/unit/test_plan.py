"""The controller's pure rules: surge before stop, reuse, rollout completion, status."""

from __future__ import annotations

from inferd.controller.plan import (
    MAX_FAILURES,
    Group,
    Observed,
    ReplicaStatus,
    backoff_seconds,
    derive_status,
    desired_groups,
    plan,
    template_of,
)
from inferd.domain.status import InstanceStatus

READY, STARTING, FAILED, STOPPING = ReplicaStatus.READY, ReplicaStatus.STARTING, ReplicaStatus.FAILED, ReplicaStatus.STOPPING


def group(template: str = "t1", scale: int = 1, model: str = "m") -> Group:
    return Group(template=template, model_id="id-" + template, model_slug=model, accelerator_slug="s", role="prefill_decode", scale=scale)


def replica(rid: str, template: str = "t1", status: ReplicaStatus = READY, failures: int = 0) -> Observed:
    return Observed(id=rid, template=template, status=status, failures=failures, last_error="boom" if failures else None)


def test_creates_what_is_missing() -> None:
    result = plan([group(scale=3)], [replica("a")])
    assert [g.template for g in result.create] == ["t1", "t1"] and result.stop == [] and not result.rolled_out


def test_scale_down_stops_the_least_useful_first() -> None:
    result = plan([group(scale=1)], [replica("a", status=FAILED), replica("b"), replica("c", status=STARTING)])
    assert result.create == [] and sorted(result.stop) == ["a", "c"]
    assert result.rolled_out


def test_new_template_surges_before_old_ones_stop() -> None:
    old = [replica("old1", "t0"), replica("old2", "t0")]
    starting = plan([group("t1", scale=2)], old)
    assert len(starting.create) == 2 and starting.stop == []
    half = plan([group("t1", scale=2)], [*old, replica("n1"), replica("n2", status=STARTING)])
    assert half.create == [] and half.stop == [] and not half.rolled_out  # old keep serving
    done = plan([group("t1", scale=2)], [*old, replica("n1"), replica("n2")])
    assert sorted(done.stop) == ["old1", "old2"] and done.rolled_out  # new spec serves; old ones drain
    draining = plan([group("t1", scale=2)], [replica("n1"), replica("n2"), replica("old1", "t0", STOPPING)])
    assert draining.stop == [] and draining.create == [] and draining.rolled_out


def test_failed_replicas_are_kept_for_restart_not_duplicated() -> None:
    result = plan([group(scale=1)], [replica("a", status=FAILED, failures=1)])
    assert result.create == [] and result.stop == [] and not result.rolled_out


def test_templates_follow_what_runs() -> None:
    spec = {"model_deployments": [
        {"model_id": "x", "model_slug": "m", "workload_config": {}, "accelerators": [{"accelerator_slug": "s", "scale": 2, "type": "prefill_decode"}]},
    ]}
    (g,) = desired_groups(spec)
    assert g.scale == 2 and g.template == template_of("x", "m", "s", {})
    assert template_of("x", "m", "s", {"ctx": 1}) != g.template
    spec["model_deployments"][0]["accelerators"][0]["scale"] = 5
    assert desired_groups(spec)[0].template == g.template  # scale is not part of a replica's identity


def test_status_derivation() -> None:
    groups = [group(scale=2)]
    status = lambda replicas, pending=False, live=True, placement=None: derive_status(  # noqa: E731
        groups=groups, replicas=replicas, has_pending=pending, has_live=live, placement_error=placement
    )
    assert status([replica("a"), replica("b")]) == (InstanceStatus.ACTIVE, None)
    assert status([replica("a"), replica("b", status=STARTING)]) == (InstanceStatus.ACTIVE, None)
    assert status([replica("a", status=STARTING)]) == (InstanceStatus.PROVISIONING, None)
    assert status([], pending=True, live=False) == (InstanceStatus.PROVISIONING, None)
    assert status([replica("a")], pending=True) == (InstanceStatus.UPDATING, None)
    assert status([], placement="not enough capacity") == (InstanceStatus.ERROR, "not enough capacity")
    broken, reason = status([replica("a"), replica("b", status=FAILED, failures=MAX_FAILURES)])
    assert broken is InstanceStatus.ERROR and reason is not None and "boom" in reason
    assert status([replica("a"), replica("b", status=FAILED, failures=1)]) == (InstanceStatus.ACTIVE, None)


def test_backoff() -> None:
    assert [backoff_seconds(n) for n in (1, 2, 3, 4, 6, 10)] == [1, 2, 4, 8, 30, 30]
