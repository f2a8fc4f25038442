"""Gateway and listener hardening (issue 8), against real ``inferd serve`` processes (API and
gateway, no controller, no model):

- ``active`` means served: with the periodic route refresh turned off, so that only targeted
  reloads can make the gateway see a change, a replica marked ready is routed on the very next
  request (SQLite and PostgreSQL);
- specs (immutable) are read once by the route table, not on every refresh (both databases);
- ``/metrics`` lives on its own admin listener, not on the public or private endpoints;
- slow clients (half a request line, headers then half a body, no TLS handshake) are dropped
  within short test-configured timeouts on every listener while normal clients are served; a
  connection cap holds.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from inferd.cli.bootstrap import build_state, gateway_listeners
from inferd.config import Settings
from inferd.pki import ensure_local_tls
from tests.conftest import running_server
from tests.support import specs
from tests.support.rows import mark_replica_ready, stand_in_model_server
from tests.support.server import Server, free_port
from tests.support.waiting import wait_for

TIMEOUT = 2.0
"""Header, body and keep-alive timeout of every listener of the test server."""
MARGIN = 6.0
"""Slack for a loaded 2-core machine: a stalled connection must be gone by TIMEOUT + MARGIN."""
METRICS_TOKEN = "metrics-" + uuid.uuid4().hex


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose gateway never refreshes its routes on its own."""
    metrics_port = free_port()
    with running_server(
        request.param, tmp_path_factory.mktemp(f"hardening-{request.param}") / "inferd",
        controller=False, gateway=True,
        INFERD_GATEWAY_REFRESH_INTERVAL="3600",  # only targeted reloads can show a change
        INFERD_METRICS_PORT=str(metrics_port),
        INFERD_RATE_LIMIT_PER_MINUTE="100000", INFERD_RATE_LIMIT_PER_HOUR="1000000",
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def listeners(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with short connection timeouts and a metrics token."""
    metrics_port = free_port()
    with running_server(
        "sqlite", tmp_path_factory.mktemp("listeners") / "inferd", controller=False, gateway=True,
        INFERD_HTTP_HEADER_TIMEOUT=str(TIMEOUT), INFERD_HTTP_BODY_TIMEOUT=str(TIMEOUT),
        INFERD_HTTP_KEEP_ALIVE_TIMEOUT=str(TIMEOUT),
        INFERD_METRICS_PORT=str(metrics_port), INFERD_METRICS_TOKEN=METRICS_TOKEN,
        INFERD_RATE_LIMIT_PER_MINUTE="100000", INFERD_RATE_LIMIT_PER_HOUR="1000000",
    ) as srv:
        srv.env["INFERD_METRICS_PORT"] = str(metrics_port)
        yield srv


def metrics_url(server: Server) -> str:
    return f"http://127.0.0.1:{server.env['INFERD_METRICS_PORT']}/metrics"


def create(server: Server, name: str) -> dict[str, Any]:
    with server.client(server.admin_token) as api:
        response = api.post("/v2/dedicated-inferences", json=specs.create_body(name))
    assert response.status_code == 202, response.text
    created = response.json()
    return {"id": created["dedicated_inference"]["id"], "token": created["token"]["value"]}


@pytest.fixture(scope="module")
def instance(listeners: Server) -> dict[str, Any]:
    """An instance (never served: no controller) that the listeners' gateway knows."""
    created = create(listeners, "hardening")
    wait_for(lambda: chat(listeners, created).status_code == 503, timeout=30, what="the gateway to know the instance")
    return created


def chat_url(server: Server, instance_id: str) -> str:
    return f"http://127.0.0.1:{server.gateway_port}/{instance_id}/v1/chat/completions"


def chat(server: Server, instance: dict[str, Any], token: str | None = None) -> httpx.Response:
    body = {"model": specs.MODEL, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {token or instance['token']}"}
    return httpx.post(chat_url(server, instance["id"]), json=body, headers=headers, timeout=30)


# -- a stand-in model server ------------------------------------------------------------------
@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with stand_in_model_server() as url:
        yield url


# -- 2. 'active' means served -----------------------------------------------------------------
def test_a_new_instance_token_and_replica_are_routed_on_the_next_request(server: Server, upstream: str) -> None:
    fresh = create(server, "routed-at-once")
    # the periodic refresh is off: the gateway learns of the instance from this very request
    waiting = chat(server, fresh)
    assert waiting.status_code == 503 and waiting.json()["error"]["code"] == "no_replica", waiting.text
    mark_replica_ready(server, fresh["id"], upstream)
    first = chat(server, fresh)
    assert first.status_code == 200, first.text
    assert first.json()["choices"][0]["message"]["content"] == "ok"
    with server.client(server.admin_token) as api:
        token = api.post(f"/v2/dedicated-inferences/{fresh['id']}/tokens", json={"name": "second"}).json()["token"]
    assert chat(server, fresh, token["value"]).status_code == 200  # a new token works at once too
    assert chat(server, fresh, "di_" + "0" * 48).status_code == 401


def test_targeted_reloads_are_coalesced_and_rate_limited() -> None:
    """Many requests for one instance share a load; loads of one instance are spaced; a flood
    of unknown ids spends a bounded budget; and a caller never gets a load older than its ask."""
    from inferd.gateway.routes import InstanceLoad, InstanceRoutes, RouteTable, Snapshot

    calls: list[tuple[str, float]] = []

    def load(instance_id: str) -> InstanceLoad:
        calls.append((instance_id, time.monotonic()))
        time.sleep(0.01)
        return InstanceLoad(InstanceRoutes(id=instance_id, public=True, models={}), {})

    table = RouteTable(lambda: Snapshot(), 3600, instance_loader=load, reload_interval=0.2, reloads_per_second=20)
    known = str(uuid.uuid4())

    async def scenario() -> None:
        asked = time.monotonic()
        snapshots = await asyncio.gather(*(table.reload(known, asked) for _ in range(200)))
        assert all(known in s.instances for s in snapshots)
        assert len(calls) == 1 and calls[0][1] >= asked
        calls.clear()
        # one caller after another, for a second: loads at least 0.2 s apart, each after its ask
        started = time.monotonic()
        while time.monotonic() - started < 1.0:
            asked = time.monotonic()
            await table.reload(known, asked)
            assert calls[-1][1] >= asked
        assert 2 <= len(calls) <= 7, len(calls)
        assert all(b[1] - a[1] >= 0.19 for a, b in zip(calls, calls[1:], strict=False))
        calls.clear()
        # a flood of unknown ids: bounded by the overall budget (20 a second, 20 at once)
        started = time.monotonic()
        await asyncio.gather(*(table.reload(str(uuid.uuid4()), time.monotonic()) for _ in range(500)))
        elapsed = time.monotonic() - started
        assert len(calls) <= 20 + 20 * elapsed + 1, (len(calls), elapsed)

    asyncio.run(scenario())


# -- 5. specs are read once -------------------------------------------------------------------
def test_the_route_table_reads_each_spec_once(server: Server) -> None:
    instance = create(server, "read-first")
    settings = Settings(data_dir=server.data_dir, database_url=server.database_url)
    state = build_state(settings, migrate=False)
    statements: list[str] = []
    event.listen(state.database.engine, "before_cursor_execute",
                 lambda _c, _cur, statement, *_: statements.append(statement.lower()))
    routes, _ = gateway_listeners(state, ensure_local_tls(server.data_dir / "tls"))

    def refresh() -> tuple[list[str], list[str]]:
        statements.clear()
        routes.refresh()
        return ([s for s in statements if "from deployments" in s],
                [s for s in statements if "ca_key_sealed" in s])

    try:
        deployments, cas = refresh()
        assert len(deployments) == 1 and len(cas) == 1 and instance["id"] in routes.snapshot.instances
        for _ in range(3):  # nothing new: no spec and no CA is read again
            assert refresh() == ([], [])
        other = create(server, "read-once")
        deployments, cas = refresh()
        assert len(deployments) == 1 and len(cas) == 1 and other["id"] in routes.snapshot.instances
        assert refresh() == ([], [])
    finally:
        state.database.dispose()


# -- 6. metrics on their own listener ---------------------------------------------------------
def test_metrics_are_served_only_on_the_admin_listener(listeners: Server, instance: dict[str, Any]) -> None:
    server = listeners
    public = httpx.get(f"http://127.0.0.1:{server.gateway_port}/metrics", timeout=30)
    assert public.status_code == 404 and "inferd_gateway" not in public.text, public.text[:300]
    private = httpx.get(f"https://127.0.0.1:{server.private_port}/metrics", verify=False, timeout=30)
    assert private.status_code == 404 and "inferd_gateway" not in private.text, private.text[:300]
    counted = chat(server, instance)  # some traffic to count
    assert counted.status_code == 503, counted.text
    assert httpx.get(metrics_url(server), timeout=30).status_code == 401
    assert httpx.get(metrics_url(server), headers={"Authorization": "Bearer wrong"}, timeout=30).status_code == 401
    text = httpx.get(metrics_url(server), headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=30).text
    assert 'inferd_gateway_requests_total{' in text and instance["id"] in text, text[-2000:]
    assert "inferd_gateway_route_reloads_total" in text


# -- 7. slow clients --------------------------------------------------------------------------
async def _stall(host: str, port: int, payload: bytes, tls: ssl.SSLContext | None = None,
                 server_hostname: str | None = None) -> float | str:
    """Connect, send ``payload`` (maybe nothing) and wait: seconds until the server closed the
    connection, or a string saying why that is not what happened."""
    try:
        reader, writer = await asyncio.open_connection(host, port, ssl=tls, server_hostname=server_hostname)
    except OSError as exc:
        return f"cannot connect: {exc!r}"
    opened = time.monotonic()
    try:
        writer.write(payload)
        await writer.drain()
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), TIMEOUT + MARGIN)
            except TimeoutError:
                return f"still open after {TIMEOUT + MARGIN} s"
            except (ConnectionError, ssl.SSLError):
                break
            if not chunk:
                break
        return time.monotonic() - opened
    finally:
        writer.close()


async def _raw_stall(port: int) -> float | str:
    """A TCP connection to a TLS listener that never starts the handshake."""
    loop = asyncio.get_running_loop()
    try:
        sock = await asyncio.to_thread(socket.create_connection, ("127.0.0.1", port))
    except OSError as exc:
        return f"cannot connect: {exc!r}"
    sock.setblocking(False)
    opened = time.monotonic()
    try:
        while True:
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, 4096), TIMEOUT + MARGIN)
            except TimeoutError:
                return f"still open after {TIMEOUT + MARGIN} s"
            except ConnectionError:
                break
            if not data:
                break
        return time.monotonic() - opened
    finally:
        sock.close()


def test_slow_clients_are_dropped_on_every_listener_while_others_are_served(
    listeners: Server, instance: dict[str, Any]
) -> None:
    server = listeners
    line = b"POST /" + instance["id"].encode() + b"/v1/chat/completions HTTP/1.1\r\n"
    headers = line + (
        b"Host: 127.0.0.1\r\nAuthorization: Bearer " + instance["token"].encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n"
    )
    half_line = line[: len(line) // 2]
    half_body = headers + b'{"model": "' + specs.MODEL.encode()
    api_tls = server.ssl_context()
    private_tls = ssl.create_default_context()
    private_tls.check_hostname, private_tls.verify_mode = False, ssl.CERT_NONE
    metrics_port = int(server.env["INFERD_METRICS_PORT"])
    host = "127.0.0.1"

    def cases() -> list[tuple[str, Any]]:
        found: list[tuple[str, Any]] = []
        for i in range(100):  # the public listener: the case
            payload = (half_line, half_line, half_line, b"", half_body)[i % 5]
            found.append((f"public #{i}", _stall(host, server.gateway_port, payload)))
        for name, port, tls in (("api", server.port, api_tls), ("private", server.private_port, private_tls)):
            for i in range(5):
                found.append((f"{name} no handshake #{i}", _raw_stall(port)))
                found.append((f"{name} half a line #{i}", _stall(host, port, half_line, tls, "localhost")))
        found += [(f"metrics half a line #{i}", _stall(host, metrics_port, b"GET /metr")) for i in range(5)]
        return found

    served: list[int] = []
    failures: list[str] = []
    stop = threading.Event()

    def normal_client() -> None:  # a real client on the public and API listeners all along
        with httpx.Client(timeout=30) as public, server.client(server.admin_token) as api:
            while not stop.is_set():
                try:
                    models = public.get(f"http://{host}:{server.gateway_port}/{instance['id']}/v1/models",
                                        headers={"Authorization": f"Bearer {instance['token']}"})
                    assert models.status_code == 200, f"public: {models.status_code} {models.text[:300]}"
                    listed = api.get("/v2/dedicated-inferences")
                    assert listed.status_code == 200, f"api: {listed.status_code} {listed.text[:300]}"
                    served.append(1)
                except (httpx.HTTPError, AssertionError) as exc:
                    failures.append(repr(exc))
                stop.wait(0.1)

    async def run() -> list[tuple[str, float | str]]:
        named = cases()
        results = await asyncio.gather(*(case for _, case in named))
        return [(name, result) for (name, _), result in zip(named, results, strict=True)]

    client = threading.Thread(target=normal_client)
    client.start()
    try:
        results = asyncio.run(run())
        wait_for(lambda: len(served) >= 3, timeout=30, what="the normal client to be served")
    finally:
        stop.set()
        client.join(timeout=60)
    late = [(name, result) for name, result in results if not isinstance(result, float)]
    assert late == [], late[:10]
    early = [(name, result) for name, result in results if isinstance(result, float) and result < TIMEOUT / 2]
    assert early == [], early[:10]  # closed by the timeouts, not refused
    assert failures == [], failures[:5]


def test_a_half_sent_body_gets_408(listeners: Server, instance: dict[str, Any]) -> None:
    server = listeners
    with socket.create_connection(("127.0.0.1", server.gateway_port), timeout=TIMEOUT + MARGIN) as sock:
        sock.sendall(
            b"POST /" + instance["id"].encode() + b"/v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + instance["token"].encode() + b"\r\nContent-Length: 100\r\n\r\n{"
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]


def test_connection_cap() -> None:
    """Beyond ``max_connections`` a new connection is closed at once; the ones held open go
    when their header timeout passes, and then clients are served again."""
    from inferd.cli.servers import ConnectionLimits, Listener, build_server

    async def hello(_: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    port = free_port()
    limits = ConnectionLimits(header_timeout=TIMEOUT, body_timeout=TIMEOUT, keep_alive_timeout=TIMEOUT,
                              max_connections=10)
    server = build_server(Listener(Starlette(routes=[Route("/", hello)]), "127.0.0.1", port, limits=limits))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=20, what="server start")
    try:
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(10)]
        wait_for(lambda: len(server.server_state.connections) == 10, timeout=10, what="10 connections")
        with socket.create_connection(("127.0.0.1", port), timeout=MARGIN) as extra:
            opened = time.monotonic()
            assert extra.recv(1) == b""
            assert time.monotonic() - opened < TIMEOUT / 2  # closed at once, not by the timeout
        for sock in held:
            sock.settimeout(TIMEOUT + MARGIN)
            assert sock.recv(1) == b""
            sock.close()
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=30).text == "hello"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_a_taken_metrics_port_leaves_the_rest_serving(tmp_path: Path) -> None:
    """The metrics listener is not essential: if its port is taken, the error is logged and
    the API and gateway serve on (another exporter often holds 9464)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with running_server("sqlite", tmp_path / "inferd", controller=False, gateway=True,
                            INFERD_METRICS_PORT=str(port)) as srv:
            assert httpx.get(f"http://127.0.0.1:{srv.gateway_port}/v1/models", timeout=30).status_code == 404
            assert srv.process is not None and srv.process.poll() is None
            log = srv.log_path
            assert log is not None
            wait_for(lambda: "metrics listener" in log.read_text(), timeout=30, what="the logged error")
