"""``/sizes`` and ``/gpu-model-config``: what this installation offers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from inferd.api.auth import Principal, require
from inferd.api.routes.common import ERRORS, app_state
from inferd.api.state import AppState
from inferd.api.wire import GpuModelConfigsOut, SizesOut
from inferd.domain.scopes import Scope
from inferd.store.capacity import current_catalog

router = APIRouter(prefix="/v2/dedicated-inferences", tags=["Dedicated Inference"], responses=ERRORS)
Reader = Annotated[Principal, Depends(require(Scope.READ))]
State = Annotated[AppState, Depends(app_state)]


@router.get("/sizes", response_model=SizesOut, operation_id="dedicatedInferences_list_sizes")
def list_sizes(_: Reader, state: State) -> dict[str, object]:
    """Enabled regions and accelerator sizes with prices (counts of Ray-backed kinds: the cluster's now)."""
    with state.database.session() as session:
        catalog = current_catalog(state.catalog, session)
    return {
        "enabled_regions": catalog.enabled_regions(),
        "sizes": [
            {"gpu_slug": a.slug, "region": a.region, "price_per_hour": a.price_per_hour, "currency": a.currency}
            for a in catalog.accelerators
            if a.count > 0
        ],
    }


@router.get(
    "/gpu-model-config", response_model=GpuModelConfigsOut, operation_id="dedicatedInferences_get_gpu_model_config"
)
def gpu_model_config(_: Reader, state: State) -> dict[str, object]:
    """Models that can be deployed and the accelerator slugs each runs on."""
    return {
        "gpu_model_configs": [
            {
                "model_slug": m.slug,
                "model_name": m.name,
                "gpu_slugs": list(m.accelerator_slugs),
                "is_gated_model": m.gated,
            }
            for m in state.catalog.models
        ]
    }
