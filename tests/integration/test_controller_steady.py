"""A steady instance is skipped by the controller's passes (controller/steady.py), yet it reacts
at once, not at the 30 s backstop, to an update through the API, to its model server being
killed and to its deletion. A real ``inferd serve`` (API, controller, gateway) with real
llama-server replicas, on SQLite and PostgreSQL.

"Skipped" is what the controller says in its log (``N of N instances steady``, written when the
number changes); "at once" is within ``REACT`` seconds, a few passes of 0.5 s.
"""

from __future__ import annotations

import os
import re
import signal
import time
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

REACT = 5.0
"""Seconds from a change to the controller acting on it: ten passes, far from the 30 s full pass."""
STEADY = re.compile(r"(\d+) of (\d+) instances steady")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    with running_server(request.param, tmp_path / "inferd", controller=True, gateway=True, INFERD_DRAIN_SECONDS="1",
                        INFERD_RATE_LIMIT_PER_MINUTE="100000", INFERD_RATE_LIMIT_PER_HOUR="1000000") as srv:
        yield srv


class Log:
    """The server's log from a point on: has the controller said that every instance is steady?"""

    def __init__(self, server: Server) -> None:
        assert server.log_path is not None
        self.path = server.log_path
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size

    def all_steady(self, count: int) -> bool:
        found = STEADY.findall(self.path.read_text(errors="replace")[self.offset:])
        return bool(found) and found[-1] == (str(count), str(count))


def instance(api: httpx.Client, instance_id: str) -> dict[str, Any]:
    return dict(api.get(f"/v2/dedicated-inferences/{instance_id}").json()["dedicated_inference"])


def settled(server: Server, api: httpx.Client, log: Log, instance_id: str, scale: int) -> list[dict[str, Any]]:
    """Active with ``scale`` ready replicas, and skipped by the controller since; its replicas."""
    def ready() -> list[dict[str, Any]] | None:
        body = instance(api, instance_id)
        rows = replicas(server, instance_id)
        done = body["status"] == "active" and "pending_deployment_spec" not in body
        return rows if done and len(rows) == scale and all(r["status"] == "ready" for r in rows) else None

    rows = wait_for(ready, timeout=120, what=f"{instance_id} active with {scale} ready replicas")
    wait_for(lambda: log.all_steady(1), timeout=30, what="the controller to skip the steady instance")
    return rows


def chat(server: Server, instance_id: str, token: str) -> int:
    response = httpx.post(
        f"http://127.0.0.1:{server.gateway_port}/{instance_id}/v1/chat/completions", timeout=60,
        json={"model": specs.MODEL, "messages": [{"role": "user", "content": "Name one colour."}], "max_tokens": 4},
        headers={"Authorization": f"Bearer {token}"},
    )
    return response.status_code


def reacted(what: str, probe: Any) -> float:
    """Seconds until ``probe`` holds; fails past ``REACT``."""
    started = time.monotonic()
    wait_for(probe, timeout=REACT, interval=0.05, what=what)
    return time.monotonic() - started


def test_a_skipped_instance_reacts_at_once_to_update_kill_and_delete(server: Server) -> None:
    log = Log(server)
    timings: dict[str, float] = {}
    with server.client(server.admin_token) as api:
        created = api.post("/v2/dedicated-inferences", json=specs.create_body("steady"))
        assert created.status_code == 202, created.text
        iid, token = created.json()["dedicated_inference"]["id"], created.json()["token"]["value"]
        settled(server, api, log, iid, 1)
        assert chat(server, iid, token) == 200

        # an update through the API: the second replica appears within a few passes
        log.mark()
        deployment = instance(api, iid)["spec"]["model_deployments"][0]
        deployment["accelerators"][0]["scale"] = 2
        assert api.patch(f"/v2/dedicated-inferences/{iid}", json={"spec": {"model_deployments": [deployment]}}).status_code == 202
        timings["update"] = reacted("a second replica", lambda: len(replicas(server, iid)) == 2)
        rows = settled(server, api, log, iid, 2)

        # its model server killed: the runtime's report changes, the replica is restarted
        log.mark()
        victim = rows[0]
        pid = engine_pid(victim["handle"])
        assert pid is not None
        os.kill(pid, signal.SIGKILL)

        def restarted() -> bool:
            row = next(r for r in replicas(server, iid) if r["id"] == victim["id"])
            return bool(row["status"] != "ready" or row["restarts"] > victim["restarts"])

        timings["kill"] = reacted("the killed replica to be seen", restarted)
        rows = settled(server, api, log, iid, 2)
        assert next(r for r in rows if r["id"] == victim["id"])["restarts"] == victim["restarts"] + 1
        wait_for(lambda: chat(server, iid, token) == 200, timeout=30, what="the gateway to serve both replicas")

        # deleted: its replicas are stopped within a few passes, then it is gone with its processes
        pids = [engine_pid(r["handle"]) for r in rows]
        assert api.delete(f"/v2/dedicated-inferences/{iid}").status_code == 202
        timings["delete"] = reacted("its replicas to stop",
                                    lambda: all(r["status"] == "stopping" for r in replicas(server, iid)))
        wait_for(lambda: api.get(f"/v2/dedicated-inferences/{iid}").status_code == 404, timeout=60, what="deletion")
        wait_for(lambda: not any(p and process_exists(p) for p in pids), timeout=30, what="no model server left")
    print("reaction of a skipped instance, s: " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))
