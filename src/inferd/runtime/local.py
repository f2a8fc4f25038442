"""Replicas as child processes on this machine.

Each replica runs in its own session (so it survives a crash of the controller and can be
adopted by the next one) and carries ``INFERD_REPLICA_ID`` and ``INFERD_RUNTIME_OWNER`` in its
environment, which is how a restarted controller finds every process it started, including
one it launched just before dying and never recorded. A pid is only trusted together with
the start time the kernel gives it, so a reused pid is never mistaken for a replica.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

from inferd.engines.base import LaunchSpec
from inferd.runtime.base import ProcessRef

REPLICA_ENV = "INFERD_REPLICA_ID"
OWNER_ENV = "INFERD_RUNTIME_OWNER"
_PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces; fields after it are separated plainly
    return raw[raw.rindex(")") + 2 :].split()


def process_start_time(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[19] if fields else None  # field 22 of /proc/pid/stat: starttime


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


class LocalRuntime:
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, replica_id: str, launch: LaunchSpec, log_path: Path) -> ProcessRef:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **launch.env, REPLICA_ENV: replica_id, OWNER_ENV: self.owner}
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                launch.argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        self._children[process.pid] = process
        started = process_start_time(process.pid) or ""
        return ProcessRef(pid=process.pid, started=started)

    def _reap(self) -> None:
        """Collect exited children so they do not linger as zombies."""
        for pid, process in list(self._children.items()):
            if process.poll() is not None:
                del self._children[pid]

    def is_running(self, ref: ProcessRef) -> bool:
        self._reap()
        return _alive(ref.pid, ref.started)

    def _signal(self, ref: ProcessRef, sig: signal.Signals) -> None:
        if not _alive(ref.pid, ref.started):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(ref.pid, sig)  # the replica leads its own process group

    def terminate(self, ref: ProcessRef) -> None:
        self._signal(ref, signal.SIGTERM)

    def kill(self, ref: ProcessRef) -> None:
        self._signal(ref, signal.SIGKILL)

    def discover(self) -> dict[str, ProcessRef]:
        self._reap()
        found: dict[str, ProcessRef] = {}
        for entry in _PROC.iterdir():
            if not entry.name.isdigit():
                continue
            env = _environment(int(entry.name))
            if env.get(OWNER_ENV) != self.owner or REPLICA_ENV not in env:
                continue
            started = process_start_time(int(entry.name))
            if started and _alive(int(entry.name), started):
                found[env[REPLICA_ENV]] = ProcessRef(pid=int(entry.name), started=started)
        return found


def log_tail(path: Path, lines: int = 8, max_bytes: int = 16_384) -> str:
    """The end of a replica's log, for error reasons shown through the API."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(line for line in text.splitlines()[-lines:] if line.strip())
