"""Gateway bounds and retries against small real upstreams (no model needed): 413, 429, 503,
400 for JSON nested too deeply, and a replica that refuses connections is skipped without the
client noticing."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from inferd.domain.tokens import hash_token, new_instance_token
from inferd.gateway.proxy import Limits, create_gateway_app
from inferd.gateway.routes import InstanceRoutes, Snapshot, TokenRef, Upstream
from tests.support.server import free_port
from tests.support.waiting import wait_for

INSTANCE = "11111111-2222-4333-8444-555555555555"


class Static:
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot


async def slow_completion(request: Request) -> JSONResponse:
    await asyncio.sleep(float(request.query_params.get("delay", "0.5")))
    return JSONResponse({"choices": [{"message": {"content": "ok"}}], "usage": {"completion_tokens": 1}})


def serve(app: Any) -> tuple[str, uvicorn.Server]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    wait_for(lambda: server.started, timeout=10, what="server start")
    return f"http://127.0.0.1:{port}", server


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    url, server = serve(Starlette(routes=[Route("/v1/chat/completions", slow_completion, methods=["POST"])]))
    yield url
    server.should_exit = True


def gateway(upstreams: list[str], limits: Limits) -> tuple[str, str, uvicorn.Server]:
    token = new_instance_token()
    routes = InstanceRoutes(
        id=INSTANCE, public=True, models={"m": tuple(Upstream(f"r{i}", u) for i, u in enumerate(upstreams))}
    )
    app = create_gateway_app(Static(Snapshot(instances={INSTANCE: routes}, tokens={hash_token(token): TokenRef(INSTANCE, "t1")})), "public", limits)
    url, server = serve(app)
    return f"{url}/{INSTANCE}/v1/chat/completions", token, server


def post(url: str, token: str, **kwargs: object) -> httpx.Response:
    body = kwargs.pop("body", {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    return httpx.post(url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30, **kwargs)  # type: ignore[arg-type]


def test_per_instance_concurrency_is_429_and_gateway_capacity_503(upstream: str) -> None:
    url, token, server = gateway([upstream], Limits(max_in_flight_per_instance=2, max_in_flight=100))
    try:
        with ThreadPoolExecutor(4) as pool:
            codes = sorted(r.status_code for r in pool.map(lambda _: post(url, token), range(4)))
        assert codes == [200, 200, 429, 429]
    finally:
        server.should_exit = True
    url, token, server = gateway([upstream], Limits(max_in_flight_per_instance=100, max_in_flight=1))
    try:
        with ThreadPoolExecutor(3) as pool:
            responses = list(pool.map(lambda _: post(url, token), range(3)))
        assert sorted(r.status_code for r in responses) == [200, 503, 503]
        assert next(r for r in responses if r.status_code == 503).json()["error"]["code"] == "overloaded"
        assert post(url, token).status_code == 200  # counters are released afterwards
    finally:
        server.should_exit = True


def test_body_bound_is_413(upstream: str) -> None:
    url, token, server = gateway([upstream], Limits(max_body_bytes=2048))
    try:
        big = {"model": "m", "messages": [{"role": "user", "content": "x" * 4096}]}
        assert post(url, token, body=big).status_code == 413
        assert post(url, token).status_code == 200
    finally:
        server.should_exit = True


def test_refusing_replica_is_skipped(upstream: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    url, token, server = gateway([dead, upstream], Limits())
    try:
        started = time.monotonic()
        codes = [post(url, token).status_code for _ in range(6)]
        assert codes == [200] * 6
        assert time.monotonic() - started < 10
    finally:
        server.should_exit = True
    url, token, server = gateway([dead], Limits())
    try:
        response = post(url, token)
        assert response.status_code == 503 and response.json()["error"]["code"] == "no_replica"
    finally:
        server.should_exit = True


def test_deeply_nested_json_is_400_in_the_openai_shape(upstream: str) -> None:
    url, token, server = gateway([upstream], Limits())
    try:
        deep = b'{"model": "m", "messages": ' + b'{"a": ' * 3000 + b"1" + b"}" * 3000 + b"}"
        response = httpx.post(url, content=deep, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and "64" in error["message"]
        deep_array = b"[" * 100_000 + b"]" * 100_000
        response = httpx.post(url, content=deep_array, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert response.status_code == 400
        # 64 levels are fine, and brackets inside strings do not count
        nested = {"model": "m", "messages": [{"role": "user", "content": "[{" * 5000}], "x": 1}
        for _ in range(61):
            nested = {"model": "m", "messages": nested["messages"], "x": nested}
        assert post(url, token, body=nested).status_code == 200
        deeper = {"model": "m", "messages": nested["messages"], "x": nested}
        assert post(url, token, body=deeper).status_code == 400
    finally:
        server.should_exit = True


async def many_events(request: Request) -> StreamingResponse:
    """A stream far larger than any socket buffer: 2,000 numbered events of 4 KiB."""
    async def events() -> Any:
        for number in range(2000):
            yield f"data: {json.dumps({'n': number, 'pad': 'x' * 4096})}\n\n".encode()
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


def test_a_slow_reader_gets_every_event_in_order() -> None:
    """A client reading through a tiny receive buffer makes the gateway wait on its writes: the
    gateway then stops reading the replica and resumes when the client catches up, so nothing is
    lost, doubled or reordered."""
    upstream_url, upstream = serve(Starlette(routes=[Route("/v1/chat/completions", many_events, methods=["POST"])]))
    url, token, server = gateway([upstream_url], Limits())
    try:
        port = int(url.split(":")[2].split("/")[0])
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}).encode()
        head = (f"POST /{INSTANCE}/v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n"
                f"content-type: application/json\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(60)
            sock.connect(("127.0.0.1", port))
            sock.sendall(head + body)
            received = bytearray()
            while chunk := sock.recv(1024):
                received += chunk
        numbers = [json.loads(line[len(b"data: "):])["n"] for line in bytes(received).split(b"\n")
                   if line.startswith(b"data: {")]
        assert numbers == list(range(2000))
        assert b"data: [DONE]" in received
    finally:
        server.should_exit = True
        upstream.should_exit = True
