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
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from inferd.gateway.answers import Headers, Receive, Send
from inferd.gateway.upstream import Connection
from inferd.gateway.usage import StreamUsage, Usage, usage_in_body

_HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"server", b"date",
    b"proxy-connection", b"upgrade", b"te", b"trailer",
    # cross-origin access is the gateway's decision (inferd.gateway.cors), not the engine's:
    # llama-server sends its own, empty when it was not given the page's Origin
    b"access-control-allow-origin", b"access-control-allow-credentials", b"access-control-allow-methods",
    b"access-control-allow-headers", b"access-control-expose-headers", b"access-control-max-age",
})


@dataclass
class Outcome:
    status: int
    usage: Usage | None
    completed: bool
    """The whole answer reached the client (False: the client left, or the replica broke off)."""


def passed_headers(connection: Connection, extra: Headers) -> Headers:
    headers = [(k, v) for k, v in connection.headers if k.lower() not in _HOP_BY_HOP]
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
    send: Send, watch: DisconnectWatch, connection: Connection, strip_usage: bool, extra: Headers
) -> Outcome:
    """Send the answer's events to the client as the replica writes them. The first bytes are
    in already (see the proxy); the rest are pushed from the connection's ``data_received``
    (:class:`_Pusher`) while this coroutine waits for the end."""
    await send({"type": "http.response.start", "status": connection.status, "headers": passed_headers(connection, extra)})
    pusher = _Pusher(send, connection, StreamUsage(strip=strip_usage))
    try:
        for chunk in connection.body:
            pusher.push(chunk)
        connection.body.clear()
        connection.sink = pusher.push
        await connection.done
        await pusher.drained()
    finally:
        connection.sink = None
    completed = connection.complete and pusher.failure is None
    status = connection.status
    connection.release() if completed else connection.close()
    if pusher.failure is not None:
        raise pusher.failure
    watch.stop()
    await send({"type": "http.response.body", "body": pusher.follow.flush(), "more_body": False})
    return Outcome(status, pusher.follow.usage, completed)


class _Pusher:
    """Writes each event to the client from inside the replica connection's ``data_received``.

    The server's ``send`` for a body chunk returns without suspending unless the client is not
    reading (its write buffer is full). So it is driven by hand: one ``coro.send(None)`` per
    event, no task. When it does suspend, reading from the replica pauses and a task finishes
    that send; events already parsed wait in ``backlog`` and go out, in order, once it is done.
    """

    def __init__(self, send: Send, connection: Connection, follow: StreamUsage) -> None:
        self.send = send
        self.connection = connection
        self.follow = follow
        self.backlog: list[bytes] = []
        self.blocked: asyncio.Future[None] | None = None
        self.failure: BaseException | None = None

    def push(self, chunk: bytes) -> None:
        out = self.follow.feed(chunk)
        if not out or self.failure is not None:
            return
        if self.blocked is not None:
            self.backlog.append(out)
            return
        self._write(out)

    def _write(self, out: bytes) -> None:
        coroutine = self.send({"type": "http.response.body", "body": out, "more_body": True})
        assert isinstance(coroutine, Coroutine)  # the server's send is an ``async def``
        try:
            awaited = coroutine.send(None)
        except StopIteration:
            return
        except BaseException as exc:  # the server refused the write: stop relaying
            self.failure = exc
            self.connection.close()
            return
        self.connection.pause()
        self.blocked = asyncio.ensure_future(_finish(coroutine, awaited))
        self.blocked.add_done_callback(self._unblocked)

    def _unblocked(self, task: asyncio.Future[None]) -> None:
        self.blocked = None
        if task.cancelled() or task.exception() is not None:
            self.failure = task.exception() if not task.cancelled() else asyncio.CancelledError()
            self.connection.close()
            return
        while self.backlog and self.blocked is None:
            self._write(self.backlog.pop(0))
        if self.blocked is None:
            self.connection.resume()

    async def drained(self) -> None:
        """Until every parsed event has gone to the client."""
        while self.blocked is not None and self.failure is None:
            await asyncio.wait([self.blocked])


async def _finish(coroutine: Coroutine[Any, Any, None], awaited: Any) -> None:
    """Drive a coroutine that ``_Pusher._write`` started by hand to its end, as a task would."""
    while True:
        try:
            if awaited is None:  # a bare yield: give the loop one turn
                await asyncio.sleep(0)
                value = None
            else:
                # as a task would: the future was yielded to us, so it is marked "blocking" already,
                # and asyncio's C future refuses to be awaited again while so marked
                awaited._asyncio_future_blocking = False
                value = await awaited
        except BaseException as exc:
            try:
                awaited = coroutine.throw(exc)
            except StopIteration:
                return
        else:
            try:
                awaited = coroutine.send(value)
            except StopIteration:
                return


async def relay_whole(send: Send, watch: DisconnectWatch, connection: Connection, extra: Headers) -> Outcome:
    """A non-streamed answer, read whole already: sent with its length."""
    body = b"".join(connection.body)
    status = connection.status
    headers = passed_headers(connection, extra)
    connection.release()
    headers.append((b"content-length", str(len(body)).encode()))
    watch.stop()
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    return Outcome(status, usage_in_body(body) if status < 400 else None, True)


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
