"""Spec normalization, patching and catalog rules (pure)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from inferd.config import load_catalog_document
from inferd.domain.catalog import Catalog, CatalogError
from inferd.domain.errors import InvalidInput
from inferd.domain.spec import DeploymentSpec, SpecPatch, apply_patch, check_against_catalog, prepare_new_spec

GPU_CATALOG = Catalog.from_document(
    {
        "regions": [{"slug": "nyc2"}, {"slug": "tor1"}],
        "accelerators": [
            {"slug": "gpu-h100x1-80gb", "region": "nyc2", "count": 8, "name_prefix": "h100x1", "price_per_hour": "3.39"},
            {"slug": "gpu-h100x1-80gb", "region": "tor1", "count": 0, "name_prefix": "h100x1"},
            {"slug": "gpu-l40sx1-48gb", "region": "nyc2", "count": 2, "name_prefix": "l40sx1"},
        ],
        "models": [
            {"slug": "meta-llama/llama-3.1-8b-instruct", "name": "Llama-3.1-8B-Instruct", "gated": True,
             "accelerator_slugs": ["gpu-h100x1-80gb", "gpu-l40sx1-48gb"]},
            {"slug": "qwen/qwen2.5-7b-instruct", "name": "Qwen2.5-7B-Instruct", "accelerator_slugs": ["gpu-h100x1-80gb"]},
        ],
    }
)


def _spec(model: str = "qwen/qwen2.5-7b-instruct", slug: str = "gpu-h100x1-80gb", scale: int = 1, region: str = "nyc2") -> dict[str, Any]:
    return {
        "version": 7, "name": "n", "region": region, "vpc": {"uuid": "997615ce-132d-4bae-9270-9ee21b395e5d"},
        "enable_public_endpoint": True,
        "model_deployments": [{"model_slug": model, "accelerators": [{"accelerator_slug": slug, "scale": scale, "type": "prefill_decode"}]}],
    }


def _new(**kwargs: Any) -> DeploymentSpec:
    return prepare_new_spec(DeploymentSpec.model_validate(_spec(**kwargs)))


def test_new_spec_gets_version_one_and_model_ids() -> None:
    spec = _new()
    assert spec.version == 1
    assert spec.model_deployments[0].model_id


def test_default_catalog_is_valid() -> None:
    catalog = Catalog.from_document(load_catalog_document(None))
    assert catalog.enabled_regions() == ["atl1"]
    assert catalog.models and all(m.accelerator_slugs for m in catalog.models)


@pytest.mark.parametrize(
    ("kwargs", "hf", "field", "text"),
    [
        ({"region": "ams3"}, False, "spec.region", "unknown region"),
        ({"model": "acme/x"}, False, "spec.model_deployments[0].model_slug", "unknown model"),
        ({"model": "meta-llama/llama-3.1-8b-instruct"}, False, "access_tokens.hugging_face_token", "gated"),
        ({"slug": "gpu-l40sx1-48gb"}, False, "spec.model_deployments[0].accelerators[0].accelerator_slug", "cannot run on"),
        ({"slug": "gpu-nope"}, False, "spec.model_deployments[0].accelerators[0].accelerator_slug", "unknown accelerator"),
        ({"scale": 9}, False, "spec.model_deployments[0].accelerators[0].scale", "has 8"),
        ({"region": "tor1"}, False, "spec.model_deployments[0].accelerators[0].scale", "has 0"),
    ],
)
def test_catalog_rules(kwargs: dict[str, Any], hf: bool, field: str, text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_against_catalog(_new(**kwargs), GPU_CATALOG, has_hf_token=hf)
    assert caught.value.field == field and text in caught.value.message


def test_gated_model_with_token_passes() -> None:
    check_against_catalog(_new(model="meta-llama/llama-3.1-8b-instruct"), GPU_CATALOG, has_hf_token=True)


def test_capacity_counts_all_deployments_of_a_slug() -> None:
    body = _spec(scale=5)
    second = copy.deepcopy(body["model_deployments"][0])
    second["model_slug"] = "meta-llama/llama-3.1-8b-instruct"
    body["model_deployments"].append(second)
    spec = prepare_new_spec(DeploymentSpec.model_validate(body))
    with pytest.raises(InvalidInput, match="needs 10 units"):
        check_against_catalog(spec, GPU_CATALOG, has_hf_token=True)


def test_patch_merges_and_bumps_version() -> None:
    current = _new()
    patched = apply_patch(current, SpecPatch.model_validate({"name": "renamed", "region": None}))
    assert (patched.version, patched.name, patched.region) == (2, "renamed", "nyc2")
    assert patched.model_deployments == current.model_deployments


def test_patch_keeps_or_assigns_model_ids() -> None:
    current = _new()
    old_id = current.model_deployments[0].model_id
    keep = current.model_deployments[0].model_dump()
    keep["accelerators"][0]["scale"] = 3
    new = {"model_slug": "meta-llama/llama-3.1-8b-instruct", "accelerator_slug": "gpu-l40sx1-48gb", "node_count": 2}
    patched = apply_patch(current, SpecPatch.model_validate({"model_deployments": [keep, new]}))
    ids = [d.model_id for d in patched.model_deployments]
    assert ids[0] == old_id and ids[1] and ids[1] != old_id
    assert patched.model_deployments[1].accelerators[0].scale == 2


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"region": "tor1"}, "spec.region"),
        ({"vpc": {"uuid": "11111111-2222-4333-8444-555555555555"}}, "spec.vpc.uuid"),
        ({"model_deployments": [{"model_id": "11111111-2222-4333-8444-555555555555", "model_slug": "qwen/qwen2.5-7b-instruct",
                                 "accelerator_slug": "gpu-h100x1-80gb"}]}, "spec.model_deployments[0].model_id"),
    ],
)
def test_patch_rejections(patch: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        apply_patch(_new(), SpecPatch.model_validate(patch))
    assert caught.value.field == field


@pytest.mark.parametrize(
    "deployment",
    [
        {"model_slug": "m"},  # no accelerators at all
        {"model_slug": "m", "accelerators": [], "node_count": 2},
        {"model_slug": "m", "accelerator_slug": "s", "accelerators": [{"accelerator_slug": "s", "scale": 1, "type": "prefill_decode"}]},
        {"model_slug": "m", "accelerators": [{"accelerator_slug": "s", "scale": True, "type": "prefill_decode"}]},
        {"model_slug": "m", "accelerators": [{"accelerator_slug": "s", "scale": "2", "type": "prefill_decode"}]},
    ],
)
def test_shape_rejections(deployment: dict[str, Any]) -> None:
    body = _spec()
    body["model_deployments"] = [deployment]
    with pytest.raises(ValidationError):
        DeploymentSpec.model_validate(body)


def test_whole_float_accepted_as_integer() -> None:
    body = _spec()
    body["version"] = 3.0
    body["model_deployments"][0]["accelerators"][0]["scale"] = 2.0
    spec = DeploymentSpec.model_validate(body)
    assert spec.version == 3 and spec.model_deployments[0].accelerators[0].scale == 2


@pytest.mark.parametrize(
    "document",
    [
        {"regions": []},
        {"regions": [{"slug": "a1"}], "accelerators": [{"slug": "x", "region": "b2", "count": 1, "name_prefix": "x"}]},
        {"regions": [{"slug": "a1"}], "models": [{"slug": "m", "name": "M", "accelerator_slugs": ["nope"]}]},
        {"regions": [{"slug": "a1"}], "accelerators": [{"slug": "x", "region": "a1", "count": 1, "name_prefix": "x", "price_per_hour": "cheap"}]},
        {"regions": [{"slug": "a1"}], "surprise": 1},
    ],
)
def test_inconsistent_catalogs_are_refused(document: dict[str, Any]) -> None:
    with pytest.raises(CatalogError):
        Catalog.from_document(document)
