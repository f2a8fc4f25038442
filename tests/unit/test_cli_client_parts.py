"""The client CLI's request bodies (``inferd.cli.client.spec_input``): from flags, with defaults
from what ``/sizes`` and ``/gpu-model-config`` answer, and from spec files; pure, no server.

The rest of the client's pure parts (contexts file, output, server-sent events, errors, the
wait's decisions) are in ``test_cli_client_parts_runtime.py``.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from inferd.cli.client import spec_input
from inferd.cli.client.spec_input import PLACEHOLDER_VPC, SpecError, SpecFlags, as_body, create_body, parse_document, patch_body

VPC = "997615ce-132d-4bae-9270-9ee21b395e5d"
H100, L40S, MI300 = "gpu-h100x1-80gb", "gpu-l40sx1-48gb", "gpu-mi300x1-192gb"

# What GET /v2/dedicated-inferences/sizes answers (api/wire.py SizesOut).
SIZES: dict[str, Any] = {
    "enabled_regions": ["nyc2", "tor1", "atl1"],
    "sizes": [
        {"gpu_slug": H100, "region": "nyc2", "price_per_hour": "3.39", "currency": "USD"},
        {"gpu_slug": L40S, "region": "nyc2", "price_per_hour": "1.57", "currency": "USD"},
        {"gpu_slug": L40S, "region": "tor1", "price_per_hour": "1.57", "currency": "USD"},
    ],
}
# What GET /v2/dedicated-inferences/gpu-model-config answers, its gpu_model_configs (GpuModelConfigOut).
MODELS: list[dict[str, Any]] = [
    {"model_slug": "deepseek/r1-70b", "model_name": "DeepSeek-R1-70B", "gpu_slugs": [MI300], "is_gated_model": False},
    {"model_slug": "qwen/qwen2.5-7b-instruct", "model_name": "Qwen2.5-7B-Instruct", "gpu_slugs": [H100], "is_gated_model": False},
    {"model_slug": "meta-llama/llama-3.1-8b-instruct", "model_name": "Llama-3.1-8B-Instruct", "gpu_slugs": [L40S, H100],
     "is_gated_model": True},
]


def _deployment(model_id: str, slug: str, accelerators: list[dict[str, Any]]) -> dict[str, Any]:
    return {"model_id": model_id, "model_slug": slug, "model_provider": "hugging_face", "workload_config": {"max_model_len": 4096},
            "accelerators": accelerators}


def _instance(*deployments: dict[str, Any], pending: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A GET /v2/dedicated-inferences/{id} answer's dedicated_inference (DedicatedInferenceOut)."""
    spec = {"version": 2, "name": "chat-1", "region": "nyc2", "vpc": {"uuid": VPC}, "enable_public_endpoint": True,
            "model_deployments": list(deployments)}
    instance: dict[str, Any] = {
        "id": "4da9cc48-13cb-4dd0-a3b1-0cea08dfd9e1", "region": "nyc2", "status": "active", "status_reason": None, "vpc_uuid": VPC,
        "spec": spec, "endpoints": {"public_endpoint_fqdn": "https://chat-1.example", "private_endpoint_fqdn": "https://p.example"},
        "created_at": "2026-12-05T19:36:31Z", "updated_at": "2026-12-05T19:40:02Z",
    }
    if pending is not None:
        instance["pending_deployment_spec"] = {
            "id": "b0f3a7d2-5c1e-4e8a-9d6b-2f4c8a1e7d90", "version": 3, "name": "chat-1", "vpc": {"uuid": VPC},
            "enable_public_endpoint": True, "model_deployments": pending, "status": "deploying",
            "created_at": "2026-12-05T19:41:00Z", "updated_at": "2026-12-05T19:41:00Z"}
    return instance


QWEN_ID, LLAMA_ID = "0c8a2f7e-31b4-4d52-a6a0-9f3e2d1c4b5a", "7e6d5c4b-3a29-4180-8f7e-6d5c4b3a2918"
ONE_H100 = [{"accelerator_slug": H100, "scale": 1, "type": "prefill_decode", "status": "active"}]


# -- create from flags -------------------------------------------------------------------------
def test_create_with_only_a_name_takes_every_default_from_the_catalog() -> None:
    body = create_body(SpecFlags(name="chat-1"), MODELS, SIZES)
    # deepseek comes first but no size offers an MI300: the first model that can run is qwen.
    assert body == {"spec": {
        "version": 1, "name": "chat-1", "region": "nyc2", "vpc": {"uuid": PLACEHOLDER_VPC}, "enable_public_endpoint": True,
        "model_deployments": [{"model_slug": "qwen/qwen2.5-7b-instruct", "model_provider": "hugging_face", "workload_config": {},
                               "accelerators": [{"scale": 1, "type": "prefill_decode", "accelerator_slug": H100}]}],
    }}


@pytest.mark.parametrize(
    ("flags", "model", "accelerator", "region"),
    [
        (SpecFlags(name="n", model="meta-llama/llama-3.1-8b-instruct"), "meta-llama/llama-3.1-8b-instruct", H100, "nyc2"),
        (SpecFlags(name="n", model="meta-llama/llama-3.1-8b-instruct", region="tor1"), "meta-llama/llama-3.1-8b-instruct", L40S, "tor1"),
        (SpecFlags(name="n", model="meta-llama/llama-3.1-8b-instruct", accelerator=H100), "meta-llama/llama-3.1-8b-instruct", H100, "nyc2"),
        # the default model is one that runs on what was given, not one the API would refuse there
        (SpecFlags(name="n", accelerator=L40S), "meta-llama/llama-3.1-8b-instruct", L40S, "nyc2"),
        (SpecFlags(name="n", region="tor1"), "meta-llama/llama-3.1-8b-instruct", L40S, "tor1"),
    ],
)
def test_create_fills_in_what_is_left_out_to_fit_what_is_given(flags: SpecFlags, model: str, accelerator: str, region: str) -> None:
    spec = create_body(flags, MODELS, SIZES)["spec"]
    deployment = spec["model_deployments"][0]
    assert (deployment["model_slug"], deployment["accelerators"][0]["accelerator_slug"], spec["region"]) == (model, accelerator, region)


def test_create_sends_given_values_as_given_for_the_api_to_judge() -> None:
    flags = SpecFlags(name="n", model="no/such-model", accelerator="gpu-b200x8", scale=0, region="mars", public=False, vpc="not-a-uuid")
    spec = create_body(flags, MODELS, SIZES)["spec"]
    assert spec["region"] == "mars" and spec["vpc"] == {"uuid": "not-a-uuid"} and spec["enable_public_endpoint"] is False
    assert spec["model_deployments"][0]["model_slug"] == "no/such-model"
    assert spec["model_deployments"][0]["accelerators"] == [{"scale": 0, "type": "prefill_decode", "accelerator_slug": "gpu-b200x8"}]


def test_create_without_sizes_falls_back_to_the_models_accelerator_and_an_enabled_region() -> None:
    spec = create_body(SpecFlags(name="n"), MODELS, {"enabled_regions": ["atl1"], "sizes": []})["spec"]
    assert spec["region"] == "atl1"
    assert spec["model_deployments"][0]["model_slug"] == "deepseek/r1-70b"  # nothing runs: the first one offered
    assert spec["model_deployments"][0]["accelerators"][0]["accelerator_slug"] == MI300


@pytest.mark.parametrize(
    ("flags", "models", "sizes", "names"),
    [
        (SpecFlags(), MODELS, SIZES, "--name"),
        (SpecFlags(name=""), MODELS, SIZES, "--name"),
        (SpecFlags(name="n"), [], SIZES, "--model"),
        (SpecFlags(name="n", model="x/y"), [], {"enabled_regions": ["nyc2"], "sizes": []}, "--accelerator"),
        (SpecFlags(name="n"), MODELS, {"enabled_regions": [], "sizes": []}, "--region"),
    ],
)
def test_create_says_which_flag_is_missing(flags: SpecFlags, models: list[dict[str, Any]], sizes: dict[str, Any], names: str) -> None:
    with pytest.raises(SpecError, match=names):
        create_body(flags, models, sizes)


def test_gated_models_are_recognised_in_any_body() -> None:
    assert spec_input.is_gated(MODELS, create_body(SpecFlags(name="n", accelerator=L40S), MODELS, SIZES))
    assert not spec_input.is_gated(MODELS, create_body(SpecFlags(name="n"), MODELS, SIZES))
    for odd in ({}, {"spec": None}, {"spec": "x"}, {"spec": [1]}, {"spec": {"model_deployments": 3}}, {"spec": {"model_deployments": ["x"]}}):
        assert spec_input.is_gated(MODELS, odd) is False  # the API, not a traceback, says what is wrong


# -- spec files --------------------------------------------------------------------------------
SPEC_YAML = f"""\
version: 1
name: chat-2
region: atl1
vpc: {{uuid: {VPC}}}
enable_public_endpoint: false
model_deployments:
  - model_slug: huggingfacetb/smollm2-135m-instruct
    model_provider: hugging_face
    accelerators: [{{scale: 1, type: prefill_decode, accelerator_slug: cpu-slot-2gb}}]
"""


def test_a_yaml_file_with_just_the_spec_becomes_a_request_body() -> None:
    body = as_body(parse_document(SPEC_YAML, "chat.yaml"))
    assert list(body) == ["spec"] and body["spec"]["name"] == "chat-2" and body["spec"]["enable_public_endpoint"] is False
    assert body["spec"]["model_deployments"][0]["accelerators"] == [{"scale": 1, "type": "prefill_decode", "accelerator_slug": "cpu-slot-2gb"}]


@pytest.mark.parametrize(
    "document",
    [
        {"spec": {"name": "chat-2b"}},
        {"spec": {"name": "chat-2b"}, "access_tokens": {"hugging_face_token": "hf_x"}},
        {"access_tokens": {"hugging_face_token": "hf_x"}},  # a PATCH that only sets a new token
    ],
)
def test_a_json_file_with_the_whole_body_is_sent_as_it_is(document: dict[str, Any]) -> None:
    assert as_body(parse_document(json.dumps(document), "patch.json")) == document


def test_the_body_is_a_copy_of_the_file() -> None:
    document = parse_document(SPEC_YAML)
    body = as_body(document)
    body["spec"]["model_deployments"][0]["accelerators"][0]["scale"] = 9
    assert document["model_deployments"][0]["accelerators"][0]["scale"] == 1


def test_any_json_is_read_as_json() -> None:
    tabs = json.dumps({"spec": {"name": "n", "model_deployments": [{"accelerators": [{"scale": 2}]}]}}, indent="\t")
    assert parse_document(tabs, "tabs.json")["spec"]["model_deployments"][0]["accelerators"][0]["scale"] == 2
    assert parse_document('{"version": 1e0}')["version"] == 1.0  # a number, as JSON says (YAML 1.1 would keep '1e0')


def test_yaml_values_stay_json_values() -> None:
    """YAML reads some plain scalars as dates; a body must still be JSON, with the text sent as written."""
    body = as_body(parse_document("name: 2026-01-05\nregion: 2026-01-05 10:00:00\n"))
    assert body == {"spec": {"name": "2026-01-05", "region": "2026-01-05 10:00:00"}}
    assert json.loads(json.dumps(body)) == body


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: chat\n  region: atl1\n", r"^chat\.yaml is neither JSON nor YAML: line 2, column 9: mapping values are not allowed here$"),
        ('{"spec": {"name": "x",}', r"^chat\.yaml is neither JSON nor YAML: line 1, column \d+: "),
        ("- name: chat\n", r"^chat\.yaml must hold a mapping"),
        ("just words", r"^chat\.yaml must hold a mapping"),
        ("", r"^chat\.yaml must hold a mapping"),
    ],
)
def test_a_bad_file_is_one_line_naming_the_file(text: str, expected: str) -> None:
    with pytest.raises(SpecError, match=expected) as raised:
        parse_document(text, "chat.yaml")
    assert "\n" not in str(raised.value)


# -- update from flags -------------------------------------------------------------------------
def test_update_with_only_a_name_or_public_leaves_the_deployments_alone() -> None:
    assert patch_body(SpecFlags(name="chat-9"), None) == {"spec": {"name": "chat-9"}}
    assert patch_body(SpecFlags(public=False), None) == {"spec": {"enable_public_endpoint": False}}


def test_update_scale_resends_the_deployment_with_only_the_scale_changed() -> None:
    instance = _instance(_deployment(QWEN_ID, "qwen/qwen2.5-7b-instruct", ONE_H100))
    before = copy.deepcopy(instance)
    body = patch_body(SpecFlags(scale=3), instance)
    assert body == {"spec": {"model_deployments": [{
        "model_id": QWEN_ID, "model_slug": "qwen/qwen2.5-7b-instruct", "model_provider": "hugging_face",
        "workload_config": {"max_model_len": 4096},
        "accelerators": [{"accelerator_slug": H100, "scale": 3, "type": "prefill_decode"}],  # read-only status dropped
    }]}}
    assert instance == before


def test_update_applies_to_the_spec_being_rolled_out() -> None:
    pending = [_deployment(QWEN_ID, "qwen/qwen2.5-7b-instruct", [{"accelerator_slug": H100, "scale": 2, "type": "prefill_decode"}])]
    instance = _instance(_deployment(QWEN_ID, "qwen/qwen2.5-7b-instruct", ONE_H100), pending=pending)
    accelerators = patch_body(SpecFlags(accelerator=L40S), instance)["spec"]["model_deployments"][0]["accelerators"]
    assert accelerators == [{"accelerator_slug": L40S, "scale": 2, "type": "prefill_decode"}]


def test_update_to_another_model_is_a_new_deployment() -> None:
    instance = _instance(_deployment(QWEN_ID, "qwen/qwen2.5-7b-instruct", ONE_H100))
    [deployment] = patch_body(SpecFlags(model="meta-llama/llama-3.1-8b-instruct", name="chat-l"), instance)["spec"]["model_deployments"]
    assert "model_id" not in deployment and deployment["model_slug"] == "meta-llama/llama-3.1-8b-instruct"
    same = patch_body(SpecFlags(model="qwen/qwen2.5-7b-instruct"), instance)["spec"]["model_deployments"][0]
    assert same["model_id"] == QWEN_ID


def test_update_of_a_model_on_two_accelerator_kinds() -> None:
    two = [{"accelerator_slug": H100, "scale": 1, "type": "prefill_decode"}, {"accelerator_slug": L40S, "scale": 2, "type": "prefill_decode"}]
    instance = _instance(_deployment(LLAMA_ID, "meta-llama/llama-3.1-8b-instruct", two))
    with pytest.raises(SpecError, match="2 accelerator entries.*--spec"):
        patch_body(SpecFlags(scale=4), instance)
    [deployment] = patch_body(SpecFlags(model="qwen/qwen2.5-7b-instruct"), instance)["spec"]["model_deployments"]
    assert deployment["accelerators"] == two


@pytest.mark.parametrize(
    ("flags", "deployments", "expected"),
    [
        (SpecFlags(region="tor1"), 1, "--region cannot change"),
        (SpecFlags(), 1, "nothing to change"),
        (SpecFlags(scale=2), 2, "2 model deployments.*--spec"),
        (SpecFlags(scale=2), 0, "0 model deployments"),
    ],
)
def test_update_refuses_what_flags_cannot_say(flags: SpecFlags, deployments: int, expected: str) -> None:
    models = [_deployment(QWEN_ID, "qwen/qwen2.5-7b-instruct", ONE_H100), _deployment(LLAMA_ID, "meta-llama/llama-3.1-8b-instruct", ONE_H100)]
    with pytest.raises(SpecError, match=expected):
        patch_body(flags, _instance(*models[:deployments]))


def test_update_of_deployments_needs_the_current_instance() -> None:
    with pytest.raises(ValueError, match="current instance"):
        patch_body(SpecFlags(scale=2), None)
