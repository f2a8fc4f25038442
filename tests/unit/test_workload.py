"""``workload_config``: the allow-list, its 422s naming the key, and the options replicas get (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from inferd.controller.launch import replica_request
from inferd.controller.plan import desired_groups
from inferd.domain.catalog import Catalog
from inferd.domain.errors import InvalidInput
from inferd.domain.spec import DeploymentSpec, check_against_catalog, prepare_new_spec
from inferd.domain.workload import EngineOptions, options_of, parse_workload_config

CATALOG = Catalog.from_document(
    {
        "regions": [{"slug": "nyc2"}],
        "accelerators": [
            {"slug": "gpu-h100x1-80gb", "region": "nyc2", "count": 4, "name_prefix": "h100x1", "engine": "vllm",
             "gpus_per_unit": 1, "engine_args": ["--gpu-memory-utilization", "0.9"]},
            {"slug": "cpu-slot", "region": "nyc2", "count": 4, "name_prefix": "slot"},
        ],
        "models": [
            {"slug": "qwen/qwen2.5-7b-instruct", "name": "Qwen2.5-7B-Instruct", "accelerator_slugs": ["gpu-h100x1-80gb", "cpu-slot"],
             "sources": {"vllm": "hf:Qwen/Qwen2.5-7B-Instruct", "llama.cpp": "hf:Qwen/Qwen2.5-7B-Instruct-GGUF"},
             "tool_call_parser": "hermes", "max_context_length": 32768},
        ],
    }
)
FIELD = "spec.model_deployments[0].workload_config"


def _spec(workload_config: dict[str, Any], slug: str = "gpu-h100x1-80gb") -> DeploymentSpec:
    return prepare_new_spec(DeploymentSpec.model_validate({
        "version": 1, "name": "n", "region": "nyc2", "vpc": {"uuid": "997615ce-132d-4bae-9270-9ee21b395e5d"},
        "enable_public_endpoint": True,
        "model_deployments": [{"model_slug": "qwen/qwen2.5-7b-instruct", "workload_config": workload_config,
                               "accelerators": [{"accelerator_slug": slug, "scale": 1, "type": "prefill_decode"}]}],
    }))


@pytest.mark.parametrize(
    ("config", "slug", "key", "text"),
    [
        ({"isl": 1024}, "gpu-h100x1-80gb", "isl", "unknown key; allowed keys: context_length, dtype"),
        ({"context_length": 65536}, "gpu-h100x1-80gb", "context_length", "from 128 to 32768"),  # the model's maximum
        ({"context_length": 64}, "gpu-h100x1-80gb", "context_length", "from 128 to"),
        ({"context_length": "4096"}, "gpu-h100x1-80gb", "context_length", "must be an integer"),
        ({"context_length": True}, "gpu-h100x1-80gb", "context_length", "must be an integer"),
        ({"context_length": 4096.5}, "gpu-h100x1-80gb", "context_length", "must be an integer"),
        ({"max_concurrent_sequences": 0}, "gpu-h100x1-80gb", "max_concurrent_sequences", "from 1 to 256"),
        ({"max_concurrent_sequences": 257}, "cpu-slot", "max_concurrent_sequences", "from 1 to 256"),
        ({"dtype": "int4"}, "gpu-h100x1-80gb", "dtype", "one of auto, bfloat16, float16, float32"),
        ({"enable_prefix_caching": "yes"}, "gpu-h100x1-80gb", "enable_prefix_caching", "true or false"),
        ({"dtype": "bfloat16"}, "cpu-slot", "dtype", "not supported by the llama.cpp engine"),
        ({"enable_prefix_caching": True}, "cpu-slot", "enable_prefix_caching", "not supported by the llama.cpp engine"),
    ],
)
def test_rejections_name_the_key(config: dict[str, Any], slug: str, key: str, text: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_against_catalog(_spec(config, slug), CATALOG, has_hf_token=False)
    assert caught.value.field == f"{FIELD}.{key}"
    assert text in caught.value.message, caught.value.message


def test_valid_configs_pass_and_normalize() -> None:
    check_against_catalog(_spec({}), CATALOG, has_hf_token=False)
    config = {"context_length": 4096.0, "max_concurrent_sequences": 16, "max_batched_tokens": 8192, "dtype": "bfloat16",
              "enable_prefix_caching": True}
    check_against_catalog(_spec(config), CATALOG, has_hf_token=False)
    assert parse_workload_config(config, engines=["vllm"]) == EngineOptions(
        context_length=4096, max_concurrent_sequences=16, max_batched_tokens=8192, dtype="bfloat16", enable_prefix_caching=True)
    check_against_catalog(_spec({"context_length": 2048, "max_concurrent_sequences": 2}, "cpu-slot"), CATALOG, has_hf_token=False)


def test_stored_config_tolerates_withdrawn_keys() -> None:
    assert options_of({"context_length": 2048, "gone": 1, "dtype": "int4"}, tool_call_parser="hermes") == EngineOptions(
        context_length=2048, tool_call_parser="hermes")


def test_replica_request_carries_catalog_args_tool_parser_and_options() -> None:
    spec = _spec({"context_length": 8192, "enable_prefix_caching": True})
    (group,) = desired_groups(spec.model_dump())
    request = replica_request(
        CATALOG, replica_id="r", instance_id="i", model_slug=group.model_slug, accelerator_slug=group.accelerator_slug,
        region="nyc2", unit=0, hf_token=None, max_download_bytes=None, workload_config=group.workload_config,
    )
    assert request.engine == "vllm" and request.engine_args == ("--gpu-memory-utilization", "0.9")
    assert request.options == EngineOptions(context_length=8192, enable_prefix_caching=True, tool_call_parser="hermes")


def test_a_changed_workload_config_is_a_new_template() -> None:
    """What rolls the replicas on update: the template hash covers ``workload_config``."""
    before = desired_groups(_spec({"context_length": 4096}).model_dump())[0]
    after_spec = _spec({"context_length": 8192})
    after_spec.model_deployments[0].model_id = before.model_id
    after = desired_groups(after_spec.model_dump())[0]
    assert before.template != after.template
