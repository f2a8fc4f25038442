"""Rows → wire dictionaries (timestamps as RFC 3339 UTC with ``Z``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from inferd.config import Settings
from inferd.domain.status import InstanceStatus
from inferd.store.tables import (
    AcceleratorRow,
    DeploymentRow,
    InstanceRow,
    InstanceTokenRow,
)


def timestamp(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class InstanceView:
    """An instance with the deployments its response shows."""

    instance: InstanceRow
    live: DeploymentRow | None
    pending: DeploymentRow | None


def endpoints(settings: Settings, instance_id: str, public: bool) -> dict[str, str]:
    body = {"private_endpoint_fqdn": settings.private_template().format(id=instance_id)}
    if public:
        body["public_endpoint_fqdn"] = settings.public_template().format(id=instance_id)
    return body


def instance_body(view: InstanceView, settings: Settings) -> dict[str, Any]:
    instance = view.instance
    shown = view.live or view.pending
    assert shown is not None, "an instance always has a live or a pending deployment"
    spec = shown.spec
    body: dict[str, Any] = {
        "id": instance.id,
        "region": instance.region,
        "status": instance.status,
        "vpc_uuid": instance.vpc_uuid,
        "spec": spec,
        "endpoints": endpoints(settings, instance.id, bool(spec["enable_public_endpoint"])),
        "created_at": timestamp(instance.created_at),
        "updated_at": timestamp(instance.updated_at),
    }
    if instance.status_reason:  # why it is ``error``, or what provisioning is doing (downloading 35% …)
        body["status_reason"] = instance.status_reason
    if view.pending is not None and instance.status in (InstanceStatus.PROVISIONING, InstanceStatus.UPDATING):
        pending_spec = view.pending.spec
        body["pending_deployment_spec"] = {
            "id": view.pending.id,
            "version": view.pending.version,
            "name": pending_spec["name"],
            "vpc": pending_spec["vpc"],
            "enable_public_endpoint": pending_spec["enable_public_endpoint"],
            "model_deployments": pending_spec["model_deployments"],
            "status": view.pending.status,
            "created_at": timestamp(view.pending.created_at),
            "updated_at": timestamp(view.pending.updated_at),
        }
    return body


def token_body(row: InstanceTokenRow, value: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"id": row.id, "name": row.name, "created_at": timestamp(row.created_at)}
    if value is not None:
        body["value"] = value
    return body


def accelerator_body(row: AcceleratorRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "role": row.role,
        "slug": row.slug,
        "status": row.status,
        "created_at": timestamp(row.created_at),
    }
