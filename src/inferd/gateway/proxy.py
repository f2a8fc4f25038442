"""The OpenAI-compatible endpoint of every instance, as one ASGI app per listener.

An instance is found by Host (``<id>-public.<domain>`` / ``<id>-private.<domain>``) or by a
path prefix (``/<id>/v1/...``) for local use. Requests are authenticated with that instance's
``di_`` tokens, balanced over its ready replicas (least outstanding requests), retried on
another replica when one fails before answering, and streamed back without buffering.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from inferd.domain.tokens import (
    bearer_value,
    hash_token,
    hashes_match,
    is_instance_token,
)
from inferd.gateway import metrics
from inferd.gateway.balancer import Balancer
from inferd.gateway.jsondepth import nests_deeper_than
from inferd.gateway.routes import InstanceRoutes, Snapshot, Upstream
from inferd.gateway.tls import INSTANCE_HOST

log = logging.getLogger("inferd.gateway")
Kind = Literal["public", "private"]
_PREFIX = re.compile(r"^/(?P<id>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})(?P<rest>/.*)$")
_FORWARDED = ("/v1/chat/completions", "/v1/completions")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "server", "date"}


class RouteSource(Protocol):
    snapshot: Snapshot


@runtime_checkable
class ReloadableRouteSource(RouteSource, Protocol):
    async def reload(self, instance_id: str, since: float) -> Snapshot:
        """The snapshot after reading ``instance_id`` again (see ``RouteTable.reload``)."""
        ...


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 4 * 1024 * 1024
    max_in_flight: int = 512
    """Across the gateway: beyond it, 503."""
    max_in_flight_per_instance: int = 128
    """Per instance: beyond it, 429."""
    max_json_depth: int = 64
    """Deepest nesting of arrays/objects in a request body: beyond it, 400."""


def openai_error(status: int, message: str, error_type: str, code: str | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": error_type, "param": None, "code": code}}, status_code=status
    )


class Gateway:
    def __init__(self, routes: RouteSource, kind: Kind, limits: Limits | None = None) -> None:
        self.routes = routes
        self.kind = kind
        self.limits = limits or Limits()
        self.balancer = Balancer()
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=2.0, read=600.0, write=30.0, pool=5.0),
            # llama-server drops idle keep-alive connections after 5 s: let ours go first
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=256, keepalive_expiry=2.0),
            trust_env=False,
        )
        self.in_flight = 0
        self.in_flight_by_instance: dict[str, int] = {}

    # -- finding the instance ---------------------------------------------------------------
    def locate(self, request: Request) -> tuple[str, str] | None:
        """(instance id, OpenAI path) from the Host header or the path prefix."""
        host = request.headers.get("host", "")
        match = INSTANCE_HOST.match(host)
        if match:
            if match.group("kind") != self.kind:
                return None
            return match.group("id"), request.url.path
        prefixed = _PREFIX.match(request.url.path)
        if prefixed:
            return prefixed.group("id"), prefixed.group("rest")
        return None

    def authenticate(self, request: Request, snapshot: Snapshot, instance_id: str) -> bool:
        value = bearer_value(request.headers.get("authorization"))
        if value is None or not is_instance_token(value):
            return False
        digest = hash_token(value)
        owner = snapshot.tokens.get(digest)
        return owner is not None and hashes_match(owner, instance_id)

    async def reloaded(self, instance_id: str, since: float) -> Snapshot:
        """The route table after reading this instance again: a request that would be refused
        (unknown instance or token, no ready replica) first checks that the store agrees."""
        if isinstance(self.routes, ReloadableRouteSource):
            return await self.routes.reload(instance_id, since)
        return self.routes.snapshot

    def _may_be_new(self, request: Request, snapshot: Snapshot, instance_id: str) -> bool:
        """Whether reading the store again could let this request in: an instance not known
        yet, or a well-formed ``di_`` token not known yet (a missing or malformed one: never)."""
        value = bearer_value(request.headers.get("authorization"))
        if value is None or not is_instance_token(value):
            return False
        return instance_id not in snapshot.instances or hash_token(value) not in snapshot.tokens

    # -- the endpoint -----------------------------------------------------------------------
    async def __call__(self, request: Request) -> Response:
        arrived = time.monotonic()
        located = self.locate(request)
        snapshot = self.routes.snapshot
        if located is None:
            return openai_error(404, "Unknown endpoint.", "invalid_request_error", "not_found")
        instance_id, path = located
        if self._may_be_new(request, snapshot, instance_id):
            snapshot = await self.reloaded(instance_id, arrived)
        instance = snapshot.instances.get(instance_id)
        if instance is None or not self.authenticate(request, snapshot, instance_id):
            # an unknown instance and a bad token look the same: nothing leaks
            return openai_error(401, "Invalid or missing access token.", "invalid_request_error", "invalid_api_key")
        if self.kind == "public" and not instance.public:
            return openai_error(403, "The public endpoint of this instance is disabled.", "permission_error")
        if path == "/v1/models" and request.method == "GET":
            return JSONResponse(
                {
                    "object": "list",
                    "data": [
                        {"id": slug, "object": "model", "created": 0, "owned_by": "inferd"} for slug in instance.models
                    ],
                }
            )
        if path in _FORWARDED and request.method == "POST":
            return await self.forward(request, instance, path, arrived)
        return openai_error(404, f"{request.method} {path} is not served.", "invalid_request_error", "not_found")

    async def forward(self, request: Request, instance: InstanceRoutes, path: str, arrived: float) -> Response:
        body = await self._read_body(request)
        if body is None:
            return openai_error(413, f"Request body exceeds {self.limits.max_body_bytes} bytes.", "invalid_request_error")
        if nests_deeper_than(body, self.limits.max_json_depth):
            return openai_error(
                400, f"The request body nests arrays or objects deeper than {self.limits.max_json_depth} levels.",
                "invalid_request_error",
            )
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            return openai_error(400, "The request body is not valid JSON.", "invalid_request_error")
        model = payload.get("model") if isinstance(payload, dict) else None
        if isinstance(model, str) and not instance.models.get(model):
            # unknown model or no ready replica: maybe the store knows better already
            instance = (await self.reloaded(instance.id, arrived)).instances.get(instance.id, instance)
        if not isinstance(model, str) or model not in instance.models:
            available = ", ".join(instance.models)
            return openai_error(
                404, f"The model {model!r} does not exist on this instance (available: {available}).",
                "invalid_request_error", "model_not_found",
            )
        if self.in_flight >= self.limits.max_in_flight:
            return openai_error(503, "The gateway is at capacity; retry shortly.", "server_error", "overloaded")
        if self.in_flight_by_instance.get(instance.id, 0) >= self.limits.max_in_flight_per_instance:
            return openai_error(429, "Too many concurrent requests for this instance.", "rate_limit_error")
        stream = bool(payload.get("stream"))
        return await self._proxy(request, instance, model, path, body, stream)

    async def _read_body(self, request: Request) -> bytes | None:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.limits.max_body_bytes:
            return None
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.limits.max_body_bytes:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def _proxy(
        self, request: Request, instance: InstanceRoutes, model: str, path: str, body: bytes, stream: bool
    ) -> Response:
        started = time.perf_counter()
        labels = {"instance": instance.id, "model": model}
        tried: set[str] = set()
        dropped: set[str] = set()  # replicas that closed a (maybe stale) connection once
        headers = {"content-type": "application/json", "accept": request.headers.get("accept", "*/*")}
        self._enter(instance.id)
        released = False
        try:
            while True:
                upstream = self.balancer.choose(instance.models[model], tried)
                if upstream is None:
                    metrics.REQUESTS.labels(**labels, code="503").inc()
                    return openai_error(503, f"No replica of {model!r} is ready.", "server_error", "no_replica")
                tried.add(upstream.replica_id)
                outgoing = self.client.build_request("POST", upstream.url + path, content=body, headers=headers)
                self.balancer.acquire(upstream)
                response: httpx.Response | None = None
                try:
                    # Nothing goes to the client before the replica's first body bytes: until
                    # then a failure (refused, reset, died mid-start) can still go elsewhere.
                    response = await self.client.send(outgoing, stream=True)
                    chunks = response.aiter_raw()
                    first = await anext(chunks, b"")
                except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                    if response is not None:  # headers came, the body broke: free the connection
                        await response.aclose()
                    self.balancer.release(upstream)
                    if upstream.replica_id not in dropped:  # a reused connection may just have expired
                        dropped.add(upstream.replica_id)
                        tried.discard(upstream.replica_id)
                    else:
                        self.balancer.failed(upstream)
                    log.warning("replica %s closed before answering (%s); retrying", upstream.replica_id, exc)
                    continue
                except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                    self.balancer.release(upstream)
                    self.balancer.failed(upstream)
                    log.warning("replica %s refused the request (%s); retrying", upstream.replica_id, exc)
                    continue
                except BaseException:
                    if response is not None:
                        await response.aclose()
                    self.balancer.release(upstream)
                    raise
                released = True
                return self._respond(response, first, chunks, upstream, instance.id, labels, started, stream)
        finally:
            if not released:
                self._leave(instance.id)

    def _respond(
        self,
        response: httpx.Response,
        first: bytes,
        rest: AsyncIterator[bytes],
        upstream: Upstream,
        instance_id: str,
        labels: dict[str, str],
        started: float,
        stream: bool,
    ) -> Response:
        passed = {k: v for k, v in response.headers.items() if k.lower() not in _HOP_BY_HOP}
        passed["x-inferd-replica"] = upstream.replica_id

        metrics.TTFT.labels(**labels).observe(time.perf_counter() - started)

        async def chunks() -> AsyncIterator[bytes]:
            yield first
            async for chunk in rest:
                yield chunk

        async def body() -> AsyncIterator[bytes]:
            tokens = 0
            try:
                async for chunk in chunks():
                    if stream:
                        tokens += chunk.count(b"data: {")
                    else:
                        tokens += _completion_tokens(chunk)
                    yield chunk
            finally:  # also when the client went away: closing cancels the upstream request
                await response.aclose()
                self.balancer.release(upstream)
                self._leave(instance_id)
                metrics.REQUESTS.labels(**labels, code=str(response.status_code)).inc()
                metrics.LATENCY.labels(**labels).observe(time.perf_counter() - started)
                if tokens:
                    metrics.TOKENS.labels(**labels).inc(tokens)
                if response.status_code >= 500:
                    metrics.ERRORS.labels(**labels).inc()

        return StreamingResponse(body(), status_code=response.status_code, headers=passed)

    def _enter(self, instance_id: str) -> None:
        self.in_flight += 1
        self.in_flight_by_instance[instance_id] = self.in_flight_by_instance.get(instance_id, 0) + 1

    def _leave(self, instance_id: str) -> None:
        self.in_flight -= 1
        self.in_flight_by_instance[instance_id] -= 1

    async def close(self) -> None:
        await self.client.aclose()


def _completion_tokens(chunk: bytes) -> int:
    """Tokens of a non-streamed answer, read from its usage block when the chunk holds it."""
    match = re.search(rb'"completion_tokens"\s*:\s*(\d+)', chunk)
    return int(match.group(1)) if match else 0


def create_gateway_app(routes: RouteSource, kind: Kind, limits: Limits | None = None) -> Starlette:
    gateway = Gateway(routes, kind, limits)

    async def endpoint(request: Request) -> Response:
        return await gateway(request)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await gateway.close()

    app = Starlette(
        routes=[
            Route("/{path:path}", endpoint, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        ],
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    return app
