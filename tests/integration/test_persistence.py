"""Restarting the server loses nothing."""

from __future__ import annotations

import signal

from tests.support import specs
from tests.support.server import Server


def test_restart_keeps_everything(fresh_server: Server) -> None:
    token = fresh_server.new_team("persistent")
    with fresh_server.client(token) as client:
        created = client.post("/v2/dedicated-inferences", json={**specs.create_body("survivor"), "access_tokens": {"hugging_face_token": "hf_keep"}}).json()
        instance_id = created["dedicated_inference"]["id"]
        base = f"/v2/dedicated-inferences/{instance_id}"
        client.patch(base, json={"spec": {"name": "survivor-2"}})
        extra = client.post(base + "/tokens", json={"name": "extra"}).json()["token"]
        before = {
            "instance": client.get(base).json(),
            "tokens": client.get(base + "/tokens").json(),
            "ca": client.get(base + "/ca").json(),
            "list": client.get("/v2/dedicated-inferences").json()["meta"],
        }
    fresh_server.stop(signal.SIGKILL)  # no clean shutdown
    fresh_server.start()
    with fresh_server.client(token) as client:
        after = {
            "instance": client.get(base).json(),
            "tokens": client.get(base + "/tokens").json(),
            "ca": client.get(base + "/ca").json(),
            "list": client.get("/v2/dedicated-inferences").json()["meta"],
        }
        # secrets survive too: the sealed HF token still opens (a patch re-checks it)
        assert client.patch(base, json={"spec": {"enable_public_endpoint": False}}).status_code == 202
        assert client.delete(f"{base}/tokens/{extra['id']}").status_code == 204
    assert after == before
    assert after["instance"]["dedicated_inference"]["pending_deployment_spec"]["version"] == 2
