"""``GET /v2/dedicated-inferences/{id}/metrics``: an instance's traffic counters for the console.

An inferd extension (DigitalOcean's API has no such operation), so it is left out of the
OpenAPI document; it follows the API's rules all the same: a ``dop_v1_`` token with read
scope, and another team's instance is a 404.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import anyio
from fastapi import APIRouter, Depends, Request

from inferd.api.auth import Principal, require
from inferd.api.instance_metrics import GatewayMetricsReader, InstanceTraffic
from inferd.api.routes.common import app_state
from inferd.api.state import AppState
from inferd.domain.scopes import Scope
from inferd.store import instances as repo

router = APIRouter(prefix="/v2/dedicated-inferences", include_in_schema=False)


def metrics_reader(request: Request) -> GatewayMetricsReader:
    """The app's one reader (its cache is shared by every console page), made by ``create_app``."""
    reader: GatewayMetricsReader = request.app.state.gateway_metrics
    return reader


@router.get("/{dedicated_inference_id:uuid}/metrics")
async def instance_metrics(
    dedicated_inference_id: UUID,
    who: Annotated[Principal, Depends(require(Scope.READ))],
    state: Annotated[AppState, Depends(app_state)],
    reader: Annotated[GatewayMetricsReader, Depends(metrics_reader)],
) -> dict[str, Any]:
    """Counters since the gateways started, summed over them; ``available`` is false (with a
    message) when no gateway could be read."""
    instance_id = str(dedicated_inference_id)

    def owned() -> None:
        with state.database.session() as session:
            repo.get_instance(session, who.team_id, instance_id)  # 404 for another team's

    await anyio.to_thread.run_sync(owned)
    reading = await reader.reading()
    body: dict[str, Any] = {"dedicated_inference_id": instance_id, "sampled_at": reading.sampled_at}
    if len(reading.failures) >= len(reader.urls):  # no gateway gave readable numbers
        return {**body, "available": False, "message": "the gateway's metrics could not be read: " + "; ".join(reading.failures)}
    traffic = reading.traffic.get(instance_id, InstanceTraffic())
    return {**body, "available": True, **traffic.body(), **({"partial": reading.failures} if reading.failures else {})}
