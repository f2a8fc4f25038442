"""Usage accounting and per-token limits through the gateway, on the real engine.

Usage counters must equal the engine's own ``usage`` (non-streamed answers, and streams with
and without ``stream_options.include_usage``, whose usage event the client sees only when it
asked); a token over its requests-per-minute limit gets 429 in OpenAI's shape with OpenAI's
``x-ratelimit-*`` headers; a request larger than the whole tokens-per-minute budget is refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import running_server
from tests.support import specs
from tests.support.instances import create_active
from tests.support.server import Server, free_port
from tests.support.waiting import wait_for

MODEL = specs.MODEL
GLOBAL_TPM = 100_000
MESSAGES = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(
        "sqlite", tmp_path_factory.mktemp("usage") / "inferd", controller=True, gateway=True,
        INFERD_METRICS_PORT=str(free_port()), INFERD_TOKEN_TPM=str(GLOBAL_TPM),
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def instance(server: Server) -> dict[str, Any]:
    found, token = create_active(server, "usage")
    return {"id": found["id"], "url": found["endpoints"]["public_endpoint_fqdn"] + "/v1", "token": token["value"], "token_id": token["id"]}


def post(instance: dict[str, Any], path: str, body: dict[str, Any], token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token or instance['token']}"}
    return httpx.post(instance["url"] + path, json=body, headers=headers, timeout=60)


def counted(server: Server, instance: dict[str, Any]) -> tuple[int, int]:
    """(prompt, completion) tokens the gateway counted for this instance's token."""
    text = httpx.get(f"http://127.0.0.1:{server.env['INFERD_METRICS_PORT']}/metrics", timeout=30).text

    def total(name: str) -> int:
        pattern = re.compile(rf'^{name}\{{(?P<labels>[^}}]*)\}} (?P<value>\S+)$', re.M)
        return sum(
            int(float(m.group("value"))) for m in pattern.finditer(text)
            if f'instance="{instance["id"]}"' in m.group("labels") and f'token="{instance["token_id"]}"' in m.group("labels")
        )

    return total("inferd_gateway_prompt_tokens_total"), total("inferd_gateway_completion_tokens_total")


def events(response: httpx.Response) -> list[dict[str, Any]]:
    lines = [line[len("data: "):] for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_usage_counters_follow_the_engines_usage(server: Server, instance: dict[str, Any]) -> None:
    before = counted(server, instance)
    answer = post(instance, "/chat/completions", {"model": MODEL, "messages": MESSAGES, "max_tokens": 8})
    assert answer.status_code == 200
    usage = answer.json()["usage"]
    prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
    assert prompt > 0 and completion > 0
    assert counted(server, instance) == (before[0] + prompt, before[1] + completion)

    # a stream that did not ask for usage: counted all the same, and the client sees no usage event
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 8, "stream": True, "ignore_eos": True}
    streamed = post(instance, "/chat/completions", body)
    assert streamed.status_code == 200
    chunks = events(streamed)
    assert chunks and all(chunk.get("usage") is None for chunk in chunks)
    assert all(chunk["choices"] for chunk in chunks)
    assert counted(server, instance) == (before[0] + 2 * prompt, before[1] + completion + 8)

    # a stream that asked: its usage event arrives, and is what was counted
    asked = post(instance, "/chat/completions", {**body, "stream_options": {"include_usage": True}})
    final = events(asked)[-1]
    assert final["choices"] == [] and final["usage"]["completion_tokens"] == 8
    assert final["usage"]["prompt_tokens"] == prompt
    assert counted(server, instance) == (before[0] + 3 * prompt, before[1] + completion + 16)


def test_completions_stream_is_counted_too(server: Server, instance: dict[str, Any]) -> None:
    before = counted(server, instance)
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 5, "stream": True, "ignore_eos": True}
    streamed = post(instance, "/completions", body)
    assert streamed.status_code == 200
    assert all(chunk.get("usage") is None for chunk in events(streamed))
    prompt, completion = counted(server, instance)
    assert prompt > before[0] and completion == before[1] + 5


def test_a_token_over_its_request_limit_gets_openais_429(server: Server, instance: dict[str, Any]) -> None:
    with server.client(server.admin_token) as api:
        created = api.post(f"/v2/dedicated-inferences/{instance['id']}/tokens", json={"name": "limited"})
        assert created.status_code in (200, 201, 202), created.text
        limited = created.json()["token"]["value"]
    server.cli("admin", "limits", instance["id"], "--rpm", "2")
    small = {"model": MODEL, "messages": MESSAGES, "max_tokens": 1}

    def limit_applied() -> httpx.Response | None:  # the change feed brings the new limit
        response = post(instance, "/chat/completions", small, token=limited)
        return response if response.headers.get("x-ratelimit-limit-requests") == "2" else None

    wait_for(limit_applied, timeout=10, interval=0.1, what="the instance's RPM limit at the gateway")
    refused = None
    for _ in range(3):
        response = post(instance, "/chat/completions", small, token=limited)
        if response.status_code == 429:
            refused = response
            break
        assert response.status_code == 200
    assert refused is not None, "no 429 within 3 requests over a limit of 2 per minute"
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests" and error["param"] is None
    assert "Limit 2" in error["message"]
    headers = refused.headers
    assert headers["x-ratelimit-limit-requests"] == "2" and headers["x-ratelimit-remaining-requests"] == "0"
    assert re.fullmatch(r"[0-9.hms]+", headers["x-ratelimit-reset-requests"])
    assert int(headers["retry-after"]) >= 1
    assert headers["x-ratelimit-limit-tokens"] == str(GLOBAL_TPM)
    # the instance's other token has a budget of its own
    assert post(instance, "/chat/completions", small).status_code == 200
    server.cli("admin", "limits", instance["id"], "--clear")


def test_success_carries_token_headers_and_too_large_is_refused(server: Server, instance: dict[str, Any]) -> None:
    ok = post(instance, "/chat/completions", {"model": MODEL, "messages": MESSAGES, "max_tokens": 4})
    assert ok.status_code == 200
    assert ok.headers["x-ratelimit-limit-tokens"] == str(GLOBAL_TPM)
    assert 0 < int(ok.headers["x-ratelimit-remaining-tokens"]) < GLOBAL_TPM
    too_large = post(instance, "/chat/completions", {"model": MODEL, "messages": MESSAGES, "max_tokens": GLOBAL_TPM + 1})
    assert too_large.status_code == 429
    error = too_large.json()["error"]
    assert error["type"] == "tokens" and error["code"] == "rate_limit_exceeded"
    assert "retry-after" not in too_large.headers  # waiting cannot help
