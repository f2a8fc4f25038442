"""Lifecycle states of instances, deployments and accelerators.

The API only ever *requests* a state change (a new deployment, a deletion); the controller
derives the observed states from what really runs.
"""

from __future__ import annotations

from enum import StrEnum


class InstanceStatus(StrEnum):
    NEW = "new"
    PROVISIONING = "provisioning"
    ACTIVE = "active"
    UPDATING = "updating"
    DELETING = "deleting"
    ERROR = "error"


class DeploymentStatus(StrEnum):
    """Status of one version of an instance's spec."""

    PROVISIONING = "provisioning"  # first rollout: nothing serves yet
    UPDATING = "updating"  # rollout while an older version keeps serving
    ACTIVE = "active"  # fully live
    SUPERSEDED = "superseded"  # replaced by a newer version before or after going live
    FAILED = "failed"


class AcceleratorStatus(StrEnum):
    PROVISIONING = "provisioning"
    ACTIVE = "active"
    ERROR = "error"
    DELETING = "deleting"


def rollout_status(has_live_deployment: bool) -> tuple[InstanceStatus, DeploymentStatus]:
    """Statuses for a newly accepted spec: ``updating`` if an older spec serves meanwhile."""
    if has_live_deployment:
        return InstanceStatus.UPDATING, DeploymentStatus.UPDATING
    return InstanceStatus.PROVISIONING, DeploymentStatus.PROVISIONING


def accepts_changes(status: InstanceStatus) -> bool:
    """An instance being deleted takes no more updates or new tokens."""
    return status is not InstanceStatus.DELETING
