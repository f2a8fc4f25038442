"""Passing one replica's answer on to the client, as it arrives, and learning its usage.

A streamed answer goes out chunk by chunk (each SSE event as the engine writes it); a
non-streamed one is read whole, then sent with its length. Either way the engine's ``usage``
is taken from the answer itself (:mod:`inferd.gateway.usage`).

While the gateway waits on a replica, :class:`DisconnectWatch` waits for the client's
disconnect: when the client goes, the request is cancelled, which closes the upstream
connection at once.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp

from inferd.gateway.answers import Headers, Receive, Send
from inferd.gateway.usage import StreamUsage, Usage, usage_in_body

_HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"server", b"date",
    b"proxy-connection", b"upgrade", b"te", b"trailer",
})


@dataclass
class Outcome:
    status: int
    usage: Usage | None
    completed: bool
    """The whole answer reached the client (False: the client left, or the replica broke off)."""


def passed_headers(response: aiohttp.ClientResponse, extra: Headers) -> Headers:
    headers = [(k, v) for k, v in response.raw_headers if k.lower() not in _HOP_BY_HOP]
    headers.extend(extra)
    return headers


class DisconnectWatch:
    """Cancels the request's task when the client disconnects while the gateway waits on a
    replica, so that the upstream connection closes and the engine stops generating for nobody.

    It must be stopped before the last byte goes out: the server reports the end of every
    answer to ``receive`` as a disconnect too.
    """

    def __init__(self, receive: Receive) -> None:
        self.gone = False
        self._task = asyncio.current_task()
        self._watcher = asyncio.ensure_future(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        message = await receive()  # the body is read already: the next message is the disconnect
        if message["type"] == "http.disconnect" and self._task is not None:
            self.gone = True
            self._task.cancel()

    def stop(self) -> None:
        self._watcher.cancel()


async def relay_stream(
    send: Send, watch: DisconnectWatch, response: aiohttp.ClientResponse, first: bytes, strip_usage: bool,
    extra: Headers,
) -> Outcome:
    """Send the answer's chunks as they come; ``first`` was read already (see the proxy)."""
    follow = StreamUsage(strip=strip_usage)
    await send({"type": "http.response.start", "status": response.status, "headers": passed_headers(response, extra)})
    completed = False
    try:
        chunk = first
        while chunk:
            out = follow.feed(chunk)
            if out:
                await send({"type": "http.response.body", "body": out, "more_body": True})
            chunk = await response.content.readany()
        completed = True
    except (aiohttp.ClientError, TimeoutError, OSError):
        pass  # the replica broke off mid-answer: end the stream where it broke
    finally:
        response.release() if completed else response.close()
    watch.stop()
    await send({"type": "http.response.body", "body": follow.flush(), "more_body": False})
    return Outcome(response.status, follow.usage, completed)


async def relay_whole(
    send: Send, watch: DisconnectWatch, response: aiohttp.ClientResponse, body: bytes, extra: Headers
) -> Outcome:
    """A non-streamed answer, read whole already: sent with its length."""
    headers = passed_headers(response, extra)
    headers.append((b"content-length", str(len(body)).encode()))
    watch.stop()
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    return Outcome(response.status, usage_in_body(body) if response.status < 400 else None, True)


class Stopwatch:
    """Request timings for the metrics (monotonic, perf-counter resolution)."""

    __slots__ = ("started", "first_byte")

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first_byte: float | None = None

    def mark_first_byte(self) -> float:
        self.first_byte = time.perf_counter() - self.started
        return self.first_byte

    def elapsed(self) -> float:
        return time.perf_counter() - self.started
