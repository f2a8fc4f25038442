"""HTTP/1.1 to replicas over kept-alive connections, parsed by httptools (llhttp, in C).

Why not a general client: streaming an answer is one small event per generated token, and a
general client pays per event for its stream reader, a future, a task switch and several
coroutine frames. Here each event is handed, inside the protocol's ``data_received``, straight
to a *sink* (the relay, which writes it to the client): no task runs per event (see
docs/gateway.md, "Performance"). Requests are only ``POST`` with a body the gateway built,
to replicas it knows, so the client needs no redirects, cookies, proxies or decompression.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import NamedTuple, cast
from urllib.parse import urlsplit

import httptools

Sink = Callable[[bytes], None]
CONNECT_TIMEOUT = 2.0
KEEPALIVE_SECONDS = 2.0
"""An idle connection older than this is not reused (llama-server drops its idle ones after 5 s)."""
MAX_IDLE_PER_REPLICA = 256


class UpstreamRefused(ConnectionError):
    """No connection could be made (refused, unreachable, or not within the connect timeout)."""


class UpstreamClosed(ConnectionError):
    """The replica closed the connection, or sent what is not HTTP, before its answer ended."""


class Connection(asyncio.Protocol):
    """One connection to a replica; one exchange at a time."""

    def __init__(self, pool: UpstreamPool, target: Target) -> None:
        self.pool = pool
        self.target = target
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.sink: Sink | None = None
        self.complete = False
        self.keep_alive = False
        self.failure: BaseException | None = None
        self._stream = False
        self._waiter: asyncio.Future[None] | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- asyncio.Protocol -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamClosed(f"not HTTP: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.complete:
            self._fail(UpstreamClosed(str(exc) if exc else "connection closed"))

    # -- httptools callbacks ----------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()  # llhttp forgets it once the message ends

    def on_body(self, body: bytes) -> None:
        if self.sink is not None:
            self.sink(body)
            return
        self.body.append(body)
        if self._stream:
            self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()
        if not self.done.done():
            self.done.set_result(None)

    # -- one exchange -----------------------------------------------------------------------------
    async def exchange(self, path: str, body: bytes, accept: bytes, stream: bool) -> None:
        """POST ``body`` to ``path``; return once the answer's first body bytes are in (``stream``)
        or the whole answer is (else), with ``status``, ``headers`` and ``body`` filled in."""
        assert self.transport is not None
        self._stream = stream
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(b"".join((
            b"POST ", path.encode("ascii"), b" HTTP/1.1\r\nhost: ", self.target.host_header,
            b"\r\ncontent-type: application/json\r\naccept: ", accept,
            b"\r\ncontent-length: ", str(len(body)).encode("ascii"), b"\r\n\r\n", body,
        )))
        await self._waiter
        if self.failure is not None:
            raise self.failure

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        self.failure = exc
        self._wake()
        if not self.done.done():
            self.done.set_result(None)

    def pause(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def close(self) -> None:
        self.sink = None
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def release(self) -> None:
        """Back to the pool if the answer ended cleanly and the replica keeps the connection."""
        if self.complete and self.failure is None and self.transport is not None and self.keep_alive:
            self._reset()
            self.pool.park(self)
        else:
            self.close()


class UpstreamPool:
    """Kept-alive connections per replica address."""

    def __init__(self) -> None:
        self._idle: dict[Target, list[Connection]] = {}
        self._closed = False

    async def connect(self, base_url: str) -> Connection:
        """A connection to ``base_url`` (``http://host:port``): an idle one if it is fresh."""
        target = _target(base_url)
        idle = self._idle.get(target)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if connection.transport is not None and now - connection.idle_since < KEEPALIVE_SECONDS:
                return connection
            connection.close()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                _, protocol = await loop.create_connection(lambda: Connection(self, target), target.host, target.port)
        except (OSError, TimeoutError) as exc:
            raise UpstreamRefused(f"{target.host}:{target.port}: {exc or 'connect timeout'}") from exc
        return protocol

    def park(self, connection: Connection) -> None:
        idle = self._idle.setdefault(connection.target, [])
        if self._closed or len(idle) >= MAX_IDLE_PER_REPLICA:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()


class Target(NamedTuple):
    """Where a replica listens, parsed once per address (not per request)."""

    host: str
    port: int
    host_header: bytes


@functools.lru_cache(maxsize=4096)
def _target(base_url: str) -> Target:
    parts = urlsplit(base_url)
    if parts.scheme != "http" or not parts.hostname:
        raise UpstreamRefused(f"not an http:// replica address: {base_url!r}")
    return Target(parts.hostname, parts.port or 80, parts.netloc.encode("ascii"))
