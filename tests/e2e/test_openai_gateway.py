"""The data plane through the official openai SDK: public and private endpoints, real engine."""

from __future__ import annotations

import base64
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from inferd.cli.client.chat import PinnedTransport
from tests.conftest import running_server
from tests.support import specs
from tests.support.replicas import engine_pid
from tests.support.server import REPO, Server, free_port
from tests.support.waiting import wait_for

MODEL = specs.MODEL


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(
        "sqlite", tmp_path_factory.mktemp("gateway") / "inferd", controller=True, gateway=True,
        INFERD_RATE_LIMIT_PER_MINUTE="100000", INFERD_RATE_LIMIT_PER_HOUR="1000000",
        INFERD_METRICS_PORT=str(free_port()),
    ) as srv:
        srv.env["INFERD_GATEWAY_PUBLIC_PORT"] = str(srv.gateway_port)
        yield srv


def metrics_text(port: int | str) -> str:
    """The admin listener's Prometheus text (never on the public or private endpoints)."""
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text


def _create(server: Server, name: str, *, scale: int = 1, public: bool = True) -> dict[str, Any]:
    with server.client(server.admin_token) as api:
        created = api.post("/v2/dedicated-inferences", json=specs.create_body(name, scale=scale, public=public)).json()
        instance_id = created["dedicated_inference"]["id"]
        wait_for(
            lambda: api.get(f"/v2/dedicated-inferences/{instance_id}").json()["dedicated_inference"]["status"] == "active",
            timeout=90, what=f"{name} active",
        )
        instance = api.get(f"/v2/dedicated-inferences/{instance_id}").json()["dedicated_inference"]
        ca = base64.b64decode(api.get(f"/v2/dedicated-inferences/{instance_id}/ca").json()["cert"]).decode()
    return {"id": instance_id, "token": created["token"]["value"], "endpoints": instance["endpoints"], "ca": ca}


@pytest.fixture(scope="module")
def alpha(server: Server) -> dict[str, Any]:
    return _create(server, "alpha", scale=2)


@pytest.fixture(scope="module")
def beta(server: Server) -> dict[str, Any]:
    return _create(server, "beta")


def public_client(instance: dict[str, Any], token: str | None = None, **kwargs: Any) -> OpenAI:
    return OpenAI(base_url=instance["endpoints"]["public_endpoint_fqdn"] + "/v1", api_key=token or instance["token"], max_retries=0, **kwargs)


def private_client(instance: dict[str, Any], ca_pem: str, token: str | None = None) -> OpenAI:
    context = ssl.create_default_context(cadata=ca_pem)
    # *.localhost goes to 127.0.0.1 with the name kept for SNI and the certificate check
    http = httpx.Client(transport=PinnedTransport({}, verify=context), timeout=60)
    return OpenAI(base_url=instance["endpoints"]["private_endpoint_fqdn"] + "/v1", api_key=token or instance["token"],
                  http_client=http, max_retries=0)  # type: ignore[arg-type]  # typed as httpx2.Client; httpx.Client works


def test_the_first_request_after_active_is_served(server: Server) -> None:
    """No waiting after the API says ``active``: the gateway serves the very next request."""
    for round_ in range(3):
        instance = _create(server, f"first-{round_}")
        try:
            answer = public_client(instance).chat.completions.create(  # no retries
                model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
            )
            assert answer.choices[0].message.content is not None
        finally:
            with server.client(server.admin_token) as api:
                api.delete(f"/v2/dedicated-inferences/{instance['id']}")


def test_public_endpoint_with_the_openai_sdk(server: Server, alpha: dict[str, Any]) -> None:
    client = public_client(alpha)
    assert [m.id for m in client.models.list().data] == [MODEL]
    answer = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Name a fruit."}], max_tokens=12)
    assert answer.choices[0].message.content and answer.usage and answer.usage.completion_tokens > 0
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Count to five."}], max_tokens=16, stream=True,
    ))
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 2
    legacy = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8)
    assert legacy.choices[0].text
    streamed_legacy = list(client.completions.create(model=MODEL, prompt="The sky is", max_tokens=6, stream=True))
    assert any(c.choices and c.choices[0].text for c in streamed_legacy)


def test_private_endpoint_tls_trusts_only_the_instance_ca(alpha: dict[str, Any], beta: dict[str, Any]) -> None:
    own = private_client(alpha, alpha["ca"])
    answer = own.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=6)
    assert answer.choices[0].message.content is not None
    stream = list(own.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=6, stream=True))
    assert stream
    with pytest.raises(openai.APIConnectionError) as caught:
        private_client(alpha, beta["ca"]).models.list()  # another instance's CA
    assert "CERTIFICATE_VERIFY_FAILED" in repr(caught.value.__cause__) or "certificate" in repr(caught.value.__cause__).lower()


def test_tokens_are_per_instance(server: Server, alpha: dict[str, Any], beta: dict[str, Any]) -> None:
    for token in (beta["token"], server.admin_token, "di_" + "0" * 48, "not-a-token"):
        with pytest.raises(openai.AuthenticationError):
            public_client(alpha, token).models.list()
    response = httpx.get(alpha["endpoints"]["public_endpoint_fqdn"] + "/v1/models")
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


def test_revoked_token_is_refused_within_a_second(server: Server, alpha: dict[str, Any]) -> None:
    with server.client(server.admin_token) as api:
        token = api.post(f"/v2/dedicated-inferences/{alpha['id']}/tokens", json={"name": "short-lived"}).json()["token"]
        wait_for(lambda: httpx.get(alpha["endpoints"]["public_endpoint_fqdn"] + "/v1/models",
                                   headers={"Authorization": f"Bearer {token['value']}"}).status_code == 200, timeout=5, what="new token")
        revoked_at = time.monotonic()
        assert api.delete(f"/v2/dedicated-inferences/{alpha['id']}/tokens/{token['id']}").status_code == 204
    wait_for(lambda: httpx.get(alpha["endpoints"]["public_endpoint_fqdn"] + "/v1/models",
                               headers={"Authorization": f"Bearer {token['value']}"}).status_code == 401,
             timeout=1.0, interval=0.05, what="revocation")
    assert time.monotonic() - revoked_at < 1.0


def test_public_endpoint_can_be_disabled(server: Server) -> None:
    hidden = _create(server, "hidden", public=False)
    assert "public_endpoint_fqdn" not in hidden["endpoints"]
    url = f"http://127.0.0.1:{server.gateway_port}/{hidden['id']}/v1/models"
    refused = httpx.get(url, headers={"Authorization": f"Bearer {hidden['token']}"})
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "permission_error"
    assert [m.id for m in private_client(hidden, hidden["ca"]).models.list().data] == [MODEL]
    with server.client(server.admin_token) as api:
        api.delete(f"/v2/dedicated-inferences/{hidden['id']}")


def test_errors_in_the_openai_shape(server: Server, alpha: dict[str, Any]) -> None:
    client = public_client(alpha)
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.code == "model_not_found"
    url = alpha["endpoints"]["public_endpoint_fqdn"] + "/v1/chat/completions"
    headers = {"Authorization": f"Bearer {alpha['token']}"}
    too_big = httpx.post(url, headers=headers, content=b'{"model": "' + b"x" * (5 * 1024 * 1024) + b'"}')
    assert too_big.status_code == 413 and "error" in too_big.json()
    assert httpx.post(url, headers=headers, content=b"{not json").status_code == 400
    assert httpx.get(alpha["endpoints"]["public_endpoint_fqdn"] + "/v1/embeddings", headers=headers).status_code == 404


def test_metrics(server: Server, alpha: dict[str, Any]) -> None:
    public_client(alpha).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
    text = metrics_text(server.env["INFERD_METRICS_PORT"])
    for name in ("inferd_gateway_requests_total", "inferd_gateway_ttft_seconds_bucket",
                 "inferd_gateway_request_seconds_bucket", "inferd_gateway_prompt_tokens_total",
                 "inferd_gateway_completion_tokens_total"):
        assert f'{name}{{' in text and alpha["id"] in text, name


def test_client_disconnect_cancels_the_upstream_request(server: Server, beta: dict[str, Any]) -> None:
    """A 4000-token generation (~30 s here) must end within seconds of the client leaving:
    llama.cpp adds a request's tokens to ``tokens_predicted_total`` when the request ends."""
    replica = json.loads(server.cli("replicas", beta["id"], "--json"))["replicas"][0]["endpoint"]

    def predicted() -> int:
        metrics = httpx.get(f"{replica}/metrics").text
        return int(float(next(line.split()[-1] for line in metrics.splitlines() if line.startswith("llamacpp:tokens_predicted_total"))))

    before = predicted()
    url = beta["endpoints"]["public_endpoint_fqdn"] + "/v1/chat/completions"
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Write a very long story."}],
            "max_tokens": 4000, "stream": True, "ignore_eos": True}  # llama.cpp: generate all 4000 tokens
    with httpx.stream("POST", url, json=body, headers={"Authorization": f"Bearer {beta['token']}"}, timeout=30) as response:
        lines = response.iter_lines()
        for _ in range(20):
            next(lines)
    wait_for(lambda: predicted() > before, timeout=5, interval=0.1, what="the upstream request to end")
    assert 0 < predicted() - before < 1000


def test_killed_replica_under_load_fails_no_unstarted_request(server: Server, alpha: dict[str, Any]) -> None:
    listed = json.loads(server.cli("replicas", alpha["id"], "--json"))["replicas"]
    pids = [engine_pid(r["handle"]) for r in listed]
    assert len(pids) == 2 and None not in pids, listed
    url = alpha["endpoints"]["public_endpoint_fqdn"] + "/v1/chat/completions"
    headers = {"Authorization": f"Bearer {alpha['token']}"}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Say something."}], "max_tokens": 24, "stream": True}
    unstarted_failures: list[str] = []
    mid_stream_failures: list[str] = []
    completed: list[int] = []
    stop = threading.Event()

    def worker() -> None:
        with httpx.Client(timeout=60) as client:
            while not stop.is_set():
                started = False
                try:
                    with client.stream("POST", url, json=body, headers=headers) as response:
                        if response.status_code != 200:
                            unstarted_failures.append(f"HTTP {response.status_code}: {response.read()!r}")
                            continue
                        for line in response.iter_lines():
                            started = started or line.startswith("data:")
                        completed.append(1)
                except httpx.HTTPError as exc:
                    (mid_stream_failures if started else unstarted_failures).append(repr(exc))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(completed) >= 6, timeout=60, what=f"steady load (failures: {unstarted_failures[:3]})")
        victim = pids[0]
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        before = len(completed)
        wait_for(lambda: len(completed) >= before + 12, timeout=60, what="load after the kill")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert unstarted_failures == [], unstarted_failures
    assert len(mid_stream_failures) <= 4  # only streams that were running on the killed replica


def test_gateway_serves_while_the_control_plane_is_down(tmp_path: Path) -> None:
    """API + controller in one process, the gateway in another: kill the first, keep serving."""
    with running_server("sqlite", tmp_path / "split", controller=True) as control:
        instance = _create_via(control)
        gateway_metrics = free_port()
        gateway = _start_gateway(control, gateway_metrics)
        try:
            public = f"http://127.0.0.1:{control.gateway_port}/{instance['id']}/v1"
            client = OpenAI(base_url=public, api_key=instance["token"], max_retries=0)
            wait_for(lambda: _answers(client), timeout=10, what="gateway serving")
            refreshed = wait_for(lambda: _route_refreshes(gateway_metrics), timeout=30, what="gateway metrics")
            control.stop(signal.SIGKILL)  # API and controller gone; replicas run on
            wait_for(lambda: _route_refreshes(gateway_metrics) >= refreshed + 3, timeout=30,
                     what="several route refreshes after the control plane died")
            for _ in range(3):
                assert _answers(client)
        finally:
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(timeout=30)
            control.start()  # come back and stop the replicas cleanly on exit


def _create_via(server: Server) -> dict[str, Any]:
    with server.client(server.admin_token) as api:
        created = api.post("/v2/dedicated-inferences", json=specs.create_body("split")).json()
        instance_id = created["dedicated_inference"]["id"]
        wait_for(lambda: api.get(f"/v2/dedicated-inferences/{instance_id}").json()["dedicated_inference"]["status"] == "active",
                 timeout=90, what="active")
    return {"id": instance_id, "token": created["token"]["value"]}


def _start_gateway(server: Server, metrics_port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "INFERD_GATEWAY_PUBLIC_PORT": str(server.gateway_port),
           "INFERD_GATEWAY_PRIVATE_PORT": str(server.private_port), "INFERD_METRICS_PORT": str(metrics_port)}
    log = open(server.data_dir / "gateway.log", "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "inferd", "gateway", "--data-dir", str(server.data_dir), "--database-url", server.database_url],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )


def _route_refreshes(metrics_port: int) -> float:
    """Full route-table reloads of a gateway so far (successful or not)."""
    try:
        text = metrics_text(metrics_port)
    except httpx.HTTPError:
        return 0.0
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("inferd_gateway_route_refreshes_total{"))


def _answers(client: OpenAI) -> bool:
    try:
        answer = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
    except openai.APIError:
        return False
    return answer.choices[0].message.content is not None
