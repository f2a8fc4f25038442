"""The gateway's route table kept current by the store's change feed, against real ``inferd
serve`` processes (API and gateway, no controller, no model) on SQLite and PostgreSQL:

- a revoked ``di_`` token is refused by the gateway within 1 s of the DELETE answering, and a
  new token works at once (a targeted reload). The revocation comes by the feed, since a known
  token never triggers a reload: within the poll interval on SQLite, within milliseconds of the
  NOTIFY on PostgreSQL; the first refused request then waits for the targeted reload that an
  unknown token asks for (at most ``reload_interval`` after the previous one of the instance);
- the gateway learns of changes without reloading everything: full reloads stay as they were
  while the feed reloads what changed.

The instance's one "replica" is a stand-in model server (a row marked ready, as the controller
writes it), so that a valid token gets a quick 200 and an unknown one a 401.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import running_server
from tests.support import specs
from tests.support.rows import mark_replica_ready, stand_in_model_server
from tests.support.server import Server
from tests.support.waiting import wait_for

REVOCATION_BUDGET = 1.0
"""Seconds from the DELETE's answer to the gateway refusing the token."""


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory: Path = tmp_path_factory.mktemp(f"feed-{request.param}") / "inferd"
    with running_server(
        request.param, directory, controller=False, gateway=True,
        INFERD_RATE_LIMIT_PER_MINUTE="100000", INFERD_RATE_LIMIT_PER_HOUR="1000000",
        INFERD_GATEWAY_FULL_RELOAD_INTERVAL="3600",  # the backstop would blur what the feed does
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with stand_in_model_server() as url:
        yield url


def create(server: Server, name: str) -> dict[str, Any]:
    with server.client(server.admin_token) as api:
        response = api.post("/v2/dedicated-inferences", json=specs.create_body(name))
    assert response.status_code == 202, response.text
    created = response.json()
    return {"id": created["dedicated_inference"]["id"], "token": created["token"]["value"]}


def chat(server: Server, client: httpx.Client, instance_id: str, token: str) -> int:
    response = client.post(
        f"http://127.0.0.1:{server.gateway_port}/{instance_id}/v1/chat/completions",
        json={"model": specs.MODEL, "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {token}"},
    )
    return response.status_code


def counter(server: Server, name: str, labels: str = "") -> float:
    text = httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=30).text
    prefix = f"{name}{{{labels}}} " if labels else f"{name} "
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


def test_a_revoked_token_is_refused_within_a_second_and_a_new_one_works_at_once(server: Server, upstream: str) -> None:
    instance = create(server, "revoked")
    mark_replica_ready(server, instance["id"], upstream)
    with httpx.Client(timeout=30) as gateway, server.client(server.admin_token) as api:
        wait_for(lambda: chat(server, gateway, instance["id"], instance["token"]) == 200, timeout=30,
                 what="the gateway to serve the instance")
        latencies = []
        for round_ in range(3):
            issued = api.post(f"/v2/dedicated-inferences/{instance['id']}/tokens", json={"name": f"t{round_}"})
            assert issued.status_code == 202, issued.text
            token = issued.json()["token"]
            assert chat(server, gateway, instance["id"], token["value"]) == 200  # works at once
            revoked = api.delete(f"/v2/dedicated-inferences/{instance['id']}/tokens/{token['id']}")
            assert revoked.status_code == 204, revoked.text
            answered = time.monotonic()
            sent: list[float] = []

            def refused(value: str = token["value"], sent: list[float] = sent) -> bool:
                sent.append(time.monotonic())
                return chat(server, gateway, instance["id"], value) == 401

            wait_for(refused, timeout=10, interval=0.01, what="the gateway to refuse the revoked token")
            latencies.append((sent[-1] - answered, time.monotonic() - answered))
        assert chat(server, gateway, instance["id"], instance["token"]) == 200  # the others still work
    print("revocation: first refused request sent after / its 401 received after: "
          + ", ".join(f"{a * 1000:.0f}/{b * 1000:.0f} ms" for a, b in latencies))
    assert max(b for _, b in latencies) < REVOCATION_BUDGET, latencies


def test_changes_arrive_by_the_feed_without_full_reloads(server: Server) -> None:
    fulls = counter(server, "inferd_gateway_route_full_reloads_total", 'result="ok"')
    instances = counter(server, "inferd_gateway_route_feed_instances_total")
    created = create(server, "fed")
    wait_for(lambda: counter(server, "inferd_gateway_route_feed_instances_total") > instances, timeout=10,
             interval=0.05, what="the change feed to report the new instance")
    with httpx.Client(timeout=30) as gateway:
        assert chat(server, gateway, created["id"], created["token"]) == 503
    assert counter(server, "inferd_gateway_route_full_reloads_total", 'result="ok"') == fulls
    assert counter(server, "inferd_gateway_route_refreshes_total", 'result="ok"') > fulls  # cycles: polls
