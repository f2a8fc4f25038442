"""Several HTTP listeners (API, public and private gateway, metrics) in one process.

uvicorn's ``Server`` takes over SIGINT/SIGTERM per server and re-raises the signal when done;
with several servers in one loop that would stop only one of them. Here the signals are
handled once, every server drains and runs its lifespan shutdown, and then the process exits.

Every listener also guards against slow or stalled clients (:class:`ConnectionLimits`):

- **header timeout**: a connection must deliver a request line and headers within this many
  seconds of opening (or of the first byte of its next request on a kept-alive connection),
  else it is dropped. uvicorn has no such timer: :class:`_GuardedProtocol` adds it to uvicorn's
  httptools protocol. On a TLS listener the handshake gets the same deadline.
- **body timeout**: once the headers are in, the whole body must arrive within this many
  seconds, else the answer is 408 and the connection closes (:class:`_BodyDeadline`, around
  the app's ``receive``).
- **keep-alive timeout**: an idle kept-alive connection is closed after this many seconds.
- **connection cap**: connections beyond this many are closed as soon as they are accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import signal
import socket
import ssl
import sys
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
import uvloop
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("inferd")
_CAP_WARNING_EVERY = 10.0
"""Seconds between two warnings about connections closed at the cap (a flood logs little)."""


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive_timeout: float = 5.0
    max_connections: int = 1000

    @classmethod
    def from_settings(cls, settings: Any) -> ConnectionLimits:
        return cls(
            header_timeout=settings.http_header_timeout,
            body_timeout=settings.http_body_timeout,
            keep_alive_timeout=settings.http_keep_alive_timeout,
            max_connections=settings.http_max_connections,
        )

    @classmethod
    def from_environment(cls) -> ConnectionLimits:
        """The ``INFERD_HTTP_*`` settings (for listeners built without explicit limits)."""
        from inferd.config import Settings

        return cls.from_settings(Settings())


class _GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol (llhttp, in C: about half the CPU of the pure-Python h11
    per request) with a deadline for each request head and a connection cap.

    The head timer is armed when the connection opens and when the first bytes of a later
    request arrive; it is disarmed once the parser has read a request head (uvicorn then starts
    a new request cycle). If it fires first, the connection is aborted.
    """

    _last_cap_warning = float("-inf")

    def __init__(self, *args: Any, header_timeout: float, max_connections: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout = header_timeout
        self._max_connections = max_connections
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_cycle: Any = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._max_connections:
            transport.abort()
            if self.loop.time() - _GuardedProtocol._last_cap_warning > _CAP_WARNING_EVERY:
                _GuardedProtocol._last_cap_warning = self.loop.time()
                self.logger.warning("%d connections open: closing new ones", self._max_connections)
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._head_timer is None and (self.cycle is None or self.cycle.response_complete):
            self._arm()  # the first bytes of the next request
        super().data_received(data)
        if self._head_timer is not None and self.cycle is not self._head_cycle:
            self._disarm()  # a request head was parsed

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._head_cycle = self.cycle
        self._head_timer = self.loop.call_later(self._header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.cycle is self._head_cycle and not self.transport.is_closing():
            self.transport.abort()


class _BodyDeadline:
    """ASGI middleware: the request body must be in within ``timeout`` seconds of the headers;
    else 408 (connection closed) and the app's next ``receive`` gets ``http.disconnect``."""

    def __init__(self, app: Any, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        body_done = False
        started = False
        timed_out = False

        async def guarded_receive() -> dict[str, Any]:
            nonlocal body_done, timed_out
            if timed_out:
                return {"type": "http.disconnect"}
            if body_done:  # afterwards the app only waits for a disconnect: no deadline
                return await receive()  # type: ignore[no-any-return]
            try:
                async with asyncio.timeout_at(deadline):
                    message: dict[str, Any] = await receive()
            except TimeoutError:
                timed_out = True
                if not started:
                    await _send_408(send, self.timeout)
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def guarded_send(message: dict[str, Any]) -> None:
            nonlocal started
            if timed_out:
                return  # the answer was the 408
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if not timed_out:
                raise  # else: the app failed on the disconnect it was given; the 408 is out


async def _send_408(send: Callable[..., Any], timeout: float) -> None:
    body = json.dumps({"id": "request_timeout", "message": f"The request body did not arrive within {timeout:g} s."})
    await send({
        "type": "http.response.start",
        "status": 408,
        "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
    })
    await send({"type": "http.response.body", "body": body.encode()})


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, limits: ConnectionLimits) -> None:
        super().__init__(config)
        self.limits = limits

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # signals are handled by ``serve_all``

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's startup for a host and port, with deadlines for the TLS handshake and
        shutdown (asyncio's defaults: 60 s and 30 s) so that a stalled TLS client goes too."""
        if sockets is not None or self.config.fd is not None or self.config.uds is not None:
            await super().startup(sockets)
            return
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            sys.exit(STARTUP_FAILURE)
        config = self.config

        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state, _loop=_loop
            )

        tls: dict[str, Any] = {}
        if config.ssl is not None:
            deadline = self.limits.header_timeout
            tls = {"ssl_handshake_timeout": deadline, "ssl_shutdown_timeout": deadline}
        try:
            server = await asyncio.get_running_loop().create_server(
                create_protocol, host=config.host, port=config.port, ssl=config.ssl, backlog=config.backlog, **tls
            )
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", config.host, config.port, exc)
            await self.lifespan.shutdown()
            sys.exit(STARTUP_FAILURE)
        assert server.sockets is not None
        self.servers = [server]
        self._log_started_message(server.sockets)
        self.started = True


@dataclass
class Listener:
    app: Any
    host: str
    port: int
    ssl_context: Callable[[], ssl.SSLContext] | None = None
    certfile: str | None = None
    keyfile: str | None = None
    limits: ConnectionLimits | None = None
    """None: the ``INFERD_HTTP_*`` settings of the environment."""
    reads_body_itself: bool = False
    """The app enforces the body deadline itself (the gateway: one wrapper less on every chunk
    it streams back); else :class:`_BodyDeadline` wraps it."""
    essential: bool = True
    """An essential listener that cannot start stops the process; another (metrics) is logged
    and left out while the rest serve."""
    name: str = field(default="")


def _config(listener: Listener, limits: ConnectionLimits) -> uvicorn.Config:
    # proxy_headers off: uvicorn would believe X-Forwarded-For from any 127.0.0.1 peer; the API's
    # middleware reads forwarded headers only from INFERD_TRUSTED_PROXIES.
    options: dict[str, Any] = {"log_config": None, "server_header": False, "timeout_graceful_shutdown": 30,
                               "proxy_headers": False}
    options["http"] = functools.partial(
        _GuardedProtocol, header_timeout=limits.header_timeout, max_connections=limits.max_connections
    )
    options["timeout_keep_alive"] = limits.keep_alive_timeout
    options["ws"] = "none"  # no WebSocket endpoints: an upgrade request stays plain HTTP
    if listener.ssl_context is not None:
        factory = listener.ssl_context
        options["ssl_certfile"] = listener.certfile  # marks the config as TLS
        options["ssl_keyfile"] = listener.keyfile
        options["ssl_context_factory"] = lambda _config, _default: factory()
    elif listener.certfile:
        options["ssl_certfile"], options["ssl_keyfile"] = listener.certfile, listener.keyfile
    app = listener.app if listener.reads_body_itself else _BodyDeadline(listener.app, limits.body_timeout)
    return uvicorn.Config(app, host=listener.host, port=listener.port, **options)


def build_server(listener: Listener) -> uvicorn.Server:
    """A uvicorn server for ``listener`` with its connection limits (signals left alone)."""
    limits = listener.limits or ConnectionLimits.from_environment()
    return _Server(_config(listener, limits), limits)


async def _serve_all(listeners: list[Listener]) -> None:
    servers = [build_server(listener) for listener in listeners]
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    pairs = list(zip(servers, listeners, strict=True))
    essential = [asyncio.create_task(s.serve()) for s, li in pairs if li.essential]
    optional = [asyncio.create_task(_serve_optional(s, li)) for s, li in pairs if not li.essential]
    done, _ = await asyncio.wait(essential or optional, return_when=asyncio.FIRST_COMPLETED)
    stop()  # one listener ended (e.g. its port was taken): take the others down too
    await asyncio.gather(*essential, *optional, return_exceptions=True)
    for task in done:
        task.result()


async def _serve_optional(server: uvicorn.Server, listener: Listener) -> None:
    try:
        await server.serve()
    except SystemExit:  # uvicorn's answer to a port that is taken
        log.error("the %s listener on %s:%d could not start; serving without it",
                  listener.name or "optional", listener.host, listener.port)


def serve_all(listeners: list[Listener]) -> None:
    """Serve until SIGINT/SIGTERM, on uvloop (libuv: a cheaper event loop than asyncio's own for
    the gateway's many small reads and writes)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve_all(listeners))
