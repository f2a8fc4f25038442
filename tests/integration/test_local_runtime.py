"""``LocalRuntime`` with real processes: ports never handed to two live replicas, one process per
replica across a controller restart, an engine that cannot bind says so, logs rotated and removed.

The engine is a small stand-in for ``llama-server`` (``INFERD_LLAMA_SERVER`` points at it): it
binds ``--host``/``--port`` like the real one, answers ``/health``, prints the real one's words
when the port is taken, and writes ``N`` bytes of log lines on ``GET /spam?bytes=N``. So these
tests need no llama.cpp build and take a second or two.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from inferd.runtime import process as processes
from inferd.runtime.base import Phase, ReplicaRequest, ReplicaState
from inferd.runtime.local import LocalRuntime
from tests.support.replicas import process_exists
from tests.support.waiting import wait_for

FAKE_ENGINE = r'''#!{python}
import http.server, sys, urllib.parse
args = sys.argv[1:]
if "--help" in args:
    print("--no-webui")
    sys.exit(0)
host, port = args[args.index("--host") + 1], int(args[args.index("--port") + 1])
print(f"fake llama-server on {{host}}:{{port}}", flush=True)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/spam":
            count = int(urllib.parse.parse_qs(url.query)["bytes"][0])
            line = "spam " + "x" * 58 + "\n"
            sys.stdout.write(line * (count // len(line)))
            sys.stdout.flush()
        self.send_response(200 if url.path in ("/health", "/spam") else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass

try:
    server = http.server.HTTPServer((host, port), Handler)
except OSError as exc:
    print(f"E srv  start: couldn't bind HTTP server socket, hostname: {{host}}, port: {{port}} ({{exc}})", flush=True)
    print("E srv  llama_server: exiting due to HTTP server error", flush=True)
    sys.exit(1)
server.serve_forever()
'''


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "fake-llama-server"
    script.write_text(FAKE_ENGINE.format(python=sys.executable))
    script.chmod(0o755)
    monkeypatch.setenv("INFERD_LLAMA_SERVER", str(script))
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF fake")
    return model


Make = Callable[..., LocalRuntime]


@pytest.fixture
def make_runtime(tmp_path: Path, engine: Path) -> Iterator[Make]:
    """LocalRuntimes of one installation (a controller, then its successor after a "crash");
    every engine they started is SIGKILLed at the end (by pid, found by the owner label)."""
    owner = f"test-{uuid.uuid4().hex[:12]}"

    def make(**kwargs: object) -> LocalRuntime:
        return LocalRuntime(owner, cache_dir=tmp_path / "models", log_dir=tmp_path / "logs", **kwargs)  # type: ignore[arg-type]

    yield make
    for pid in owned_pids(owner):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def owned_pids(owner: str) -> dict[int, str]:
    """``pid → replica id`` of live processes labelled with ``owner``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = dict(item.split(b"=", 1) for item in (entry / "environ").read_bytes().split(b"\0") if b"=" in item)
        except OSError:
            continue
        if env.get(b"INFERD_RUNTIME_OWNER") == owner.encode() and process_exists(int(entry.name)):
            found[int(entry.name)] = env.get(b"INFERD_REPLICA_ID", b"").decode()
    return found


def request(model: Path, replica_id: str | None = None) -> ReplicaRequest:
    return ReplicaRequest(replica_id=replica_id or str(uuid.uuid4()), instance_id="instance-1", model_slug="fake",
                          engine="llama.cpp", source=f"file:{model}", slots=1, threads=1)


def wait_phase(runtime: LocalRuntime, replica_id: str, handle: str, phase: Phase) -> ReplicaState:
    def probe() -> ReplicaState | None:
        state = runtime.observe({replica_id: handle})[replica_id]
        if phase is not Phase.EXITED:
            assert state.phase is not Phase.EXITED, state
        return state if state.phase is phase else None

    return wait_for(probe, timeout=20, interval=0.05, what=f"{replica_id[:8]} to be {phase}")


def port_of(state: ReplicaState) -> int:
    assert state.endpoint
    port = httpx.URL(state.endpoint).port
    assert port is not None
    return port


def kernel_answers(monkeypatch: pytest.MonkeyPatch, *ports: int) -> None:
    """``free_port`` answers ``ports`` first (as the kernel may, once a port is free again), then as usual."""
    queue, real = list(ports), processes.free_port
    monkeypatch.setattr(processes, "free_port", lambda host: queue.pop(0) if queue else real(host))


def start_ready(runtime: LocalRuntime, model: Path, replica_id: str | None = None) -> tuple[str, str, int]:
    req = request(model, replica_id)
    handle = runtime.start(req)
    return req.replica_id, handle, port_of(wait_phase(runtime, req.replica_id, handle, Phase.READY))


def test_a_port_a_live_replica_holds_is_never_handed_out(make_runtime: Make, engine: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = make_runtime()
    first, first_handle, port = start_ready(runtime, engine)
    kernel_answers(monkeypatch, port, port)
    second, second_handle, other = start_ready(runtime, engine)
    assert other != port
    assert wait_phase(runtime, first, first_handle, Phase.READY)

    # a controller started after a crash: the engines it adopts hold their ports too
    successor = make_runtime()
    assert successor.discover() == {first: first_handle, second: second_handle}
    kernel_answers(monkeypatch, port, other)
    _, _, third = start_ready(successor, engine)
    assert third not in (port, other)


def test_replicas_starting_at_once_get_different_ports(make_runtime: Make, engine: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = make_runtime()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        same = probe.getsockname()[1]
    kernel_answers(monkeypatch, same, same, same)  # released and chosen again before either engine bound it
    requests = [request(engine) for _ in range(3)]
    handles = [runtime.start(r) for r in requests]
    states = [wait_phase(runtime, r.replica_id, h, Phase.READY) for r, h in zip(requests, handles, strict=True)]
    assert len({port_of(s) for s in states}) == 3


def test_an_engine_that_cannot_bind_its_port_says_so(make_runtime: Make, engine: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = make_runtime()
    with socket.socket() as squatter:  # another program took the port between the choice and the bind
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        kernel_answers(monkeypatch, taken)
        req = request(engine)
        handle = runtime.start(req)
        state = wait_phase(runtime, req.replica_id, handle, Phase.EXITED)
    assert state.detail == (f"the model server could not listen on 127.0.0.1:{taken}: the port is taken by another "
                            "process (a restart picks another port)")
    runtime.kill(handle)
    _, _, port = start_ready(runtime, engine, req.replica_id)  # the controller's restart
    assert port != taken


def test_starting_a_replica_again_ends_its_earlier_process(make_runtime: Make, engine: Path) -> None:
    """A controller that crashed after forgetting a handle but before killing it left an engine
    running; its successor starting that replica again never leaves two processes for it."""
    crashed = make_runtime()
    replica_id, old_handle, _ = start_ready(crashed, engine)
    successor = make_runtime()
    assert successor.discover() == {replica_id: old_handle}
    _, new_handle, _ = start_ready(successor, engine, replica_id)
    assert successor.discover() == {replica_id: new_handle}
    assert list(owned_pids(crashed.owner).values()) == [replica_id]
    assert successor.observe({replica_id: old_handle})[replica_id].phase in (Phase.EXITED, Phase.LOST)


def test_logs_are_rotated_within_the_cap_and_removed_with_the_replica(make_runtime: Make, engine: Path) -> None:
    cap = 8192
    runtime = make_runtime(log_max_bytes=cap)
    replica_id, handle, port = start_ready(runtime, engine)
    log = runtime.log_dir / "instance-1" / f"{replica_id}.log"
    older = log.with_name(log.name + ".1")
    for _ in range(5):
        httpx.get(f"http://127.0.0.1:{port}/spam?bytes=6000").raise_for_status()
        runtime.observe({replica_id: handle})  # a reconcile pass
        assert log.stat().st_size + older.stat().st_size <= cap
    assert older.read_bytes().startswith(b"spam ")
    httpx.get(f"http://127.0.0.1:{port}/spam?bytes=640").raise_for_status()
    assert log.read_bytes() == (b"spam " + b"x" * 58 + b"\n") * 10  # the engine writes at the new end
    assert "spam" in runtime.logs(handle, lines=20)

    successor = make_runtime(log_max_bytes=cap)  # adopted engines' logs are rotated too
    successor.discover()
    httpx.get(f"http://127.0.0.1:{port}/spam?bytes=20000").raise_for_status()
    assert successor.observe({replica_id: handle})[replica_id].phase is Phase.READY
    assert log.stat().st_size + older.stat().st_size <= cap

    successor.kill(handle)
    successor.discard_logs("instance-1", replica_id)
    assert not (runtime.log_dir / "instance-1").exists()
