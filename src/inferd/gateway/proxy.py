"""The OpenAI-compatible endpoint of every instance, as one raw ASGI app per listener.

An instance is found by Host (``<id>-public.<domain>`` / ``<id>-private.<domain>``) or by a
path prefix (``/<id>/v1/...``) for local use. Requests are authenticated with that instance's
``di_`` tokens, held to the token's request and token budgets, routed to a ready replica
(prefix-cache affinity balanced against load, :mod:`inferd.gateway.router`), retried on another
replica when one fails before answering, and streamed back without buffering. Usage is counted
from the engine's own numbers.

Cost matters here (every request pays it): the app is a plain ASGI callable on uvicorn's
httptools protocol and uvloop, and talks to replicas over its own kept-alive connections
(:mod:`inferd.gateway.upstream`), which hand each streamed event straight to the client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from inferd.domain.tokens import bearer_value, hash_token, hashes_match, is_instance_token
from inferd.gateway import metrics
from inferd.gateway.answers import BodyTimeout, Headers, Receive, Scope, Send, models_list, read_body, send_error, send_json
from inferd.gateway.cors import CorsPolicy, answer_preflight, granting, origin_of
from inferd.gateway.jsondepth import nests_deeper_than
from inferd.gateway.relay import DisconnectWatch, Outcome, Stopwatch, relay_stream, relay_whole
from inferd.gateway.route_loader import InstanceRoutes, Snapshot, TokenRef
from inferd.gateway.router import make_balancer, prefix_blocks
from inferd.gateway.tls import INSTANCE_HOST
from inferd.gateway.tokenlimits import TokenLimiter, TokenLimits, effective_limits, estimate_tokens
from inferd.gateway.upstream import Connection, UpstreamClosed, UpstreamPool, UpstreamRefused
from inferd.gateway.usage import ask_for_usage

log = logging.getLogger("inferd.gateway")
Kind = Literal["public", "private"]
_PREFIX = re.compile(r"^/(?P<id>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})(?P<rest>/.*)$")
_GENERATE = frozenset({"/v1/chat/completions", "/v1/completions"})
_EMBED = "/v1/embeddings"


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
    body_timeout: float = 30.0
    """Seconds for the whole body once the headers are in: beyond it, 408 (the listener leaves
    this deadline to the gateway, see ``Listener.reads_body_itself``)."""


@dataclass(frozen=True)
class Policy:
    routing: str = "prefix"
    """``prefix`` (prefix-cache affinity balanced against load) or ``least-outstanding``."""
    token_rpm: int | None = None
    """Requests per minute per ``di_`` token, unless the instance sets its own (None/0: none)."""
    token_tpm: int | None = None
    """Tokens (prompt + completion) per minute per ``di_`` token, likewise."""
    embedders: frozenset[str] = field(default_factory=frozenset)
    """Model slugs that embed: they serve /v1/embeddings and nothing that generates."""
    cors_origins: tuple[str, ...] = ("*",)
    """Origins whose pages may call the endpoints from a browser (:mod:`inferd.gateway.cors`)."""


DEFAULT_LIMITS = Limits()
DEFAULT_POLICY = Policy()


@dataclass
class _Call:
    """One forwarded request, as the proxy needs it after validation."""

    instance: InstanceRoutes
    token: TokenRef
    model: str
    path: str
    body: bytes
    accept: bytes
    stream: bool
    strip_usage: bool
    prefix: tuple[int, ...]
    limits: TokenLimits
    estimate: int
    rate_headers: Headers


class Gateway:
    """What both listeners share: routes, the replica choice and its load counts, the token
    budgets, in-flight counts and the connection pool (a token's budget is one, whichever
    endpoint it calls). :meth:`endpoint` gives each listener its ASGI app."""

    def __init__(self, routes: RouteSource, limits: Limits = DEFAULT_LIMITS, policy: Policy = DEFAULT_POLICY):
        self.routes = routes
        self.limits = limits
        self.policy = policy
        self.cors = CorsPolicy(policy.cors_origins)
        self.balancer = make_balancer(policy.routing)
        self._prefix_aware = policy.routing == "prefix"
        self.limiter = TokenLimiter()
        self.pool = UpstreamPool()
        self.in_flight = 0
        self.in_flight_by_instance: dict[str, int] = {}

    async def close(self) -> None:
        self.pool.close()

    def endpoint(self, kind: Kind) -> Endpoint:
        return Endpoint(self, kind)

    # -- one request ----------------------------------------------------------------------------
    async def handle(self, kind: Kind, scope: Scope, receive: Receive, send: Send) -> None:
        arrived = asyncio.get_running_loop().time()
        host = authorization = length = None
        accept = b"*/*"
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
            elif name == b"authorization":
                authorization = value
            elif name == b"content-length":
                length = value
            elif name == b"accept":
                accept = value
        method, full_path = scope["method"], scope["path"]
        located = self.locate(kind, host, full_path)
        if located is None:
            await _not_served(send, method, full_path)
            return
        instance_id, path = located
        value = bearer_value(authorization.decode("latin-1") if authorization else None)
        digest = hash_token(value) if value is not None and is_instance_token(value) else None
        snapshot = self.routes.snapshot
        if digest is not None and (instance_id not in snapshot.instances or digest not in snapshot.tokens):
            snapshot = await self.reloaded(instance_id, arrived)  # maybe new: ask the store first
        instance = snapshot.instances.get(instance_id)
        token = snapshot.tokens.get(digest) if digest is not None else None
        if instance is None or token is None or not hashes_match(token.instance_id, instance_id):
            # an unknown instance and a bad token look the same: nothing leaks
            await send_error(send, 401, "Invalid or missing access token.", "invalid_request_error", "invalid_api_key")
            return
        if kind == "public" and not instance.public:
            await send_error(send, 403, "The public endpoint of this instance is disabled.", "permission_error")
        elif path == "/v1/models" and method == "GET":
            await send_json(send, 200, models_list(instance.models))
        elif method == "POST" and (path in _GENERATE or path == _EMBED):
            await self.forward(scope, receive, send, instance, token, path, accept, length, arrived)
        else:
            await _not_served(send, method, path)

    def locate(self, kind: Kind, host: bytes | None, path: str) -> tuple[str, str] | None:
        """(instance id, OpenAI path) from the Host header or the path prefix."""
        match = INSTANCE_HOST.match(host.decode("latin-1")) if host else None
        if match:
            return (match.group("id"), path) if match.group("kind") == kind else None
        prefixed = _PREFIX.match(path)
        return (prefixed.group("id"), prefixed.group("rest")) if prefixed else None

    async def reloaded(self, instance_id: str, since: float) -> Snapshot:
        """The route table after reading this instance again: a request that would be refused
        (unknown instance or token, no ready replica) first checks that the store agrees."""
        if isinstance(self.routes, ReloadableRouteSource):
            return await self.routes.reload(instance_id, since)
        return self.routes.snapshot

    # -- validation ---------------------------------------------------------------------------
    async def forward(
        self, scope: Scope, receive: Receive, send: Send, instance: InstanceRoutes, token: TokenRef,
        path: str, accept: bytes, length: bytes | None, arrived: float,
    ) -> None:
        try:
            body = await read_body(receive, self.limits.max_body_bytes, length, self.limits.body_timeout)
        except BodyTimeout:
            await send_error(send, 408, f"The request body did not arrive within {self.limits.body_timeout:g} s.",
                             "invalid_request_error", "request_timeout", headers=[(b"connection", b"close")])
            return
        if body is None:
            await send_error(send, 413, f"Request body exceeds {self.limits.max_body_bytes} bytes.", "invalid_request_error")
            return
        depth = self.limits.max_json_depth
        if nests_deeper_than(body, depth):
            await send_error(send, 400, f"The request body nests arrays or objects deeper than {depth} levels.",
                             "invalid_request_error")
            return
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            payload = None
        if not isinstance(payload, dict):
            await send_error(send, 400, "The request body is not a valid JSON object.", "invalid_request_error")
            return
        model = payload.get("model")
        if isinstance(model, str) and not instance.models.get(model):
            # unknown model or no ready replica: maybe the store knows better already
            instance = (await self.reloaded(instance.id, arrived)).instances.get(instance.id, instance)
        if not isinstance(model, str) or model not in instance.models:
            available = ", ".join(instance.models)
            await send_error(send, 404, f"The model {model!r} does not exist on this instance (available: {available}).",
                             "invalid_request_error", "model_not_found")
            return
        embeds = model in self.policy.embedders
        if embeds != (path == _EMBED):
            serves = _EMBED if embeds else "/v1/chat/completions and /v1/completions"
            await send_error(send, 400, f"The model {model!r} does not serve {path}; it serves {serves}.",
                             "invalid_request_error", "model_not_supported")
            return
        if self.in_flight >= self.limits.max_in_flight:
            await send_error(send, 503, "The gateway is at capacity; retry shortly.", "server_error", "overloaded")
            return
        if self.in_flight_by_instance.get(instance.id, 0) >= self.limits.max_in_flight_per_instance:
            await send_error(send, 429, "Too many concurrent requests for this instance.", "rate_limit_error")
            return
        limits = effective_limits(self.policy.token_rpm, self.policy.token_tpm, instance.token_rpm, instance.token_tpm)
        estimate = estimate_tokens(payload) if limits.tokens_per_minute else 0
        admission = self.limiter.admit(token.token_id, limits, estimate)
        rate_headers = [(k.encode(), v.encode()) for k, v in admission.headers.items()]
        if not admission.allowed:
            metrics.series(instance.id, model).rate_limited.inc()
            await send_json(send, 429, json.dumps(admission.error).encode(), rate_headers)
            return
        stream = payload.get("stream") is True
        strip_usage = False
        if stream:  # ask the engine for its usage; hide it again from a client that did not ask
            strip_usage = not ask_for_usage(payload)
            if strip_usage:
                body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        prefix = prefix_blocks(payload, instance.id + model) if self._prefix_aware else ()
        call = _Call(instance, token, model, path, body, accept, stream, strip_usage, prefix, limits, estimate, rate_headers)
        await self._proxy(receive, send, call)

    # -- proxying -------------------------------------------------------------------------------
    async def _proxy(self, receive: Receive, send: Send, call: _Call) -> None:
        clock = Stopwatch()
        series = metrics.series(call.instance.id, call.model)
        self._enter(call.instance.id)
        watch = DisconnectWatch(receive)
        outcome: Outcome | None = None
        try:
            outcome = await self._exchange(send, watch, call, clock)
        except asyncio.CancelledError:
            if not watch.gone:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # the client left: nothing more to do for it
            series.requests("499").inc()
        finally:
            watch.stop()
            self._leave(call.instance.id)
        if outcome is None:
            self.limiter.settle(call.token.token_id, call.limits, call.estimate, call.estimate)
            return
        series.requests(str(outcome.status)).inc()
        series.latency.observe(clock.elapsed())
        if clock.first_byte is not None:
            series.ttft.observe(clock.first_byte)
        if outcome.status >= 500:
            series.errors.inc()
        usage = outcome.usage
        if usage is not None:
            prompt, completion = series.tokens(call.token.token_id)
            prompt.inc(usage.prompt_tokens)
            completion.inc(usage.completion_tokens)
        elif outcome.status < 400:
            series.uncounted.inc()
        spent = usage.total_tokens if usage is not None else (call.estimate if outcome.status < 400 else 0)
        self.limiter.settle(call.token.token_id, call.limits, call.estimate, spent)

    async def _exchange(self, send: Send, watch: DisconnectWatch, call: _Call, clock: Stopwatch) -> Outcome | None:
        """Pick a replica, send the request, relay the answer; another replica when one fails
        before answering. Nothing goes to the client before the replica's first body bytes."""
        tried: set[str] = set()
        dropped: set[str] = set()  # replicas that closed a (maybe stale) kept-alive connection once
        upstreams = call.instance.models[call.model]
        while True:
            upstream = self.balancer.choose(upstreams, tried, call.prefix)
            if upstream is None:
                watch.stop()
                await send_error(send, 503, f"No replica of {call.model!r} is ready.", "server_error", "no_replica")
                return Outcome(503, None, True)
            tried.add(upstream.replica_id)
            self.balancer.acquire(upstream)
            try:
                connection: Connection | None = None
                try:
                    connection = await self.pool.connect(upstream.url)
                    await connection.exchange(call.path, call.body, call.accept, call.stream)
                except UpstreamRefused as exc:  # refused, unreachable, connect timeout
                    self.balancer.failed(upstream)
                    log.warning("replica %s refused the request (%s); retrying", upstream.replica_id, exc)
                    continue
                except UpstreamClosed as exc:
                    if connection is not None:
                        connection.close()
                    if upstream.replica_id not in dropped:  # a reused connection may just have expired
                        dropped.add(upstream.replica_id)
                        tried.discard(upstream.replica_id)
                    else:
                        self.balancer.failed(upstream)
                    log.warning("replica %s closed before answering (%s); retrying", upstream.replica_id, exc)
                    continue
                except BaseException:
                    if connection is not None:
                        connection.close()
                    raise
                clock.mark_first_byte()
                extra = [(b"x-inferd-replica", upstream.replica_id.encode()), *call.rate_headers]
                try:
                    if call.stream:
                        return await relay_stream(send, watch, connection, call.strip_usage, extra)
                    return await relay_whole(send, watch, connection, extra)
                except BaseException:
                    connection.close()
                    raise
            finally:
                self.balancer.release(upstream)

    def _enter(self, instance_id: str) -> None:
        self.in_flight += 1
        self.in_flight_by_instance[instance_id] = self.in_flight_by_instance.get(instance_id, 0) + 1

    def _leave(self, instance_id: str) -> None:
        self.in_flight -= 1
        left = self.in_flight_by_instance[instance_id] - 1
        if left:
            self.in_flight_by_instance[instance_id] = left
        else:
            del self.in_flight_by_instance[instance_id]


async def _not_served(send: Send, method: str, path: str) -> None:
    await send_error(send, 404, f"Invalid URL ({method} {path}).", "invalid_request_error", "not_found")


async def _lifespan(receive: Receive, send: Send, on_shutdown: Callable[[], Any]) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await on_shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


class Endpoint:
    """The ASGI app of one listener (public or private) of a :class:`Gateway`."""

    def __init__(self, gateway: Gateway, kind: Kind) -> None:
        self.gateway = gateway
        self.kind: Kind = kind

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            cors = self.gateway.cors
            if cors.enabled:
                origin, preflight = origin_of(scope)
                if origin is not None:
                    allowed = cors.allowed(origin)
                    if preflight:
                        await answer_preflight(send, allowed)
                        return
                    if allowed:
                        send = granting(send, allowed)
            await self.gateway.handle(self.kind, scope, receive, send)
        elif scope["type"] == "lifespan":
            await _lifespan(receive, send, self.gateway.close)


def create_gateway_app(
    routes: RouteSource, kind: Kind, limits: Limits = DEFAULT_LIMITS, policy: Policy = DEFAULT_POLICY
) -> Endpoint:
    """One listener's app on a gateway of its own (tests, benchmarks); ``inferd serve`` shares
    one :class:`Gateway` between its two listeners."""
    return Gateway(routes, limits, policy).endpoint(kind)
