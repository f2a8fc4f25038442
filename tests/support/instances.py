"""Instances made through the API the way a user makes them, for tests that need one serving."""

from __future__ import annotations

from typing import Any

from tests.support import specs
from tests.support.server import Server
from tests.support.waiting import wait_for


def create_active(server: Server, name: str, timeout: float = 90, **spec: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Create an instance, wait until it is ``active``; return (the instance as GET shows it then,
    its first ``di_`` token as the create answer gave it: ``id``, ``value``)."""
    with server.client(server.admin_token) as api:
        created = api.post("/v2/dedicated-inferences", json=specs.create_body(name, **spec))
        assert created.status_code == 202, created.text
        path = f"/v2/dedicated-inferences/{created.json()['dedicated_inference']['id']}"

        def active() -> dict[str, Any] | None:
            found: dict[str, Any] = api.get(path).json()["dedicated_inference"]
            return found if found["status"] == "active" else None

        instance = wait_for(active, timeout=timeout, what=f"{name} active")
    return instance, created.json()["token"]
