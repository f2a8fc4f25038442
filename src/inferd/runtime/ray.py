"""Replicas as detached named actors on an existing Ray cluster.

Why detached named actors: they outlive the controller that created them, and their names
(``replica.<replica id>.<random>``) are all that a later controller needs to adopt them: it
lists the named actors of this installation's namespace. Ray places each actor on a node with
room (CPUs, GPUs, custom resources); the actor prepares the model and runs the engine on that
node (``ray_actor.ReplicaActor``), and the engine dies with it.

Why the Ray driver runs in a child process: a driver that loses the head (GCS) blocks in calls
such as ``ray.nodes()`` and, after ``gcs_rpc_server_reconnect_timeout_s`` (60 s by default),
Ray *terminates the driver's process*. That must never be the controller. So this runtime
talks to a small driver process (``ray_actor.driver_main``) over a socket, with a deadline on
every call; if the head is unreachable the child is killed (or has died by itself), calls raise
``RuntimeUnavailable``, and a fresh child connects once the head answers again. The controller must run on a node of
the cluster (a Ray driver attaches to a local raylet), or use a ``ray://`` client address.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import Any

from inferd.runtime import logfiles
from inferd.runtime.base import (
    NodeResources,
    ReplicaRequest,
    ReplicaState,
    RuntimeUnavailable,
)

MAX_BACKOFF_S = 30.0
log = logging.getLogger(__name__)


def _host_port(address: str) -> tuple[str, int] | None:
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    return (host.strip("[]"), int(port)) if sep and host and port.isdigit() else None


class RayRuntime:
    name = "ray"

    def __init__(
        self, address: str, namespace: str, *, connect_timeout: float = 10.0, log_max_bytes: int | None = None
    ) -> None:
        self.address = address
        self.namespace = namespace
        self.connect_timeout = connect_timeout
        self.log_max_bytes = log_max_bytes or logfiles.max_bytes_from_env()
        """Cap of each replica's log on its node (the actor rotates it)."""
        self._lock = threading.Lock()
        self._child: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._backoff = 0.0
        self._retry_at = 0.0

    # -- the Runtime protocol ------------------------------------------------------------
    def start(self, request: ReplicaRequest) -> str:
        return str(self._call("start", request, self.log_max_bytes))

    def observe(self, handles: Mapping[str, str]) -> dict[str, ReplicaState]:
        return dict(self._call("observe", dict(handles))) if handles else {}

    def discover(self) -> dict[str, str]:
        return dict(self._call("discover"))

    def in_flight(self, handle: str) -> int | None:
        return self._call("in_flight", handle)  # type: ignore[no-any-return]

    def terminate(self, handle: str) -> None:
        self._call("terminate", handle)

    def kill(self, handle: str) -> None:
        """The actor removes its log on its node, then Ray ends the actor (and its engine with it)."""
        self._call("kill", handle)

    def logs(self, handle: str, lines: int = 50) -> str:
        return str(self._call("logs", handle, lines))

    def discard_logs(self, instance_id: str, replica_id: str) -> None:
        """Nothing left to do: a Ray replica's log lives as long as its actor, which removed it
        on its node when it was killed (``kill``, which the controller calls for every replica
        before it removes it). The log of an actor whose node died stays on that node's disk
        (within its cap): no process there is left to remove it."""

    def logged_replicas(self) -> set[tuple[str, str]]:
        return set()  # logs live on the nodes, removed with their actors

    def nodes(self) -> list[NodeResources] | None:
        return list(self._call("nodes"))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(OSError):
                    self._conn.send(("close", ()))
            self._drop(grace=2.0)
            self._backoff = self._retry_at = 0.0

    # -- the driver process --------------------------------------------------------------
    def _call(self, method: str, *args: Any) -> Any:
        with self._lock:
            if self._conn is None:
                self._connect()
            status, value = self._exchange((method, args), method)
        if status == "error":
            raise value
        return value

    def _exchange(self, message: tuple[Any, ...], what: str) -> tuple[str, Any]:
        """One message to the driver process and its answer; any failure drops that process."""
        try:
            assert self._conn is not None
            self._conn.send(message)
            if not self._conn.poll(self.connect_timeout):
                raise RuntimeUnavailable(f"the Ray cluster at {self.address} did not answer ({what}) within {self.connect_timeout:g} s")
            status, value = self._conn.recv()
            if status == "unavailable":
                raise RuntimeUnavailable(value)
        except RuntimeUnavailable:
            self._drop()
            raise
        except (OSError, EOFError) as exc:
            self._drop()
            raise RuntimeUnavailable(f"lost the Ray driver process ({what}): {exc}") from exc
        return status, value

    def _connect(self) -> None:
        if time.monotonic() < self._retry_at:
            wait = self._retry_at - time.monotonic()
            raise RuntimeUnavailable(f"the Ray cluster at {self.address} is unreachable; retrying in {wait:.1f} s")
        if (target := _host_port(self.address)) is not None:
            try:  # a refused connection needs no driver process to tell
                socket.create_connection(target, timeout=min(2.0, self.connect_timeout)).close()
            except OSError as exc:
                self._drop()
                raise RuntimeUnavailable(f"cannot reach the Ray head at {self.address}: {exc}") from exc
        parent, child = socket.socketpair()
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        env.setdefault("RAY_BACKEND_LOG_LEVEL", "error")
        with child:
            self._child = subprocess.Popen(
                [sys.executable, "-c", "from inferd.runtime.ray_actor import driver_main; driver_main()", str(child.fileno())],
                pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
            )
        threading.Thread(target=_forward_log, args=(self._child,), name="ray-driver-log", daemon=True).start()
        self._conn = Connection(parent.detach())
        self._exchange((self.address, self.namespace), "connect")
        self._backoff = 0.0

    def _drop(self, grace: float = 0.0) -> None:
        """Forget the driver process (killing it if it still runs) and back off before the next one."""
        conn, child, self._conn, self._child = self._conn, self._child, None, None
        if conn is not None:
            conn.close()
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=grace)
            if child.poll() is None:
                child.kill()
                child.wait()
        self._backoff = min(MAX_BACKOFF_S, max(1.0, self._backoff * 2))
        self._retry_at = time.monotonic() + self._backoff


def _forward_log(child: subprocess.Popen[bytes]) -> None:
    """Ray's own output of the driver process, as our log records (errors as warnings)."""
    assert child.stderr is not None
    for raw in child.stderr:
        line = raw.decode(errors="replace").rstrip()
        if line:
            error = " E " in line[:40] or "Error" in line
            log.log(logging.WARNING if error else logging.DEBUG, "ray driver %s: %s", child.pid, line)
