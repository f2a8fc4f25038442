"""What the console needs from the servers, through a real gateway and engine: an instance's
traffic counters on the API (``GET /v2/dedicated-inferences/{id}/metrics``) and cross-origin
access to the instance endpoints for a page's playground."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import running_server
from tests.support import specs
from tests.support.instances import create_active
from tests.support.server import Server, free_port
from tests.support.waiting import wait_for

ORIGIN = "https://console.example"
CHAT = {"model": specs.MODEL, "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 8}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(
        "sqlite", tmp_path_factory.mktemp("console-api") / "inferd", controller=True, gateway=True,
        INFERD_METRICS_PORT=str(free_port()),
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def instance(server: Server) -> dict[str, Any]:
    found, token = create_active(server, "console-api")
    return {"id": found["id"], "token": token["value"], "url": found["endpoints"]["public_endpoint_fqdn"]}


def test_preflight_grants_a_page_the_chat_endpoint(instance: dict[str, Any]) -> None:
    answer = httpx.options(
        f"{instance['url']}/v1/chat/completions",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"},
    )
    assert answer.status_code == 204
    assert answer.headers["access-control-allow-origin"] == "*"
    assert "POST" in answer.headers["access-control-allow-methods"]
    assert "authorization" in answer.headers["access-control-allow-headers"]


def test_answers_to_a_page_carry_the_grant_and_others_do_not(instance: dict[str, Any]) -> None:
    auth = {"Authorization": f"Bearer {instance['token']}"}
    with httpx.Client(timeout=60) as client:
        from_page = client.post(f"{instance['url']}/v1/chat/completions", json=CHAT, headers={**auth, "Origin": ORIGIN})
        with client.stream("POST", f"{instance['url']}/v1/chat/completions", json={**CHAT, "stream": True},
                           headers={**auth, "Origin": ORIGIN}) as streamed:
            events = [line for line in streamed.iter_lines() if line.startswith("data: ")]
        refused = client.post(f"{instance['url']}/v1/chat/completions", json=CHAT,
                              headers={"Authorization": "Bearer di_wrong", "Origin": ORIGIN})
        no_origin = client.post(f"{instance['url']}/v1/chat/completions", json=CHAT, headers=auth)
    assert from_page.status_code == 200 and from_page.headers["access-control-allow-origin"] == "*"
    assert streamed.headers["access-control-allow-origin"] == "*" and events[-1] == "data: [DONE]"
    # a page must be able to read why it was refused
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "*"
    assert no_origin.status_code == 200 and "access-control-allow-origin" not in no_origin.headers


def test_instance_metrics_count_its_traffic(server: Server, instance: dict[str, Any]) -> None:
    path = f"/v2/dedicated-inferences/{instance['id']}/metrics"
    with server.client(server.admin_token) as api:
        before = api.get(path).json()
        with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {instance['token']}"}) as client:
            assert client.post(f"{instance['url']}/v1/chat/completions", json=CHAT).status_code == 200
            assert client.post(f"{instance['url']}/v1/chat/completions", json={**CHAT, "stream": True}).status_code == 200

        def counted() -> dict[str, Any] | None:
            body: dict[str, Any] = api.get(path).json()
            return body if body["requests_total"] >= before["requests_total"] + 2 else None

        after = wait_for(counted, timeout=10, what="two more requests counted")
    assert after["available"] is True and after["dedicated_inference_id"] == instance["id"]
    assert after["sampled_at"] > before["sampled_at"]
    assert after["completion_tokens_total"] > before["completion_tokens_total"]
    assert after["prompt_tokens_total"] > before["prompt_tokens_total"]
    ttft = after["ttft_seconds"]
    assert ttft["count"] >= before["ttft_seconds"]["count"] + 2 and ttft["sum"] > 0
    assert ttft["buckets"][-1] == {"le": "+Inf", "count": ttft["count"]}
    assert after["errors_total"] == before["errors_total"]


def test_instance_metrics_are_the_teams_own(server: Server, instance: dict[str, Any]) -> None:
    path = f"/v2/dedicated-inferences/{instance['id']}/metrics"
    stranger = server.new_team(f"stranger-{server.port}")
    with server.client(stranger) as api:
        assert api.get(path).status_code == 404
    with server.client() as anonymous:
        assert anonymous.get(path).status_code == 401
    with server.client(server.admin_token) as api:
        assert api.get("/v2/dedicated-inferences/00000000-0000-4000-8000-000000000000/metrics").status_code == 404
        assert "/metrics" not in str(api.get("/v2/openapi.json").json()["paths"].keys())


def test_instance_metrics_say_when_the_gateway_cannot_be_read(tmp_path: Path) -> None:
    closed = free_port()
    with running_server("sqlite", tmp_path / "inferd", INFERD_GATEWAY_METRICS_URLS=f"http://127.0.0.1:{closed}/metrics") as srv:
        with srv.client(srv.admin_token) as api:
            instance_id = api.post("/v2/dedicated-inferences", json=specs.create_body("unread")).json()["dedicated_inference"]["id"]
            body = api.get(f"/v2/dedicated-inferences/{instance_id}/metrics").json()
    assert body["available"] is False
    assert f"127.0.0.1:{closed}" in body["message"] and "requests_total" not in body
