"""One replica's model-server process on the node that runs it: prepare, launch, probe, stop.

Shared by both runtimes: the local runtime runs it in the controller's process, the Ray
runtime inside a detached actor on the replica's node. Preparation (a hub download can take
minutes) runs in a background thread, so nothing that asks for the state ever waits for it.

The engine gets an allow-listed environment: never the server's secrets (secret key, database
URL); the Hugging Face token only where the engine itself downloads (vLLM).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from inferd.engines.activity import in_flight as engine_in_flight
from inferd.engines.artifacts import DEFAULT_HUB, human_bytes, resolve
from inferd.engines.base import LaunchSpec, engine_for
from inferd.engines.probe import is_ready_sync
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


def engine_environment(extra: dict[str, str]) -> dict[str, str]:
    """What a model server may see of our environment: the allow-list, then ``extra``."""
    base = {k: v for k, v in os.environ.items() if k in _ALLOWED_ENV or k.startswith(_ALLOWED_PREFIXES)}
    return {**base, **extra}


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """In a Ray actor the engine must not outlive the actor (killed actor, lost node).
    Note: the signal follows the *thread* that forked, see ``_prepare_and_launch``."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def log_tail(path: Path, lines: int = 8, max_bytes: int = 16_384) -> str:
    """The end of a replica's log, for error reasons and ``inferd logs``."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(line for line in text.splitlines()[-lines:] if line.strip())


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
            with self._lock:
                self._phase, self._detail = Phase.EXITED, f"cannot start: {exc}"
            return
        if self.placement.die_with_parent and self._process is not None:
            # PR_SET_PDEATHSIG fires when the *thread* that forked the engine ends, not the
            # process: this thread lives as long as the engine (waiting without reaping, so
            # ``poll()`` still sees the exit code), and dies with the actor's process.
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitid(os.P_PID, self._process.pid, os.WEXITED | os.WNOWAIT)

    def _progress(self, done: int, total: int | None) -> None:
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
        return engine_for(request.engine).launch_spec(
            artifact,
            host=host,
            port=free_port(host),
            slots=request.slots,
            threads=request.threads,
            gpu_count=request.gpus,
            hf_token=request.hf_token,
            extra_args=request.engine_args,
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
                return
            with open(self.log_path, "ab") as log:
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

    def state(self) -> ReplicaState:
        """Probes the engine while it is starting; a ready engine is only checked for exit."""
        with self._lock:
            process, phase = self._process, self._phase
        if process is not None and process.poll() is not None:
            tail = log_tail(self.log_path)
            reason = f"the model server exited (code {process.returncode})" + (f": {tail.splitlines()[-1]}" if tail else "")
            with self._lock:
                if self._phase is not Phase.EXITED:
                    self._phase, self._detail = Phase.EXITED, reason
        elif phase is Phase.STARTING and self._endpoint:
            parts = urlsplit(self._endpoint)
            if is_ready_sync(parts.hostname or "", parts.port or 0, self._health_path, timeout=1.0):
                with self._lock:
                    self._phase = Phase.READY
        with self._lock:
            return ReplicaState(self._phase, self._endpoint, self.placement.node, self._detail)

    def in_flight(self) -> int | None:
        if not self._endpoint:
            return None
        parts = urlsplit(self._endpoint)
        return engine_in_flight(parts.hostname or "", parts.port or 0, self.request.engine)

    def logs(self, lines: int = 50) -> str:
        return log_tail(self.log_path, lines=lines, max_bytes=max(16_384, lines * 400))

    # -- stopping -------------------------------------------------------------------------
    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        with self._lock:
            self._cancelled = True
        self._signal(signal.SIGKILL)
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=5)

    def _signal(self, sig: signal.Signals) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.placement.own_session:
                os.killpg(process.pid, sig)  # the engine leads its own process group
            else:
                process.send_signal(sig)

