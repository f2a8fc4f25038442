"""Every Dedicated Inference operation through the official client, pydo, unmodified."""

from __future__ import annotations

import base64

import pytest
from azure.core.exceptions import HttpResponseError
from cryptography import x509

from tests.support import specs
from tests.support.server import Server


def test_every_operation_through_pydo(server: Server) -> None:
    client = server.pydo(server.new_team(f"pydo-{server.port}"))
    di = client.dedicated_inferences

    sizes = di.list_sizes()
    assert sizes["enabled_regions"] == [specs.REGION]
    assert {"gpu_slug": specs.SLUG, "region": specs.REGION, "price_per_hour": "0.00", "currency": "USD"} in sizes["sizes"]
    configs = di.get_gpu_model_config()["gpu_model_configs"]
    assert any(c["model_slug"] == specs.MODEL and specs.SLUG in c["gpu_slugs"] for c in configs)

    created = di.create(body={**specs.create_body("pydo-one", scale=2), "access_tokens": {"hugging_face_token": "hf_secret_value"}})
    instance = created["dedicated_inference"]
    first_token = created["token"]
    assert first_token["value"].startswith("di_")
    assert instance["status"] == "provisioning"  # nothing runs until a controller does it
    assert instance["spec"]["version"] == 1
    assert instance["pending_deployment_spec"]["status"] == "provisioning"
    assert instance["vpc_uuid"] == specs.VPC
    assert instance["id"] in instance["endpoints"]["public_endpoint_fqdn"]
    assert "hf_secret_value" not in str(created)
    instance_id = instance["id"]

    got = di.get(instance_id)["dedicated_inference"]
    assert got["id"] == instance_id and got["spec"]["name"] == "pydo-one"
    listed = di.list(region=specs.REGION, page=1, per_page=20)
    assert [i["id"] for i in listed["dedicated_inferences"]] == [instance_id]
    assert listed["meta"]["total"] == 1 and "first" in listed["links"]["pages"]

    patched = di.patch(instance_id, body={"spec": {"name": "pydo-renamed"}})["dedicated_inference"]
    assert patched["pending_deployment_spec"]["version"] == 2
    assert patched["pending_deployment_spec"]["name"] == "pydo-renamed"
    assert "token" not in patched

    accelerators = di.list_accelerators(instance_id, slug=specs.SLUG)
    assert accelerators["accelerators"] == [] and accelerators["meta"]["total"] == 0
    missing = di.get_accelerator(instance_id, "5b5c619c-359c-44ca-87e2-47e98170c02f")
    assert missing["id"] == "not_found"  # pydo hands 404 bodies back

    pem = base64.b64decode(di.get_ca(instance_id)["cert"])
    ca = x509.load_pem_x509_certificate(pem)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert instance_id in ca.subject.rfc4514_string()

    token = di.create_tokens(instance_id, body={"name": "second-token"})["token"]
    assert token["value"].startswith("di_") and token["name"] == "second-token"
    tokens = di.list_tokens(instance_id)
    assert {t["name"] for t in tokens["tokens"]} == {"default", "second-token"}
    assert all("value" not in t for t in tokens["tokens"])
    di.delete_tokens(instance_id, token["id"])
    assert [t["id"] for t in di.list_tokens(instance_id)["tokens"]] == [first_token["id"]]

    di.delete(instance_id)
    assert di.get(instance_id)["dedicated_inference"]["status"] == "deleting"


def test_pydo_sees_errors(server: Server) -> None:
    client = server.pydo(server.new_team(f"pydo-err-{server.port}"))
    with pytest.raises(HttpResponseError) as caught:
        client.dedicated_inferences.create(body=specs.create_body("x", scale=0))
    assert caught.value.status_code == 422
    assert client.dedicated_inferences.get("6b5c619c-359c-44ca-87e2-47e98170c01d")["id"] == "not_found"
    bad = server.pydo("dop_v1_" + "0" * 64)
    with pytest.raises(HttpResponseError) as caught:
        bad.dedicated_inferences.list()
    assert caught.value.status_code == 401
    gone = client.dedicated_inferences.delete_tokens(
        "6b5c619c-359c-44ca-87e2-47e98170c01d", "f11d4795-c1db-4ac3-9aa6-a0ea3c58877e"
    )
    assert gone["id"] == "not_found"
