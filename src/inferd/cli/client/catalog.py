"""``inferd sizes`` and ``inferd models``: what this installation offers to deploy."""

from __future__ import annotations

from inferd.cli.client.output import Column, field
from inferd.cli.client.session import Session, client_command

SIZE_COLUMNS: list[Column] = [
    ("Slug", field("gpu_slug")), ("Region", field("region")), ("Price/hour", field("price_per_hour")),
    ("Currency", field("currency")),
]
MODEL_COLUMNS: list[Column] = [
    ("Slug", field("model_slug")), ("Name", field("model_name")), ("Accelerators", field("gpu_slugs")),
    ("Gated", field("is_gated_model")),
]


@client_command()
def sizes(session: Session) -> None:
    """Accelerator sizes available now, by region, with prices (JSON: the API's `sizes` list)."""
    session.output.items(session.api.sizes().get("sizes") or [], SIZE_COLUMNS)


@client_command()
def models(session: Session) -> None:
    """Models that can be deployed and the accelerators each runs on (GET …/gpu-model-config)."""
    session.output.items(session.api.models(), MODEL_COLUMNS)
