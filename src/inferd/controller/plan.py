"""Pure planning: from a desired spec and observed replicas to actions and a status.

Kept free of I/O so the rules (surge before stopping, reuse of unchanged replicas, when a
rollout is done, what status an instance shows) can be tested exhaustively on their own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from inferd.domain.status import AcceleratorStatus, InstanceStatus

MAX_FAILURES = 3
"""Consecutive failed starts after which the instance shows ``error`` (retries go on)."""


class ReplicaStatus(StrEnum):
    STARTING = "starting"  # process launched, not yet answering its health check
    READY = "ready"  # serving
    FAILED = "failed"  # exited or never became ready; restarted after a backoff
    STOPPING = "stopping"  # asked to exit; removed once gone
    STOPPED = "stopped"  # cleanly stopped with the controller; started again on its return


@dataclass(frozen=True)
class Group:
    """``scale`` replicas of one model on one kind of accelerator."""

    template: str
    model_id: str
    model_slug: str
    accelerator_slug: str
    role: str
    scale: int
    workload_config: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Observed:
    id: str
    template: str
    status: ReplicaStatus
    failures: int = 0
    last_error: str | None = None


@dataclass
class Plan:
    create: list[Group] = field(default_factory=list)
    """One entry per replica to add."""
    stop: list[str] = field(default_factory=list)
    rolled_out: bool = False
    """Every group has all its replicas ready: the spec is live (obsolete replicas may still be
    draining; they are out of the route table already)."""


def template_of(model_id: str, model_slug: str, accelerator_slug: str, workload_config: dict[str, Any]) -> str:
    text = json.dumps([model_id, model_slug, accelerator_slug, workload_config], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def desired_groups(spec: dict[str, Any]) -> list[Group]:
    groups = []
    for deployment in spec["model_deployments"]:
        for accelerator in deployment["accelerators"]:
            groups.append(
                Group(
                    template=template_of(
                        deployment["model_id"],
                        deployment["model_slug"],
                        accelerator["accelerator_slug"],
                        deployment.get("workload_config") or {},
                    ),
                    model_id=deployment["model_id"],
                    model_slug=deployment["model_slug"],
                    accelerator_slug=accelerator["accelerator_slug"],
                    role=accelerator["type"],
                    scale=accelerator["scale"],
                    workload_config=deployment.get("workload_config") or {},
                )
            )
    return groups


_KEEP_FIRST = {ReplicaStatus.READY: 0, ReplicaStatus.STARTING: 1, ReplicaStatus.STOPPED: 2, ReplicaStatus.FAILED: 3}


def plan(groups: Sequence[Group], replicas: Sequence[Observed]) -> Plan:
    """What to do next. Obsolete replicas are stopped only once the new ones are all ready."""
    result = Plan()
    live = [r for r in replicas if r.status is not ReplicaStatus.STOPPING]
    wanted = {g.template for g in groups}
    all_ready = True
    for group in groups:
        mine = sorted((r for r in live if r.template == group.template), key=lambda r: _KEEP_FIRST[r.status])
        if len(mine) < group.scale:
            result.create.extend([group] * (group.scale - len(mine)))
        result.stop.extend(r.id for r in mine[group.scale:])
        ready = sum(1 for r in mine[: group.scale] if r.status is ReplicaStatus.READY)
        all_ready = all_ready and ready >= group.scale
    obsolete = [r.id for r in live if r.template not in wanted]
    if all_ready:
        result.stop.extend(obsolete)
    result.rolled_out = all_ready
    return result


def derive_status(
    *,
    groups: Sequence[Group],
    replicas: Sequence[Observed],
    has_pending: bool,
    has_live: bool,
    placement_error: str | None,
) -> tuple[InstanceStatus, str | None]:
    """The status an instance shows, and the reason when it is ``error``."""
    if placement_error:
        return InstanceStatus.ERROR, placement_error
    for group in groups:
        mine = [r for r in replicas if r.template == group.template and r.status is not ReplicaStatus.STOPPING]
        ready = sum(1 for r in mine if r.status is ReplicaStatus.READY)
        broken = [r for r in mine if r.failures >= MAX_FAILURES]
        if ready < group.scale and broken:
            detail = tenant_reason(broken[0].last_error)
            return InstanceStatus.ERROR, f"{group.model_slug}: replica failed {broken[0].failures} times: {detail}"
    if has_pending:
        return (InstanceStatus.UPDATING if has_live else InstanceStatus.PROVISIONING), None
    ready_per_group = [
        sum(1 for r in replicas if r.template == g.template and r.status is ReplicaStatus.READY) for g in groups
    ]
    if all(n >= g.scale for n, g in zip(ready_per_group, groups, strict=True)):
        return InstanceStatus.ACTIVE, None
    if any(n == 0 for n in ready_per_group):
        return InstanceStatus.PROVISIONING, None  # a model has nothing serving: it is being brought back
    return InstanceStatus.ACTIVE, None  # every model serves; a missing replica is being replaced


def tenant_reason(error: str | None) -> str:
    """A replica's error as its instance's owner may read it: no engine log lines, node
    addresses or server paths (operators see the full text in ``inferd replicas``/``logs``)."""
    if not error:
        return "the model server keeps failing"
    if error.startswith("the model server exited"):
        return error.split(":", 1)[0] + "; the operator's logs say why"
    if error.startswith("lost:"):
        return "lost: the machine it ran on stopped answering"
    if error.startswith("the model server could not listen"):
        return "the model server could not listen on its port; it is restarted on another"
    return error


def accelerator_status(replica: ReplicaStatus) -> AcceleratorStatus:
    return {
        ReplicaStatus.READY: AcceleratorStatus.ACTIVE,
        ReplicaStatus.STOPPING: AcceleratorStatus.DELETING,
        ReplicaStatus.FAILED: AcceleratorStatus.ERROR,
    }.get(replica, AcceleratorStatus.PROVISIONING)


def backoff_seconds(failures: int) -> float:
    """1, 2, 4, 8, … seconds between restarts, at most 30."""
    return float(min(30, 2 ** max(0, failures - 1)))
