"""Replicas as processes on this machine.

Each engine runs in its own session, so it outlives the controller that started it, and
carries labels in its environment (``INFERD_REPLICA_ID``, ``INFERD_REPLICA_HANDLE``,
``INFERD_RUNTIME_OWNER``, its endpoint). That is how a controller started later (after a
crash, an upgrade, or a leader change) finds and adopts every process of this installation
by scanning ``/proc``. A pid is only trusted with the start time the kernel gives it, so a
reused pid is never mistaken for a replica.

Two rules keep a crash from leaving model servers without an owner, or two replicas on a port:
- **one process per replica.** The controller asks to start a replica only when none of its
  processes should run (a new row, a failed or stopped one); so ``start`` first ends any process
  this runtime knows for that replica id (one a crashed controller failed to kill). ``discover``
  reports everything else that runs, and the controller ends what its rows do not record;
- **ports are never handed out twice.** A port is reserved from the moment it is chosen (before
  the engine binds it: for vLLM, minutes later) until the replica is killed, and the ports of
  adopted engines (from their labelled endpoint) count as held; the kernel's choice is retried
  until it is none of those.

Each engine's log is kept within ``log_max_bytes`` (``logfiles``) whenever its state is asked,
adopted engines included, and removed with the replica (``discard_logs``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from inferd.runtime import logfiles
from inferd.runtime import process as processes
from inferd.runtime.base import NodeResources, Phase, ReplicaRequest, ReplicaState
from inferd.runtime.process import (
    ENDPOINT_ENV,
    ENGINE_ENV,
    HANDLE_ENV,
    HEALTH_ENV,
    OWNER_ENV,
    REPLICA_ENV,
    Placement,
    ReplicaProcess,
    log_tail,
)

_PROC = Path("/proc")
LOCAL_NODE = "local"
PORT_ATTEMPTS = 64
log = logging.getLogger("inferd.runtime")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # the command name may contain spaces


def _alive(pid: int, started: str) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X") and fields[19] == started


@dataclass
class _Adopted:
    """An engine process started by an earlier controller, known only through ``/proc``."""

    replica_id: str
    pid: int
    started: str
    endpoint: str
    health_path: str
    engine: str
    log_path: Path
    log_max_bytes: int
    ready: bool = False

    @property
    def port(self) -> int | None:
        try:
            return urlsplit(self.endpoint).port
        except ValueError:
            return None

    def state(self) -> ReplicaState:
        if not _alive(self.pid, self.started):
            return ReplicaState(Phase.EXITED, self.endpoint, LOCAL_NODE,
                                processes.exit_reason(None, log_tail(self.log_path), self.endpoint))
        with contextlib.suppress(OSError):  # a full or read-only disk must not make the replica look unhealthy
            logfiles.rotate(self.log_path, self.log_max_bytes)
        if not self.ready:
            self.ready = processes.endpoint_ready(self.endpoint, self.health_path)
        return ReplicaState(Phase.READY if self.ready else Phase.STARTING, self.endpoint, LOCAL_NODE)

    def signal(self, sig: signal.Signals) -> None:
        if _alive(self.pid, self.started):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)


class LocalRuntime:
    name = "local"

    def __init__(
        self, owner: str, *, cache_dir: Path, log_dir: Path, host: str = "127.0.0.1", log_max_bytes: int | None = None
    ) -> None:
        self.owner = owner
        self.cache_dir = cache_dir
        self.log_dir = log_dir
        self.host = host
        self.log_max_bytes = log_max_bytes or logfiles.max_bytes_from_env()
        self._lock = threading.Lock()
        self._started: dict[str, ReplicaProcess] = {}
        self._adopted: dict[str, _Adopted] = {}
        self._ports: dict[str, int] = {}
        """``handle → port`` chosen for a replica started here, held until it is killed."""

    def start(self, request: ReplicaRequest) -> str:
        self._end_earlier(request.replica_id)
        handle = f"local:{secrets.token_hex(6)}"
        labels = {REPLICA_ENV: request.replica_id, HANDLE_ENV: handle, OWNER_ENV: self.owner}
        placement = Placement(self.host, LOCAL_NODE, self.cache_dir, self.log_dir, labels,
                              pick_port=lambda host: self._reserve_port(handle, host), log_max_bytes=self.log_max_bytes)
        process = ReplicaProcess(request, placement)
        with self._lock:
            self._started[handle] = process
        process.start()
        return handle

    def _end_earlier(self, replica_id: str) -> None:
        """A replica being started has no other process that should run: end what is left of one
        (a controller that crashed between forgetting a handle and killing it)."""
        with self._lock:
            earlier = [h for h, p in self._started.items() if p.request.replica_id == replica_id]
            earlier += [h for h, a in self._adopted.items() if a.replica_id == replica_id]
        for handle in earlier:
            log.warning("replica %s starts again: ending its earlier process (%s)", replica_id, handle)
            self.kill(handle)

    def _reserve_port(self, handle: str, host: str) -> int:
        """A free port (the kernel's choice) that no replica of this runtime holds, reserved for ``handle``."""
        for _ in range(PORT_ATTEMPTS):
            port = processes.free_port(host)
            with self._lock:
                if port not in self._held_ports():
                    if handle in self._started:  # not killed meanwhile (then nothing will launch)
                        self._ports[handle] = port
                    return port
        raise RuntimeError(f"no free port on {host} after {PORT_ATTEMPTS} attempts")

    def _held_ports(self) -> set[int]:
        """Ports of replicas started here (from their choice on) and of adopted ones (caller holds the lock)."""
        held = set(self._ports.values())
        held.update(port for adopted in self._adopted.values() if (port := adopted.port) is not None)
        return held

    def _known(self, handle: str) -> ReplicaProcess | _Adopted | None:
        with self._lock:
            return self._started.get(handle) or self._adopted.get(handle)

    def _find(self, handle: str) -> ReplicaProcess | _Adopted | None:
        """The process behind ``handle``; one unknown here may have been started by an earlier controller."""
        found = self._known(handle)
        if found is None:
            self.discover()
            found = self._known(handle)
        return found

    def observe(self, handles: Mapping[str, str]) -> dict[str, ReplicaState]:
        if any(self._known(handle) is None for handle in handles.values()):
            self.discover()  # one /proc scan for all of them, not one per unknown handle
        states = {}
        for replica_id, handle in handles.items():
            found = self._known(handle)
            states[replica_id] = found.state() if found else ReplicaState(Phase.LOST, node=LOCAL_NODE, detail="no such process")
        return states

    def discover(self) -> dict[str, str]:
        """Every engine process of this owner (started here or by an earlier controller). Should
        two run for one replica id, the one started here wins, else the newest."""
        with self._lock:
            started = list(self._started.items())
        best: dict[str, tuple[int, int, str]] = {}  # replica id → (started here, start time, handle)

        def offer(replica_id: str, rank: tuple[int, int, str]) -> None:
            if replica_id not in best or rank > best[replica_id]:
                best[replica_id] = rank

        for handle, process in started:
            if process.running():
                offer(process.request.replica_id, (1, 0, handle))
        for entry in _PROC.iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            env = processes.environment_of(pid)
            if env.get(OWNER_ENV) != self.owner or HANDLE_ENV not in env:
                continue
            fields = _stat_fields(pid)
            if fields is None or not _alive(pid, fields[19]) or fields[2] != entry.name:
                continue  # gone, or a child of an engine (vLLM's engine core inherits the labels): its group leader counts
            handle, replica_id = env[HANDLE_ENV], env.get(REPLICA_ENV, "")
            with self._lock:
                mine = handle in self._started
                if not mine and handle not in self._adopted:
                    self._adopted[handle] = _Adopted(
                        replica_id, pid, fields[19], env.get(ENDPOINT_ENV, ""), env.get(HEALTH_ENV, "/health"),
                        env.get(ENGINE_ENV, ""), self._log_path(env), self.log_max_bytes,
                    )
            if not mine:
                offer(replica_id, (0, int(fields[19]), handle))
        return {replica_id: rank[2] for replica_id, rank in best.items()}

    def _log_path(self, env: dict[str, str]) -> Path:
        matches = list(self.log_dir.glob(f"*/{env.get(REPLICA_ENV, '-')}.log"))
        return matches[0] if matches else self.log_dir / "unknown.log"

    def in_flight(self, handle: str) -> int | None:
        found = self._find(handle)
        if isinstance(found, ReplicaProcess):
            return found.in_flight()
        if isinstance(found, _Adopted) and found.endpoint:
            return processes.endpoint_in_flight(found.endpoint, found.engine)
        return None

    def terminate(self, handle: str) -> None:
        found = self._find(handle)
        if isinstance(found, ReplicaProcess):
            found.terminate()
        elif found is not None:
            found.signal(signal.SIGTERM)

    def kill(self, handle: str) -> None:
        found = self._find(handle)
        if isinstance(found, ReplicaProcess):
            found.kill()
        else:  # adopted, or its engine is gone: what is left of it (children of a crashed engine) goes too
            if found is not None:
                found.signal(signal.SIGKILL)
            processes.signal_labelled(HANDLE_ENV, handle, signal.SIGKILL)
        with self._lock:
            self._started.pop(handle, None)
            self._adopted.pop(handle, None)
            self._ports.pop(handle, None)  # its engine is gone: the port may be handed out again

    def logs(self, handle: str, lines: int = 50) -> str:
        found = self._find(handle)
        if isinstance(found, ReplicaProcess):
            return found.logs(lines)
        if isinstance(found, _Adopted):
            return processes.log_excerpt(found.log_path, lines)
        return ""

    def discard_logs(self, instance_id: str, replica_id: str) -> None:
        """Removes the replica's log (both generations), and the instance's log directory once it is empty."""
        logfiles.discard(self.log_dir / instance_id / f"{replica_id}.log")

    def logged_replicas(self) -> set[tuple[str, str]]:
        return {(path.parent.name, path.name.split(".log")[0]) for path in self.log_dir.glob("*/*.log*")}

    def nodes(self) -> list[NodeResources] | None:
        return None  # the catalog's counts describe this machine

    def close(self) -> None:
        pass
