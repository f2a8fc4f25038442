"""Racing writers on one instance: API requests against each other and against the controller.

Every write path must answer 202 or 409, never 500, on SQLite (where ``SELECT … FOR UPDATE``
does nothing) and on PostgreSQL; a DELETE always wins in the end.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import running_server
from tests.support import specs
from tests.support.engine import requires_llama_server
from tests.support.server import Server
from tests.support.waiting import wait_for

RAISED_LIMITS = {"INFERD_RATE_LIMIT_PER_MINUTE": "100000", "INFERD_RATE_LIMIT_PER_HOUR": "1000000"}


def patch_body(scale: int, name: str) -> dict[str, Any]:
    return {"spec": {"name": name, "model_deployments": [
        {"model_slug": specs.MODEL, "accelerator_slug": specs.SLUG, "node_count": scale}]}}


def race(server: Server, instance_id: str, patches: int = 8, delete: bool = True) -> Counter[int]:
    """``patches`` PATCHes (and a DELETE) released at the same instant; their status codes."""
    codes: Counter[int] = Counter()
    gate = threading.Barrier(patches + int(delete))
    url = f"/v2/dedicated-inferences/{instance_id}"

    def send(method: str, body: dict[str, Any] | None) -> None:
        with server.client(server.admin_token) as client:
            gate.wait()
            response = client.request(method, url, json=body)
            codes[response.status_code] += 1
            assert response.status_code in (202, 409), response.text

    threads = [threading.Thread(target=send, args=("PATCH", patch_body(1 + i % 2, f"race-{i}"))) for i in range(patches)]
    if delete:
        threads.append(threading.Thread(target=send, args=("DELETE", None)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return codes


@pytest.fixture
def api_server(backend: str, tmp_path: Path) -> Iterator[Server]:
    with running_server(backend, tmp_path / "inferd", **RAISED_LIMITS) as srv:
        yield srv


def test_concurrent_patches_never_500_and_versions_stay_distinct(api_server: Server) -> None:
    with api_server.client(api_server.admin_token) as api:
        instance_id = api.post("/v2/dedicated-inferences", json=specs.create_body("racy")).json()["dedicated_inference"]["id"]
        accepted = 0
        for _ in range(5):
            codes = race(api_server, instance_id, delete=False)
            assert set(codes) <= {202, 409} and codes[202] >= 1, codes
            accepted += codes[202]
        body = api.get(f"/v2/dedicated-inferences/{instance_id}").json()["dedicated_inference"]
    # every accepted PATCH made exactly one new spec version: none was lost or written twice
    assert body["pending_deployment_spec"]["version"] == 1 + accepted


def test_delete_wins_over_concurrent_patches(api_server: Server) -> None:
    with api_server.client(api_server.admin_token) as api:
        for round_ in range(5):
            created = api.post("/v2/dedicated-inferences", json=specs.create_body(f"doomed-{round_}"))
            instance_id = created.json()["dedicated_inference"]["id"]
            codes = race(api_server, instance_id)
            assert set(codes) <= {202, 409}, codes
            body = api.get(f"/v2/dedicated-inferences/{instance_id}").json()["dedicated_inference"]
            assert body["status"] == "deleting", body  # no PATCH overwrote the DELETE
            assert api.patch(f"/v2/dedicated-inferences/{instance_id}", json=patch_body(1, "late")).status_code == 409


@requires_llama_server
def test_patches_and_delete_racing_the_controller_converge(backend: str, tmp_path: Path) -> None:
    with running_server(backend, tmp_path / "inferd", controller=True, INFERD_DRAIN_SECONDS="0.5", **RAISED_LIMITS) as srv, \
            srv.client(srv.admin_token) as api:
        instance_id = api.post("/v2/dedicated-inferences", json=specs.create_body("live")).json()["dedicated_inference"]["id"]
        wait_for(lambda: api.get(f"/v2/dedicated-inferences/{instance_id}").json()["dedicated_inference"]["status"] == "active",
                 timeout=90, what="active")
        codes = race(srv, instance_id, delete=False)  # while the controller rolls the changes out
        assert set(codes) <= {202, 409}, codes
        codes = race(srv, instance_id)
        assert set(codes) <= {202, 409}, codes
        wait_for(lambda: api.get(f"/v2/dedicated-inferences/{instance_id}").status_code == 404, timeout=90,
                 what="the DELETE to win and the instance to go")
        assert "Traceback" not in (srv.log_path.read_text() if srv.log_path else "")
