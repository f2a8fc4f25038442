"""Pure: the catalog's description of a replica's unit and model, as a runtime request."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from inferd.domain.catalog import Catalog
from inferd.domain.inventory import unit_demand
from inferd.domain.workload import options_of
from inferd.runtime.base import ReplicaRequest


class NotLaunchable(ValueError):
    """The catalog no longer describes what this replica runs (shown as its error)."""


def replica_request(
    catalog: Catalog,
    *,
    replica_id: str,
    instance_id: str,
    model_slug: str,
    accelerator_slug: str,
    region: str,
    unit: int | None,
    hf_token: str | None,
    max_download_bytes: int | None,
    workload_config: Mapping[str, Any] | None = None,
) -> ReplicaRequest:
    """The replica's request: the kind's unit and engine flags, the model's source, tool calling,
    chat template and embedding (whether it embeds, its pooling), the deployment's
    ``workload_config`` as engine options. The model's traits travel in the options so that every
    runtime (local, Ray) hands them to the engine unchanged, without knowing what they mean."""
    model = catalog.model(model_slug)
    kind = catalog.accelerator(accelerator_slug, region)
    if model is None or kind is None:
        raise NotLaunchable(f"{model_slug} on {accelerator_slug} is no longer in the catalog")
    source = model.sources.get(kind.engine)
    if source is None:
        raise NotLaunchable(f"the catalog gives no {kind.engine} source for {model.slug}")
    resources = {name: amount for name, amount in unit_demand(kind).items() if name != "GPU"}
    return ReplicaRequest(
        replica_id=replica_id,
        instance_id=instance_id,
        model_slug=model.slug,
        engine=kind.engine,
        source=source,
        gated=model.gated,
        slots=kind.slots,
        threads=kind.threads,
        gpus=kind.gpus_per_unit,
        devices=kind.unit_devices(unit) if unit is not None and kind.capacity_from == "catalog" else (),
        num_cpus=kind.cpus_per_unit,
        resources=resources,
        engine_args=kind.engine_args,
        options=options_of(
            workload_config or {},
            tool_call_parser=model.tool_call_parser,
            chat_template=model.chat_template,
            embeds=model.embeds,
            pooling=model.pooling,
        ),
        max_download_bytes=max_download_bytes,
        hf_token=hf_token,
    )
