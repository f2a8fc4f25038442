"""Replicas as processes on this machine.

Each engine runs in its own session, so it outlives the controller that started it, and
carries labels in its environment (``INFERD_REPLICA_ID``, ``INFERD_REPLICA_HANDLE``,
``INFERD_RUNTIME_OWNER``, its endpoint). That is how a controller started later (after a
crash, an upgrade, or a leader change) finds and adopts every process of this installation
by scanning ``/proc``. A pid is only trusted with the start time the kernel gives it, so a
reused pid is never mistaken for a replica.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from inferd.engines.activity import in_flight as engine_in_flight
from inferd.engines.probe import is_ready_sync
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


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # the command name may contain spaces


def _alive(pid: int, started: str) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X") and fields[19] == started


def _environment(pid: int) -> dict[str, str]:
    try:
        raw = (_PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


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
    ready: bool = False

    def state(self) -> ReplicaState:
        if not _alive(self.pid, self.started):
            tail = log_tail(self.log_path)
            return ReplicaState(Phase.EXITED, self.endpoint, LOCAL_NODE,
                                "the model server exited" + (f": {tail.splitlines()[-1]}" if tail else ""))
        if not self.ready:
            parts = urlsplit(self.endpoint)
            self.ready = is_ready_sync(parts.hostname or "", parts.port or 0, self.health_path, timeout=1.0)
        return ReplicaState(Phase.READY if self.ready else Phase.STARTING, self.endpoint, LOCAL_NODE)

    def signal(self, sig: signal.Signals) -> None:
        if _alive(self.pid, self.started):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)


class LocalRuntime:
    name = "local"

    def __init__(self, owner: str, *, cache_dir: Path, log_dir: Path, host: str = "127.0.0.1") -> None:
        self.owner = owner
        self.cache_dir = cache_dir
        self.log_dir = log_dir
        self.host = host
        self._lock = threading.Lock()
        self._started: dict[str, ReplicaProcess] = {}
        self._adopted: dict[str, _Adopted] = {}

    def start(self, request: ReplicaRequest) -> str:
        handle = f"local:{secrets.token_hex(6)}"
        labels = {REPLICA_ENV: request.replica_id, HANDLE_ENV: handle, OWNER_ENV: self.owner}
        process = ReplicaProcess(request, Placement(self.host, LOCAL_NODE, self.cache_dir, self.log_dir, labels))
        with self._lock:
            self._started[handle] = process
        process.start()
        return handle

    def _find(self, handle: str) -> ReplicaProcess | _Adopted | None:
        with self._lock:
            found = self._started.get(handle) or self._adopted.get(handle)
        if found is None:
            self.discover()
            with self._lock:
                found = self._adopted.get(handle)
        return found

    def observe(self, handles: Mapping[str, str]) -> dict[str, ReplicaState]:
        states = {}
        for replica_id, handle in handles.items():
            found = self._find(handle)
            states[replica_id] = found.state() if found else ReplicaState(Phase.LOST, node=LOCAL_NODE, detail="no such process")
        return states

    def discover(self) -> dict[str, str]:
        """Every engine process of this owner (started here or by an earlier controller)."""
        found: dict[str, str] = {}
        with self._lock:
            for handle, process in self._started.items():
                if process.state().phase is not Phase.EXITED:
                    found[process.request.replica_id] = handle
        for entry in _PROC.iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            env = _environment(pid)
            if env.get(OWNER_ENV) != self.owner or HANDLE_ENV not in env:
                continue
            fields = _stat_fields(pid)
            if fields is None or not _alive(pid, fields[19]):
                continue
            handle, replica_id = env[HANDLE_ENV], env.get(REPLICA_ENV, "")
            found[replica_id] = handle
            with self._lock:
                if handle not in self._started and handle not in self._adopted:
                    self._adopted[handle] = _Adopted(
                        replica_id, pid, fields[19], env.get(ENDPOINT_ENV, ""), env.get(HEALTH_ENV, "/health"),
                        env.get(ENGINE_ENV, ""), self._log_path(env),
                    )
        return found

    def _log_path(self, env: dict[str, str]) -> Path:
        matches = list(self.log_dir.glob(f"*/{env.get(REPLICA_ENV, '-')}.log"))
        return matches[0] if matches else self.log_dir / "unknown.log"

    def in_flight(self, handle: str) -> int | None:
        found = self._find(handle)
        if isinstance(found, ReplicaProcess):
            return found.in_flight()
        if isinstance(found, _Adopted) and found.endpoint:
            parts = urlsplit(found.endpoint)
            return engine_in_flight(parts.hostname or "", parts.port or 0, found.engine)
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
        elif found is not None:
            found.signal(signal.SIGKILL)
        with self._lock:
            self._started.pop(handle, None)
            self._adopted.pop(handle, None)

    def logs(self, handle: str, lines: int = 50) -> str:
        found = self._find(handle)
        if isinstance(found, ReplicaProcess):
            return found.logs(lines)
        if isinstance(found, _Adopted):
            return log_tail(found.log_path, lines=lines, max_bytes=max(16_384, lines * 400))
        return ""

    def discard_logs(self, instance_id: str, replica_id: str) -> None:
        """Removes the replica's log, and the instance's log directory once it is empty."""
        directory = self.log_dir / instance_id
        for path in directory.glob(f"{replica_id}.log*"):
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            directory.rmdir()

    def nodes(self) -> list[NodeResources] | None:
        return None  # the catalog's counts describe this machine

    def close(self) -> None:
        pass
