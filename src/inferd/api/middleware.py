"""Everything a request goes through before routing, as one pure ASGI middleware.

It gives each request an id, finds the client's address (forwarded headers count only from
trusted proxies), authenticates the bearer token and spends the rate-limit budget *before*
reading the body (headers suffice), bounds the body size, and stamps ``x-request-id`` and
``ratelimit-*`` on *every* response, errors and crashes included (Starlette's own 500
handler would bypass those headers).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inferd.api.auth import authenticate
from inferd.api.errors import MESSAGES, error_body
from inferd.api.ratelimit import ClientAddresses
from inferd.api.state import AppState

log = logging.getLogger("inferd.api")

PUBLIC_PATHS = frozenset({"/healthz", "/v2/openapi.json", "/v2/docs", "/v2/docs/oauth2-redirect"})
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class _BodyTooLarge(Exception):
    pass


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    return receive


class ControlPlaneMiddleware:
    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.state = state
        self.clients = ClientAddresses(state.settings.trusted_proxy_networks())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _REQUEST_ID.match(incoming) else str(uuid.uuid4())
        scope.setdefault("state", {})["request_id"] = request_id
        extra_headers: list[tuple[str, str]] = [("x-request-id", request_id)]
        status_seen: list[int] = []

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_seen.append(message["status"])
                headers = list(message.get("headers", []))
                headers.extend((k.encode(), v.encode()) for k, v in extra_headers)
                message = {**message, "headers": headers}
            await send(message)

        async def reply(status: int, message: str, headers: list[tuple[str, str]] | None = None) -> None:
            extra_headers.extend(headers or [])
            body = json.dumps(error_body(status, message, request_id)).encode()
            await send_with_headers(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                }
            )
            await send_with_headers({"type": "http.response.body", "body": body})

        try:
            await self._handle(scope, receive, send_with_headers, reply, extra_headers)
        except Exception:
            log.exception("unhandled error", extra={"request_id": request_id})
            if not status_seen:
                await reply(500, MESSAGES[500])
        finally:
            log.info(
                "%s %s %s",
                scope["method"],
                scope["path"],
                status_seen[0] if status_seen else "-",
                extra={
                    "request_id": request_id,
                    "status": status_seen[0] if status_seen else None,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )

    async def _handle(self, scope: Scope, receive: Receive, send: Send, reply: Any, extra_headers: list[Any]) -> None:
        settings = self.state.settings
        peer = (scope.get("client") or (None, 0))[0]
        headers = scope.get("headers", [])
        # a trusted proxy's word on who the client is and how it came (uvicorn believes no header)
        client = self.clients.client(peer, headers)
        if client != peer:
            scope["client"] = (client, 0)
        scope["scheme"] = self.clients.scheme(peer, headers, scope.get("scheme", "http"))

        if not (scope["path"] in PUBLIC_PATHS or not scope["path"].startswith("/v2")):
            # Authentication needs the headers only: a request without a valid token is answered
            # before a byte of its body is read (nothing is buffered for strangers).
            principal = await anyio.to_thread.run_sync(
                authenticate, self.state.database, _header(scope, b"authorization")
            )
            key = f"token:{principal.token_id}" if principal else f"ip:{client}"
            decision = self.state.limiter.hit(key)
            extra_headers.extend(decision.headers())
            if not decision.allowed:
                retry_after = max(1, decision.reset - int(time.time()))
                await reply(429, MESSAGES[429], [("retry-after", str(retry_after))])
                return
            if principal is None:
                await reply(401, MESSAGES[401], [("www-authenticate", 'Bearer realm="inferd"')])
                return
            scope["state"]["principal"] = principal

        if scope["method"] in _BODY_METHODS:
            declared = _header(scope, b"content-length")
            if declared and declared.isdigit() and int(declared) > settings.max_request_bytes:
                await reply(413, f"request body exceeds {settings.max_request_bytes} bytes")
                return
            try:
                body = await _read_body(receive, settings.max_request_bytes)
            except _BodyTooLarge:
                await reply(413, f"request body exceeds {settings.max_request_bytes} bytes")
                return
            receive = _replay(body)
        await self.app(scope, receive, send)
