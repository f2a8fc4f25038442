"""Create/update/delete record desired state; statuses and versions as documented."""

from __future__ import annotations

import base64
import uuid

from cryptography import x509
from sqlalchemy import create_engine, text

from tests.support import specs
from tests.support.server import Server


def test_create_shape_matches_reference(server: Server) -> None:
    with server.client(server.admin_token) as client:
        response = client.post("/v2/dedicated-inferences", json=specs.create_body("shape-check", public=False))
    assert response.status_code == 202
    body = response.json()
    instance, token = body["dedicated_inference"], body["token"]
    assert set(instance) == {"id", "region", "status", "vpc_uuid", "spec", "pending_deployment_spec", "endpoints", "created_at", "updated_at"}
    assert set(token) == {"id", "name", "created_at", "value"}
    uuid.UUID(instance["id"])
    assert instance["created_at"].endswith("Z") and len(instance["created_at"]) == 20
    assert instance["spec"]["model_deployments"][0]["model_id"]  # assigned by the server
    pending = instance["pending_deployment_spec"]
    assert set(pending) == {"id", "version", "name", "vpc", "enable_public_endpoint", "model_deployments", "status", "created_at", "updated_at"}
    assert instance["endpoints"] == {"private_endpoint_fqdn": f"https://{instance['id']}-private.inferd.localhost:8444"}


def test_update_bumps_version_and_keeps_model_ids(server: Server) -> None:
    with server.client(server.admin_token) as client:
        created = client.post("/v2/dedicated-inferences", json=specs.create_body("versioned")).json()["dedicated_inference"]
        model_id = created["spec"]["model_deployments"][0]["model_id"]
        base = f"/v2/dedicated-inferences/{created['id']}"
        deployment = {**created["spec"]["model_deployments"][0], "accelerators": [{"accelerator_slug": specs.SLUG, "scale": 2, "type": "prefill_decode"}]}
        second = client.patch(base, json={"spec": {"model_deployments": [deployment]}}).json()["dedicated_inference"]
        third = client.patch(base, json={"spec": {"name": "versioned-2"}, "access_tokens": {"hugging_face_token": "hf_x"}}).json()["dedicated_inference"]
        token_only = client.patch(base, json={"access_tokens": {"hugging_face_token": "hf_y"}}).json()["dedicated_inference"]
        shorthand = client.patch(base, json={"spec": {"model_deployments": [{"model_slug": specs.MODEL, "accelerator_slug": specs.SLUG, "node_count": 3}]}}).json()["dedicated_inference"]
    assert second["pending_deployment_spec"]["version"] == 2
    assert second["pending_deployment_spec"]["model_deployments"][0]["model_id"] == model_id
    assert second["pending_deployment_spec"]["model_deployments"][0]["accelerators"][0]["scale"] == 2
    assert third["pending_deployment_spec"]["version"] == 3 and third["pending_deployment_spec"]["name"] == "versioned-2"
    assert third["pending_deployment_spec"]["model_deployments"][0]["accelerators"][0]["scale"] == 2
    assert token_only["pending_deployment_spec"]["version"] == 3  # a new token is not a new spec
    assert shorthand["pending_deployment_spec"]["version"] == 4
    accelerators = shorthand["pending_deployment_spec"]["model_deployments"][0]["accelerators"]
    assert accelerators == [{"accelerator_slug": specs.SLUG, "scale": 3, "type": "prefill_decode"}]
    assert shorthand["status"] == "provisioning"  # nothing has ever run, so it is not "updating"


def test_delete_is_idempotent_and_blocks_changes(server: Server) -> None:
    with server.client(server.admin_token) as client:
        created = client.post("/v2/dedicated-inferences", json=specs.create_body("to-delete")).json()["dedicated_inference"]
        base = f"/v2/dedicated-inferences/{created['id']}"
        assert client.delete(base).status_code == 202
        assert client.delete(base).status_code == 202
        got = client.get(base).json()["dedicated_inference"]
        assert got["status"] == "deleting" and "pending_deployment_spec" not in got
        assert client.patch(base, json={"spec": {"name": "x"}}).status_code == 409
        assert client.post(base + "/tokens", json={"name": "late"}).status_code == 409
        # the name of an instance on its way out can be reused
        assert client.post("/v2/dedicated-inferences", json=specs.create_body("to-delete")).status_code == 202


def test_ca_is_a_real_ca_per_instance(server: Server) -> None:
    with server.client(server.admin_token) as client:
        ids = [client.post("/v2/dedicated-inferences", json=specs.create_body(f"ca-{i}")).json()["dedicated_inference"]["id"] for i in range(2)]
        certs = [x509.load_pem_x509_certificate(base64.b64decode(client.get(f"/v2/dedicated-inferences/{i}/ca").json()["cert"])) for i in ids]
    assert certs[0].fingerprint(certs[0].signature_hash_algorithm) != certs[1].fingerprint(certs[1].signature_hash_algorithm)  # type: ignore[arg-type]
    for cert in certs:
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        cert.verify_directly_issued_by(cert)


def test_secrets_are_not_stored_in_clear(server: Server) -> None:
    secret = "hf_" + uuid.uuid4().hex
    with server.client(server.admin_token) as client:
        created = client.post("/v2/dedicated-inferences", json={**specs.create_body("secretive"), "access_tokens": {"hugging_face_token": secret}}).json()
        client.post(f"/v2/dedicated-inferences/{created['dedicated_inference']['id']}/tokens", json={"name": "second"})
    assert secret not in str(created)
    engine = create_engine(server.database_url)
    with engine.connect() as connection:
        dump = " ".join(
            str(row) for table in ("instances", "deployments", "instance_tokens", "api_tokens")
            for row in connection.execute(text(f"SELECT * FROM {table}"))  # noqa: S608 - fixed names
        )
    engine.dispose()
    assert secret not in dump
    assert created["token"]["value"] not in dump
    assert server.admin_token not in dump
    assert "PRIVATE KEY" not in dump
    assert secret not in (server.log_path.read_text() if server.log_path else "")
