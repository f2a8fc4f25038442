"""Bad input gets a clear 4xx with a DigitalOcean error body naming the field, never a 5xx."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest

from tests.support import specs
from tests.support.server import Server


def _spec(**changes: Any) -> dict[str, Any]:
    body = specs.spec("bad-input")
    body.update(changes)
    return body


def _deployment(**changes: Any) -> dict[str, Any]:
    deployment = copy.deepcopy(specs.spec()["model_deployments"][0])
    deployment.update(changes)
    return deployment


def _accelerator(**changes: Any) -> dict[str, Any]:
    acc = {"scale": 1, "type": "prefill_decode", "accelerator_slug": specs.SLUG}
    acc.update(changes)
    return acc


_WITHOUT = {k: {kk: vv for kk, vv in specs.spec("bad-input").items() if kk != k} for k in specs.spec()}

def _nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"k": value}
    return value


CREATE_CASES: list[tuple[str, Any, int, str, str]] = [
    # (case, body, status, error id, text the message must contain)
    ("no body fields", {}, 422, "unprocessable_entity", "spec"),
    ("spec not an object", {"spec": "x"}, 422, "unprocessable_entity", "spec"),
    ("body is a list", [1, 2], 422, "unprocessable_entity", "body"),
    *[(f"missing {f}", {"spec": _WITHOUT[f]}, 422, "unprocessable_entity", f"spec.{f}") for f in
      ("version", "name", "region", "vpc", "enable_public_endpoint", "model_deployments")],
    ("name with spaces", {"spec": _spec(name="has spaces")}, 422, "unprocessable_entity", "spec.name"),
    ("name too long", {"spec": _spec(name="a" * 256)}, 422, "unprocessable_entity", "spec.name"),
    ("name not a string", {"spec": _spec(name=12)}, 422, "unprocessable_entity", "spec.name"),
    ("version as string", {"spec": _spec(version="1")}, 422, "unprocessable_entity", "spec.version"),
    ("version zero", {"spec": _spec(version=0)}, 422, "unprocessable_entity", "spec.version"),
    ("public endpoint as string", {"spec": _spec(enable_public_endpoint="yes")}, 422, "unprocessable_entity", "spec.enable_public_endpoint"),
    ("unknown region", {"spec": _spec(region="mars1")}, 422, "unprocessable_entity", "spec.region"),
    ("vpc uuid malformed", {"spec": _spec(vpc={"uuid": "not-a-uuid"})}, 422, "unprocessable_entity", "spec.vpc.uuid"),
    ("vpc without uuid", {"spec": _spec(vpc={})}, 422, "unprocessable_entity", "spec.vpc.uuid"),
    ("no model deployments", {"spec": _spec(model_deployments=[])}, 422, "unprocessable_entity", "spec.model_deployments"),
    ("unknown model", {"spec": _spec(model_deployments=[_deployment(model_slug="acme/nope")])}, 422, "unprocessable_entity", "spec.model_deployments[0].model_slug"),
    ("unknown provider", {"spec": _spec(model_deployments=[_deployment(model_provider="civitai")])}, 422, "unprocessable_entity", "model_provider"),
    ("model_id on create", {"spec": _spec(model_deployments=[_deployment(model_id=str(uuid.uuid4()))])}, 422, "unprocessable_entity", "spec.model_deployments[0].model_id"),
    ("no accelerators", {"spec": _spec(model_deployments=[_deployment(accelerators=[])])}, 422, "unprocessable_entity", "accelerator"),
    ("unknown accelerator slug", {"spec": _spec(model_deployments=[_deployment(accelerators=[_accelerator(accelerator_slug="gpu-h100x8-640gb")])])}, 422, "unprocessable_entity", "accelerator_slug"),
    ("scale zero", {"spec": _spec(model_deployments=[_deployment(accelerators=[_accelerator(scale=0)])])}, 422, "unprocessable_entity", "accelerators[0].scale"),
    ("scale negative", {"spec": _spec(model_deployments=[_deployment(accelerators=[_accelerator(scale=-3)])])}, 422, "unprocessable_entity", "accelerators[0].scale"),
    ("scale as float", {"spec": _spec(model_deployments=[_deployment(accelerators=[_accelerator(scale=1.5)])])}, 422, "unprocessable_entity", "accelerators[0].scale"),
    ("scale beyond inventory", {"spec": _spec(model_deployments=[_deployment(accelerators=[_accelerator(scale=5)])])}, 422, "unprocessable_entity", "has 4"),
    ("unknown accelerator type", {"spec": _spec(model_deployments=[_deployment(accelerators=[_accelerator(type="decode_only")])])}, 422, "unprocessable_entity", "accelerators[0].type"),
    ("missing accelerator type", {"spec": _spec(model_deployments=[_deployment(accelerators=[{"scale": 1, "accelerator_slug": specs.SLUG}])])}, 422, "unprocessable_entity", "accelerators[0].type"),
    ("same model twice", {"spec": _spec(model_deployments=[_deployment(), _deployment()])}, 422, "unprocessable_entity", "deployed twice"),
    ("unknown top-level field", {"spec": specs.spec("x"), "color": "red"}, 422, "unprocessable_entity", "color"),
    ("access token not a string", {"spec": specs.spec("x"), "access_tokens": {"hugging_face_token": 5}}, 422, "unprocessable_entity", "access_tokens"),
    ("empty access token", {"spec": specs.spec("x"), "access_tokens": {"hugging_face_token": ""}}, 422, "unprocessable_entity", "access_tokens.hugging_face_token"),
    ("workload_config too large", {"spec": _spec(model_deployments=[_deployment(workload_config={"x": "a" * 20_000})])}, 422, "unprocessable_entity", "workload_config: Value error, 20008 bytes"),
    ("workload_config too deep", {"spec": _spec(model_deployments=[_deployment(workload_config=_nested(12))])}, 422, "unprocessable_entity", "workload_config: Value error, nested"),
    ("workload_config unknown key", {"spec": _spec(model_deployments=[_deployment(workload_config={"isl": 512})])}, 422, "unprocessable_entity", "spec.model_deployments[0].workload_config.isl: unknown key; allowed keys: context_length"),
    ("workload_config out of range", {"spec": _spec(model_deployments=[_deployment(workload_config={"max_concurrent_sequences": 0})])}, 422, "unprocessable_entity", "workload_config.max_concurrent_sequences: must be an integer from 1 to 256"),
    ("workload_config key the engine lacks", {"spec": _spec(model_deployments=[_deployment(workload_config={"dtype": "float16"})])}, 422, "unprocessable_entity", "workload_config.dtype: not supported by the llama.cpp engine"),
]


@pytest.mark.parametrize(("case", "body", "status", "error_id", "mentions"), CREATE_CASES, ids=[c[0] for c in CREATE_CASES])
def test_create_rejects(server: Server, case: str, body: Any, status: int, error_id: str, mentions: str) -> None:
    with server.client(server.admin_token) as client:
        response = client.post("/v2/dedicated-inferences", json=body)
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["id"] == error_id
    assert mentions in payload["message"]
    assert payload["request_id"] == response.headers["x-request-id"]


RAW_CASES = [
    ("malformed JSON", b'{"spec": {', 400, "bad_request"),
    ("empty body", b"", 422, "unprocessable_entity"),
    ("not JSON at all", b"spec=1", 400, "bad_request"),
]


@pytest.mark.parametrize(("case", "raw", "status", "error_id"), RAW_CASES, ids=[c[0] for c in RAW_CASES])
def test_create_rejects_raw(server: Server, case: str, raw: bytes, status: int, error_id: str) -> None:
    with server.client(server.admin_token) as client:
        response = client.post("/v2/dedicated-inferences", content=raw, headers={"content-type": "application/json"})
    assert (response.status_code, response.json()["id"]) == (status, error_id), response.text


def test_oversized_body_is_413(server: Server) -> None:
    body = specs.create_body("big")
    body["spec"]["model_deployments"][0]["workload_config"] = {"pad": "x" * (1024 * 1024 + 10)}
    with server.client(server.admin_token) as client:
        response = client.post("/v2/dedicated-inferences", json=body)
    assert response.status_code == 413 and response.json()["id"] == "request_entity_too_large"


def test_duplicate_name_within_team_is_409(server: Server) -> None:
    with server.client(server.admin_token) as client:
        assert client.post("/v2/dedicated-inferences", json=specs.create_body("dup-name")).status_code == 202
        again = client.post("/v2/dedicated-inferences", json=specs.create_body("dup-name"))
    assert again.status_code == 409 and again.json()["id"] == "conflict"
    assert "dup-name" in again.json()["message"]


@pytest.mark.parametrize(
    ("query", "field"),
    [("per_page=0", "per_page"), ("per_page=201", "per_page"), ("per_page=abc", "per_page"),
     ("page=0", "page"), ("page=-1", "page"), ("region=mars1", "region")],
)
def test_list_query_validation(server: Server, query: str, field: str) -> None:
    with server.client(server.admin_token) as client:
        response = client.get(f"/v2/dedicated-inferences?{query}")
    assert response.status_code == 422, response.text
    assert response.json()["message"].startswith(field)


def test_accelerator_slug_filter_validation(server: Server) -> None:
    with server.client(server.admin_token) as client:
        created = client.post("/v2/dedicated-inferences", json=specs.create_body("slug-filter")).json()
        instance_id = created["dedicated_inference"]["id"]
        bad = client.get(f"/v2/dedicated-inferences/{instance_id}/accelerators?slug=gpu-nope")
        good = client.get(f"/v2/dedicated-inferences/{instance_id}/accelerators?slug={specs.SLUG}")
    assert bad.status_code == 422 and bad.json()["message"].startswith("slug")
    assert good.status_code == 200


PATCH_CASES: list[tuple[str, Any, int, str]] = [
    ("empty patch", {}, 422, "body"),
    ("change region", {"spec": {"region": "nyc2"}}, 422, "spec.region"),
    ("change vpc", {"spec": {"vpc": {"uuid": str(uuid.uuid4())}}}, 422, "spec.vpc.uuid"),
    ("unknown model id", {"spec": {"model_deployments": [_deployment(model_id=str(uuid.uuid4()))]}}, 422, "model_id"),
    ("scale beyond inventory", {"spec": {"model_deployments": [_deployment(accelerators=[_accelerator(scale=99)])]}}, 422, "scale"),
    ("unknown access token kind", {"access_tokens": {"openai": "x"}}, 422, "access_tokens.openai"),
    ("bad name", {"spec": {"name": "no/slashes"}}, 422, "spec.name"),
    ("workload_config wrong type", {"spec": {"model_deployments": [_deployment(workload_config={"context_length": "long"})]}}, 422,
     "workload_config.context_length: must be an integer"),
]


@pytest.mark.parametrize(("case", "body", "status", "mentions"), PATCH_CASES, ids=[c[0] for c in PATCH_CASES])
def test_patch_rejects(server: Server, case: str, body: Any, status: int, mentions: str) -> None:
    with server.client(server.admin_token) as client:
        name = f"patch-{uuid.uuid4().hex[:8]}"
        instance_id = client.post("/v2/dedicated-inferences", json=specs.create_body(name)).json()["dedicated_inference"]["id"]
        response = client.patch(f"/v2/dedicated-inferences/{instance_id}", json=body)
    assert response.status_code == status, response.text
    assert mentions in response.json()["message"]


def test_patch_to_existing_name_is_409(server: Server) -> None:
    with server.client(server.admin_token) as client:
        client.post("/v2/dedicated-inferences", json=specs.create_body("taken-name"))
        other = client.post("/v2/dedicated-inferences", json=specs.create_body("free-name")).json()
        response = client.patch(f"/v2/dedicated-inferences/{other['dedicated_inference']['id']}", json={"spec": {"name": "taken-name"}})
    assert response.status_code == 409


@pytest.mark.parametrize("body", [{}, {"name": ""}, {"name": "has space"}, {"name": 3}, {"name": "a" * 256}, {"name": "x", "extra": 1}])
def test_token_create_rejects(server: Server, body: dict[str, Any]) -> None:
    with server.client(server.admin_token) as client:
        instance_id = client.post("/v2/dedicated-inferences", json=specs.create_body(f"tok-{uuid.uuid4().hex[:8]}")).json()["dedicated_inference"]["id"]
        response = client.post(f"/v2/dedicated-inferences/{instance_id}/tokens", json=body)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    "path",
    ["/v2/dedicated-inferences/not-a-uuid", "/v2/dedicated-inferences/6b5c619c-359c-44ca-87e2-47e98170c01d",
     "/v2/dedicated-inferences/6b5c619c-359c-44ca-87e2-47e98170c01d/ca",
     "/v2/dedicated-inferences/6b5c619c-359c-44ca-87e2-47e98170c01d/tokens",
     "/v2/dedicated-inferences/6b5c619c-359c-44ca-87e2-47e98170c01d/accelerators", "/v2/nothing-here"],
)
def test_unknown_resources_are_404(server: Server, path: str) -> None:
    with server.client(server.admin_token) as client:
        response = client.get(path)
    assert response.status_code == 404 and response.json()["id"] == "not_found"


def test_wrong_method_is_405_with_error_body(server: Server) -> None:
    with server.client(server.admin_token) as client:
        response = client.put("/v2/dedicated-inferences", json={})
    assert response.status_code == 405 and response.json()["id"] == "method_not_allowed"
