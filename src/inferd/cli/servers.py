"""Several HTTP listeners (API, public and private gateway) in one process.

uvicorn's ``Server`` takes over SIGINT/SIGTERM per server and re-raises the signal when done;
with several servers in one loop that would stop only one of them. Here the signals are
handled once, every server drains and runs its lifespan shutdown, and then the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import uvicorn


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # signals are handled by ``serve_all``


@dataclass
class Listener:
    app: Any
    host: str
    port: int
    ssl_context: Callable[[], ssl.SSLContext] | None = None
    certfile: str | None = None
    keyfile: str | None = None


def _config(listener: Listener) -> uvicorn.Config:
    options: dict[str, Any] = {"log_config": None, "server_header": False, "timeout_graceful_shutdown": 30}
    if listener.ssl_context is not None:
        factory = listener.ssl_context
        options["ssl_certfile"] = listener.certfile  # marks the config as TLS
        options["ssl_keyfile"] = listener.keyfile
        options["ssl_context_factory"] = lambda _config, _default: factory()
    elif listener.certfile:
        options["ssl_certfile"], options["ssl_keyfile"] = listener.certfile, listener.keyfile
    return uvicorn.Config(listener.app, host=listener.host, port=listener.port, **options)


async def _serve_all(listeners: list[Listener]) -> None:
    servers = [_Server(_config(listener)) for listener in listeners]
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    tasks = [asyncio.create_task(server.serve()) for server in servers]
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    stop()  # one listener ended (e.g. its port was taken): take the others down too
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        task.result()


def serve_all(listeners: list[Listener]) -> None:
    asyncio.run(_serve_all(listeners))
