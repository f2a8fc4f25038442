"""One replica's model-server process on the node that runs it: prepare, launch, probe, stop.

Shared by both runtimes: the local runtime runs it in the controller's process, the Ray
runtime inside a detached actor on the replica's node. Preparation (a hub download can take
minutes) runs in a background thread, so nothing that asks for the state ever waits for it.

The engine gets an allow-listed environment: never the server's secrets (secret key, database
URL); the Hugging Face token only where the engine itself downloads (vLLM).

Its output goes straight to its log file (``O_APPEND``), which ``state()`` keeps within the
replica's size cap (``logfiles.rotate``) each time it is asked. An engine that cannot listen on
the port it was given (another process took it between the choice and the engine's bind) exits,
and its state says so in those words.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from inferd.engines.activity import in_flight as engine_in_flight
from inferd.engines.artifacts import (
    DEFAULT_HUB,
    GatedModelError,
    HubError,
    ModelNotFound,
    ModelTooLarge,
    human_bytes,
    resolve,
)
from inferd.engines.base import EngineUnavailable, LaunchSpec, engine_for
from inferd.engines.probe import is_ready_sync
from inferd.runtime import logfiles
from inferd.runtime.base import Phase, ReplicaRequest, ReplicaState

REPLICA_ENV = "INFERD_REPLICA_ID"
HANDLE_ENV = "INFERD_REPLICA_HANDLE"
OWNER_ENV = "INFERD_RUNTIME_OWNER"
ENDPOINT_ENV = "INFERD_REPLICA_ENDPOINT"
HEALTH_ENV = "INFERD_REPLICA_HEALTH"
ENGINE_ENV = "INFERD_REPLICA_ENGINE"

_ALLOWED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "LD_LIBRARY_PATH",
                "SSL_CERT_FILE", "SSL_CERT_DIR")
_ALLOWED_PREFIXES = ("LC_", "CUDA_", "NVIDIA_", "HIP_", "ROCR_", "OMP_", "VLLM_", "HF_HUB_OFFLINE")
_PR_SET_PDEATHSIG = 1
_BIND_FAILURES = ("couldn't bind", "could not bind", "address already in use", "error while attempting to bind",
                  "eaddrinuse")
"""What llama-server (``couldn't bind HTTP server socket``) and vLLM/uvicorn (``[Errno 98] error
while attempting to bind … address already in use``) log when their port is taken."""


def engine_environment(extra: dict[str, str]) -> dict[str, str]:
    """What a model server may see of our environment: the allow-list, then ``extra``."""
    base = {k: v for k, v in os.environ.items() if k in _ALLOWED_ENV or k.startswith(_ALLOWED_PREFIXES)}
    return {**base, **extra}


_SAFE_ERRORS = (GatedModelError, ModelNotFound, ModelTooLarge, HubError)
"""Their messages name the model, sizes and the hub's answer: fit for the instance's owner."""


def _public(exc: Exception) -> str:
    if isinstance(exc, ModelNotFound) and str(exc).startswith("model path "):
        return "the model's files are missing on the server"  # a catalog ``file:`` path: the operator's
    if isinstance(exc, (*_SAFE_ERRORS, DownloadCancelled)):
        return str(exc)
    if isinstance(exc, EngineUnavailable):
        return "the model server is not installed where the replica runs"
    return f"the model could not be prepared ({type(exc).__name__})"


def free_port(host: str) -> int:
    """A port nothing listens on right now (the kernel's choice for port 0). Nothing reserves it:
    callers that start several engines must not hand out one that another still holds."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class DownloadCancelled(RuntimeError):
    """Raised from the progress callback to stop a download nobody waits for any more."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """In a Ray actor the engine must not outlive the actor (killed actor, lost node).
    Note: the signal follows the *thread* that forked, see ``_prepare_and_launch``."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def log_tail(path: Path, lines: int = 8, max_bytes: int = 16_384, *, since: int = 0) -> str:
    """The end of a replica's log (and of its older generation), for error reasons and ``inferd logs``."""
    return logfiles.tail(path, lines, max_bytes, since=since)


def log_excerpt(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a replica's log, for ``inferd logs`` (long lines allowed)."""
    return log_tail(path, lines=lines, max_bytes=max(16_384, lines * 400))


def endpoint_ready(endpoint: str, health_path: str) -> bool:
    """One health probe of the engine at ``endpoint`` (``http://host:port``)."""
    parts = urlsplit(endpoint)
    return is_ready_sync(parts.hostname or "", parts.port or 0, health_path, timeout=1.0)


def endpoint_in_flight(endpoint: str, engine: str) -> int | None:
    """Requests the engine at ``endpoint`` is working on, from its own metrics."""
    parts = urlsplit(endpoint)
    return engine_in_flight(parts.hostname or "", parts.port or 0, engine)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
PROGRESS_CHARS = 160


def last_line(text: str) -> str | None:
    """The last line an engine logged, without colour codes, cut to fit a table cell."""
    lines = [line for line in _ANSI.sub("", text).splitlines() if line.strip()]
    if not lines:
        return None
    line = lines[-1].strip()
    return line if len(line) <= PROGRESS_CHARS else line[: PROGRESS_CHARS - 1] + "…"


def environment_of(pid: int) -> dict[str, str]:
    """A process's environment as the kernel shows it (empty when gone or not ours to read)."""
    try:
        raw = (Path("/proc") / str(pid) / "environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def signal_labelled(name: str, value: str, sig: signal.Signals) -> int:
    """Signal every process whose environment has ``name=value``; how many there were.

    The way to reach all of an engine's processes: vLLM's engine core outlives a killed API
    server (and its process group leader), keeping gigabytes; it carries the labels, since
    children inherit the environment (vLLM keeps it readable with ``SPT_NOENV``).
    """
    hit = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        if environment_of(int(entry.name)).get(name) == value:
            with contextlib.suppress(OSError):  # gone meanwhile
                os.kill(int(entry.name), sig)
                hit += 1
    return hit


def exit_reason(returncode: int | None, tail: str, endpoint: str | None) -> str:
    """Why an engine stopped, in the words an operator needs: a port taken by another process is
    named as such (a restart picks another port); otherwise the last line it logged."""
    if any(marker in tail.lower() for marker in _BIND_FAILURES):
        where = urlsplit(endpoint).netloc if endpoint else "its port"
        return (f"the model server could not listen on {where}: the port is taken by another process "
                "(a restart picks another port)")
    code = f" (code {returncode})" if returncode is not None else ""
    return f"the model server exited{code}" + (f": {tail.splitlines()[-1]}" if tail else "")


@dataclass
class Placement:
    """Where a replica process lives: its node's address, directories, and how it is labelled."""

    host: str
    node: str
    cache_dir: Path
    log_dir: Path
    labels: dict[str, str] = field(default_factory=dict)
    """Environment entries that identify the process (replica id, handle, owner) for adoption."""
    die_with_parent: bool = False
    own_session: bool = True
    pick_port: Callable[[str], int] | None = None
    """Chooses the engine's port on ``host``; default ``free_port`` (the local runtime passes one
    that never returns a port another of its replicas holds)."""
    log_max_bytes: int = field(default_factory=logfiles.max_bytes_from_env)
    """Cap of this replica's log on disk, both generations together (``logfiles.rotate``)."""


class ReplicaProcess:
    """Prepare the model, launch the engine, answer for its state. Thread-safe."""

    def __init__(self, request: ReplicaRequest, placement: Placement) -> None:
        self.request = request
        self.placement = placement
        self.log_path = placement.log_dir / request.instance_id / f"{request.replica_id}.log"
        self._lock = threading.Lock()
        self._phase = Phase.DOWNLOADING
        self._detail: str | None = "preparing the model"
        self._endpoint: str | None = None
        self._health_path = "/health"
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._log_start = 0
        """Size of the log when this engine was launched: what it wrote comes after."""
        self._rotating = threading.Lock()
        self._cancelled = False
        self._thread = threading.Thread(target=self._prepare_and_launch, name=f"replica-{request.replica_id[:8]}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # -- background -----------------------------------------------------------------------
    def _prepare_and_launch(self) -> None:
        try:
            launch = self._launch_spec(self._progress)
            self._launch(launch)
        except Exception as exc:  # the reason is the replica's status, not a crash
            self._log_failure(exc)
            with self._lock:
                self._phase, self._detail = Phase.EXITED, f"cannot start: {_public(exc)}"
            return
        if self.placement.die_with_parent and self._process is not None:
            # PR_SET_PDEATHSIG fires when the *thread* that forked the engine ends, not the
            # process: this thread lives as long as the engine (waiting without reaping, so
            # ``poll()`` still sees the exit code), and dies with the actor's process.
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitid(os.P_PID, self._process.pid, os.WEXITED | os.WNOWAIT)

    def _log_failure(self, exc: Exception) -> None:
        """The whole story for operators (``inferd logs``); the status carries a short one."""
        with contextlib.suppress(OSError):
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a") as log:
                log.write("inferd: cannot start the model server:\n")
                log.write("".join(traceback.format_exception(exc)))

    def _progress(self, done: int, total: int | None) -> None:
        if self._cancelled:  # killed while downloading: abort (resolve removes the partial file)
            raise DownloadCancelled("the replica was stopped while its model was downloading")
        text = f"downloading {human_bytes(done)}" + (f" of {human_bytes(total)} ({100 * done // max(total, 1)}%)" if total else "")
        with self._lock:
            self._detail = text

    def _launch_spec(self, on_progress: Callable[[int, int | None], None]) -> LaunchSpec:
        request = self.request
        artifact = resolve(
            request.source,
            slug=request.model_slug,
            cache_dir=self.placement.cache_dir,
            hf_token=request.hf_token,
            gated=request.gated,
            max_bytes=request.max_download_bytes,
            on_progress=on_progress,
            hub_url=os.environ.get("HF_ENDPOINT") or DEFAULT_HUB,
        )
        host = self.placement.host
        port = (self.placement.pick_port or free_port)(host)
        self._port = port
        return engine_for(request.engine).launch_spec(
            artifact,
            host=host,
            port=port,
            slots=request.slots,
            threads=request.threads,
            gpu_count=request.gpus,
            hf_token=request.hf_token,
            extra_args=request.engine_args,
            options=request.options,
        )

    def _launch(self, launch: LaunchSpec) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        endpoint = launch.base_url
        env = dict(launch.env)
        if self.request.devices:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(d) for d in self.request.devices)
        env.update(self.placement.labels)
        env.update({ENDPOINT_ENV: endpoint, HEALTH_ENV: launch.health_path, ENGINE_ENV: self.request.engine})
        with self._lock:
            if self._cancelled:
                self._phase, self._detail = Phase.EXITED, "stopped before its model server started"
                return
            with open(self.log_path, "ab") as log:  # O_APPEND: rotation may truncate it under the engine
                self._log_start = os.fstat(log.fileno()).st_size
                self._process = subprocess.Popen(
                    launch.argv,
                    env=engine_environment(env),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=self.placement.own_session,
                    close_fds=True,
                    preexec_fn=_die_with_parent if self.placement.die_with_parent else None,  # noqa: PLW1509
                )
            self._endpoint, self._health_path = endpoint, launch.health_path
            self._phase, self._detail = Phase.STARTING, None

    # -- questions ------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def port(self) -> int | None:
        """The engine's port, once chosen (before its launch)."""
        return self._port

    def running(self) -> bool:
        """Preparing, or launched and not exited (no health probe: cheap)."""
        with self._lock:
            process, phase = self._process, self._phase
        if process is not None:
            return process.poll() is None
        return phase is not Phase.EXITED and not self._cancelled

    def rotate_log(self) -> None:
        """Keep the log within its cap; one thread at a time (a Ray actor answers calls concurrently)."""
        if self._process is None or not self._rotating.acquire(blocking=False):
            return
        try:
            logfiles.rotate(self.log_path, self.placement.log_max_bytes)
        except OSError:
            pass  # a full or read-only disk must not make the replica look unhealthy
        finally:
            self._rotating.release()

    def discard_logs(self) -> None:
        logfiles.discard(self.log_path)

    def cancel(self) -> None:
        """No engine starts after this (a preparation still running ends without launching one)."""
        with self._lock:
            self._cancelled = True

    def state(self) -> ReplicaState:
        """Probes the engine while it is starting; a ready engine is only checked for exit."""
        self.rotate_log()
        with self._lock:
            process, phase = self._process, self._phase
        if process is not None and process.poll() is not None:
            tail = log_tail(self.log_path, since=self._log_start)
            reason = exit_reason(process.returncode, tail, self._endpoint)
            with self._lock:
                if self._phase is not Phase.EXITED:
                    self._phase, self._detail = Phase.EXITED, reason
        elif phase is Phase.STARTING and self._endpoint:
            if endpoint_ready(self._endpoint, self._health_path):
                with self._lock:
                    self._phase, self._detail = Phase.READY, None
            else:  # an engine that loads for minutes (vLLM) shows what it is doing
                line = last_line(log_tail(self.log_path, lines=1, max_bytes=4096, since=self._log_start))
                with self._lock:
                    if self._phase is Phase.STARTING:
                        self._detail = line
        with self._lock:
            return ReplicaState(self._phase, self._endpoint, self.placement.node, self._detail)

    def in_flight(self) -> int | None:
        return endpoint_in_flight(self._endpoint, self.request.engine) if self._endpoint else None

    def logs(self, lines: int = 50) -> str:
        return log_excerpt(self.log_path, lines)

    # -- stopping -------------------------------------------------------------------------
    def terminate(self) -> None:
        """SIGTERM to the engine; before it is launched, the preparation is abandoned instead."""
        with self._lock:
            if self._process is None:
                self._cancelled = True
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL to the engine and to every process that carries its handle (its children,
        also those a crashed engine left behind)."""
        with self._lock:
            self._cancelled = True
        self._signal(signal.SIGKILL)
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=5)
            if handle := self.placement.labels.get(HANDLE_ENV):
                signal_labelled(HANDLE_ENV, handle, signal.SIGKILL)

    def _signal(self, sig: signal.Signals) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.placement.own_session:
                os.killpg(process.pid, sig)  # the engine leads its own process group
            else:
                process.send_signal(sig)

