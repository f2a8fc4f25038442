"""The few raw-ASGI answers the gateway writes itself (errors, ``/v1/models``), and reading a
bounded request body.

The gateway is a plain ASGI callable rather than a framework app: on the request path every
layer costs CPU on every request, and this one needs no routing table, request object or
background task per response.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]


def openai_error_body(message: str, error_type: str, code: str | None = None, param: str | None = None) -> bytes:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    return json.dumps({"error": {"message": message, "type": error_type, "param": param, "code": code}}).encode()


async def send_json(send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
    })
    await send({"type": "http.response.body", "body": body})


async def send_error(
    send: Send, status: int, message: str, error_type: str, code: str | None = None,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    await send_json(send, status, openai_error_body(message, error_type, code), headers)


class BodyTimeout(Exception):
    """The body did not arrive within the deadline (a slow or stalled client)."""


async def read_body(receive: Receive, limit: int, declared: bytes | None, timeout: float) -> bytes | None:
    """The whole request body, or None when it is (or says it will be) larger than ``limit``;
    :class:`BodyTimeout` when it is not in within ``timeout`` seconds."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    try:
        async with asyncio.timeout(timeout):
            return await _read(receive, limit)
    except TimeoutError:
        raise BodyTimeout from None


async def _read(receive: Receive, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # the client went away: the answer will go nowhere
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def models_list(slugs: Iterable[str]) -> bytes:
    return json.dumps({
        "object": "list",
        "data": [{"id": slug, "object": "model", "created": 0, "owned_by": "inferd"} for slug in slugs],
    }).encode()
