"""Replica logs through a real ``inferd serve`` (local runtime): kept within
``INFERD_REPLICA_LOG_MAX_BYTES`` while the replicas run, readable with ``inferd logs``, and gone
with the instance (no directory left under ``<data_dir>/logs``)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from tests.conftest import running_server
from tests.support import specs
from tests.support.engine import requires_llama_server
from tests.support.replicas import chat, ready_urls, replicas
from tests.support.waiting import wait_for

CAP = 1024  # the smallest allowed: llama-server's start-up output (about 900 bytes) is rotated

pytestmark = requires_llama_server


def test_logs_are_capped_while_running_and_removed_with_the_instance(tmp_path: Path) -> None:
    env: dict[str, Any] = {"INFERD_REPLICA_LOG_MAX_BYTES": str(CAP), "INFERD_RATE_LIMIT_PER_MINUTE": "100000"}
    with running_server("sqlite", tmp_path / "inferd", controller=True, **env) as srv, srv.client(srv.admin_token) as api:
        response = api.post("/v2/dedicated-inferences", json=specs.create_body("logged", scale=2))
        assert response.status_code == 202, response.text
        instance_id = response.json()["dedicated_inference"]["id"]
        wait_for(lambda: api.get(f"/v2/dedicated-inferences/{instance_id}").json()["dedicated_inference"]["status"]
                 == "active", timeout=90, what="active")
        directory = srv.data_dir / "logs" / instance_id
        ids = [r["id"] for r in replicas(srv, instance_id)]
        for url in ready_urls(srv, instance_id):
            for _ in range(3):
                chat(url, specs.MODEL)

        def capped() -> bool:  # rotated by the controller's passes, both generations within the cap
            sizes = {p.name: p.stat().st_size for p in directory.iterdir()}
            return all(f"{i}.log.1" in sizes and sizes[f"{i}.log"] + sizes[f"{i}.log.1"] <= CAP for i in ids)

        wait_for(capped, timeout=10, what=f"logs within {CAP} bytes")
        assert sorted(p.name for p in directory.iterdir()) == sorted([f"{i}.log" for i in ids] + [f"{i}.log.1" for i in ids])
        shown = srv.cli("logs", instance_id, "--lines", "20")
        assert all(f"==> replica {i} <==" in shown for i in ids) and " I slot " in shown

        assert api.delete(f"/v2/dedicated-inferences/{instance_id}").status_code == 202
        wait_for(lambda: api.get(f"/v2/dedicated-inferences/{instance_id}").status_code == 404, timeout=60, what="gone")
        # the controller forgets the instance, then removes its logs in the same pass
        wait_for(lambda: not directory.exists(), timeout=10, what="the deleted instance's logs to go")
        assert replicas(srv, instance_id) == []


def test_a_log_left_behind_by_a_crash_is_swept_on_the_first_pass(tmp_path: Path) -> None:
    """The controller removes a replica's row, then its log: a crash in between leaves the log.
    The next controller's first pass removes logs whose replica no longer exists."""
    orphan = tmp_path / "inferd" / "logs" / str(uuid.uuid4()) / f"{uuid.uuid4()}.log"
    orphan.parent.mkdir(parents=True)
    orphan.write_text("llama-server output of a replica that no longer exists\n")
    with running_server("sqlite", tmp_path / "inferd", controller=True):
        wait_for(lambda: not orphan.parent.exists(), timeout=30, what="the orphaned log to be swept")
