"""The processes that ``gateway_bench.py`` and ``profile_gateway.py`` put side by side.

- a **trivial upstream**: a raw-asyncio HTTP/1.1 server (no framework, its own process) that
  answers a chat completion at once, or streams N chunks with an optional gap between them;
- a **standalone inferd gateway**: ``create_gateway_app`` with a fixed route snapshot, served by
  the same uvicorn setup as ``inferd serve`` (``inferd.cli.servers.build_server``), alone in its
  process, optionally under cProfile (SIGUSR1 starts it, SIGUSR2 stops it and writes the stats);
- **nginx** (Debian's, ``bench/setup-nginx.sh``) with a generated config: ``proxy_pass`` to an
  upstream with keepalive, ``proxy_buffering off``, ``proxy_http_version 1.1``, one worker;
- **LiteLLM's proxy** (``bench/setup-litellm.sh``, its own venv) with one model per upstream.

Each is a :class:`Managed` process in a session of its own, stopped by its pid. CPU time is read
from ``/proc/<pid>/stat`` (utime + stime, also of the process's descendants where asked).

``python bench/proxies.py trivial|gateway ...`` runs the first two (the bench starts them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
GATEWAY_INSTANCE = "11111111-2222-4333-8444-555555555555"
TRIVIAL_MODEL = "m"
STREAM_CHUNKS = 32


# -- small helpers ----------------------------------------------------------------------------


def free_port() -> int:
    """A port the OS just handed out; good enough on a machine we do not race with ourselves."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_seconds(pid: int | None) -> float | None:
    """utime+stime of a process (all its threads) from /proc: who burns the 2 cores."""
    fields = _stat(pid) if pid is not None else None
    return None if fields is None else (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float | None:
    """utime+stime of ``root`` and every live descendant (nginx's worker, LiteLLM's workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo, seen = 0.0, [root], False
    while todo:
        pid = todo.pop()
        value = cpu_seconds(pid)
        if value is not None:
            total, seen = total + value, True
        todo += children.get(pid, [])
    return total if seen else None


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# -- managed processes ------------------------------------------------------------------------


@dataclass
class Managed:
    """A process the bench started (own session), with the base URL(s) it serves."""

    name: str
    process: subprocess.Popen[bytes]
    urls: dict[str, str]
    """Upstream name (``trivial``, ``engine``) -> base URL in front of it."""
    log_path: Path
    tree: bool = False
    """Count descendants' CPU too (nginx: master + worker)."""
    headers: dict[str, str] = field(default_factory=dict)
    stop_signal: int = signal.SIGTERM

    def cpu(self) -> float | None:
        return tree_cpu_seconds(self.process.pid) if self.tree else cpu_seconds(self.process.pid)

    def check(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited ({self.process.returncode}):\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_ready(self, ports: list[int], timeout: float) -> None:
        def ready() -> bool:
            self.check()
            return all(port_open(p) for p in ports)

        wait_until(ready, timeout, f"{self.name} listening")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # its own session: our pid is the group id
                self.process.wait()


def stop_process(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL if it has not ended within ``timeout`` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _spawn(name: str, argv: list[str], workdir: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], Path]:
    log_path = workdir / f"{name}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True,
                                   env={**os.environ, **(env or {})})
    return process, log_path


def start_trivial(workdir: Path, gap_ms: float = 0.0) -> Managed:
    port = free_port()
    process, log = _spawn("trivial", [sys.executable, str(HERE / "proxies.py"), "trivial", "--port", str(port),
                                      "--gap-ms", str(gap_ms)], workdir)
    managed = Managed("trivial upstream", process, {"trivial": f"http://127.0.0.1:{port}"}, log)
    managed.wait_ready([port], 30)
    return managed


def start_gateway(workdir: Path, upstream: str, profile: Path | None = None, timer: str = "wall") -> Managed:
    """The inferd gateway alone in a process, routing instance GATEWAY_INSTANCE's model ``m`` to ``upstream``."""
    from inferd.domain.tokens import new_instance_token

    port, token = free_port(), new_instance_token()
    argv = [sys.executable, str(HERE / "proxies.py"), "gateway", "--port", str(port), "--upstream", upstream]
    if profile is not None:
        argv += ["--profile", str(profile), "--timer", timer]
    process, log = _spawn("inferd-gateway", argv, workdir, {"BENCH_GATEWAY_TOKEN": token, "PYTHONUNBUFFERED": "1"})
    managed = Managed("inferd gateway", process, {"trivial": f"http://127.0.0.1:{port}/{GATEWAY_INSTANCE}"}, log,
                      headers={"Authorization": f"Bearer {token}"})
    managed.wait_ready([port], 60)
    return managed


def nginx_binary() -> str | None:
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def start_nginx(workdir: Path, upstreams: dict[str, str]) -> Managed:
    """One nginx (master + 1 worker), one ``server`` per upstream on its own port."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("no nginx: run bench/setup-nginx.sh")
    home = workdir / "nginx"
    home.mkdir()
    ports = {name: free_port() for name in upstreams}
    blocks = []
    for name, url in upstreams.items():
        hostport = url.split("://", 1)[1].rstrip("/")
        blocks.append(f"""
    upstream up_{name} {{ server {hostport}; keepalive 64; keepalive_timeout 2s; keepalive_requests 100000; }}
    server {{
        listen 127.0.0.1:{ports[name]};
        location / {{
            proxy_pass http://up_{name};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 600s;
        }}
    }}""")
    user = "user root root;\n" if os.geteuid() == 0 else ""  # the worker must reach the temp dir (mode 0700)
    (home / "nginx.conf").write_text(f"""{user}worker_processes 1;
daemon off;
pid {home}/nginx.pid;
error_log {home}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {home}/body;
    proxy_temp_path {home}/proxy;
    keepalive_timeout 65s;
    keepalive_requests 100000;
{"".join(blocks)}
}}
""")
    argv = [binary, "-p", str(home), "-c", str(home / "nginx.conf"), "-e", str(home / "error.log")]
    test = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=30)
    if test.returncode != 0:
        raise RuntimeError(f"nginx -t failed:\n{test.stderr}")
    process, log = _spawn("nginx", argv, workdir)
    managed = Managed("nginx", process, {n: f"http://127.0.0.1:{p}" for n, p in ports.items()}, log, tree=True,
                      stop_signal=signal.SIGQUIT)
    managed.wait_ready(list(ports.values()), 30)
    return managed


LITELLM_ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False", "LITELLM_LOG": "ERROR",
               "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def litellm_binary() -> Path | None:
    """What ``bench/setup-litellm.sh`` installed (installing it first if it is not there)."""
    try:
        out = subprocess.run(["bash", str(HERE / "setup-litellm.sh")], capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines or not Path(lines[-1]).exists():
        print(f"  litellm: setup failed: {out.stderr.strip()[-500:]}", flush=True)
        return None
    return Path(lines[-1])


def start_litellm(workdir: Path, binary: Path, models: dict[str, tuple[str, str]]) -> tuple[Managed, int]:
    """LiteLLM's proxy (1 worker, no database, no auth, no access log) with ``models``: name -> (upstream name, base URL);
    each is an ``openai/`` model at ``<base>/v1``. Returns at once: call ``wait_ready`` before use."""
    port = free_port()
    lines = ["model_list:"]
    for model, (_, base) in models.items():
        lines += [f"  - model_name: {json.dumps(model)}", "    litellm_params:",
                  f"      model: {json.dumps('openai/' + model)}", f"      api_base: {json.dumps(base + '/v1')}",
                  '      api_key: "none"']
    lines += ["litellm_settings:", "  telemetry: false", "  drop_params: true", "  request_timeout: 600"]
    config = workdir / "litellm.yaml"
    config.write_text("\n".join(lines) + "\n")
    logging_config = workdir / "litellm-logging.json"  # no access log (nginx and inferd write none either)
    logging_config.write_text(json.dumps({
        "version": 1, "disable_existing_loggers": False,
        "handlers": {"default": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
        "loggers": {"uvicorn": {"handlers": ["default"], "level": "INFO"},
                    "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False}},
    }))
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    argv = [str(binary), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1",
            "--log_config", str(logging_config)]
    log_path = workdir / "litellm.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True,
                                   env={**env, **LITELLM_ENV})
    urls = {upstream: f"http://127.0.0.1:{port}" for upstream, _ in models.values()}
    return Managed("litellm", process, urls, log_path, tree=True), port


# -- the trivial upstream (runs in its own process) -------------------------------------------


def _frame(data: bytes) -> bytes:
    """One chunk of a chunked transfer encoding."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def _sse(payload: dict[str, Any]) -> bytes:
    return _frame(b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n")


_BASE = {"id": "chatcmpl-bench", "created": 1700000000, "model": TRIVIAL_MODEL}
ANSWER = json.dumps({**_BASE, "object": "chat.completion", "choices": [
    {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "length"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
_CHUNK = {**_BASE, "object": "chat.completion.chunk"}
_ROLE = _sse({**_CHUNK, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
_TOKEN = _sse({**_CHUNK, "choices": [{"index": 0, "delta": {"content": "tok"}, "finish_reason": None}]})
_LAST = _sse({**_CHUNK, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
              "usage": {"prompt_tokens": 1, "completion_tokens": STREAM_CHUNKS, "total_tokens": STREAM_CHUNKS + 1}})
_DONE = _frame(b"data: [DONE]\n\n")
_JSON_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
_SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"


class TrivialHTTP(asyncio.Protocol):
    """Keep-alive HTTP/1.1, one request at a time per connection; bodies by length or chunked."""

    def __init__(self, gap: float) -> None:
        self.gap = gap
        self.buffer = b""
        self.busy = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._serve()

    def _serve(self) -> None:
        while not self.busy and self.transport is not None and not self.transport.is_closing():
            parsed = _request(self.buffer)
            if parsed is None:
                return
            method, path, headers, body, used = parsed
            self.buffer = self.buffer[used:]
            close = headers.get("connection", "").lower() == "close"
            if method == "POST" and path.endswith("/chat/completions"):
                try:
                    request = json.loads(body)
                except ValueError:
                    request = {}
                if request.get("stream"):
                    self.busy = True
                    chunks = int(request.get("max_tokens") or STREAM_CHUNKS)
                    asyncio.get_running_loop().create_task(self._stream(chunks, close))
                    return
                self._write(_JSON_HEAD % len(ANSWER) + ANSWER, close)
            else:
                models = json.dumps({"object": "list", "data": [{"id": TRIVIAL_MODEL, "object": "model"}]}).encode()
                self._write(_JSON_HEAD % len(models) + models, close)

    def _write(self, data: bytes, close: bool) -> None:
        assert self.transport is not None
        self.transport.write(data)
        if close:
            self.transport.close()

    async def _stream(self, chunks: int, close: bool) -> None:
        assert self.transport is not None
        self.transport.write(_SSE_HEAD + _ROLE)
        for _ in range(chunks):
            if self.gap:
                await asyncio.sleep(self.gap)
            if self.transport.is_closing():
                return
            self.transport.write(_TOKEN)
        self._write(_LAST + _DONE + b"0\r\n\r\n", close)
        self.busy = False
        self._serve()


def _request(buffer: bytes) -> tuple[str, str, dict[str, str], bytes, int] | None:
    """(method, path, headers, body, bytes used) of the first complete request, or None."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = buffer[:end].decode("latin-1").split("\r\n")
    method, path = lines[0].split(" ")[:2]
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    start = end + 4
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body, at = b"", start
        while True:
            eol = buffer.find(b"\r\n", at)
            if eol < 0:
                return None
            size = int(buffer[at:eol].split(b";")[0], 16)
            if len(buffer) < eol + 2 + size + 2:
                return None
            body += buffer[eol + 2:eol + 2 + size]
            at = eol + 2 + size + 2
            if size == 0:
                return method, path, headers, body, at
    length = int(headers.get("content-length") or 0)
    if len(buffer) < start + length:
        return None
    return method, path, headers, buffer[start:start + length], start + length


async def _serve_trivial(port: int, gap: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: TrivialHTTP(gap), "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()


# -- the standalone inferd gateway (runs in its own process) ----------------------------------


class StaticRoutes:
    """A route source that never changes: no database, no reload thread."""

    def __init__(self, snapshot: Any) -> None:
        self.snapshot = snapshot


def gateway_app(upstream: str, token: str) -> Any:
    """``create_gateway_app`` for one public instance whose model ``m`` has one replica at ``upstream``."""
    from inferd.domain.tokens import hash_token
    from inferd.gateway import routes
    from inferd.gateway.proxy import create_gateway_app

    # a token hash maps to the instance id (older code) or to a TokenRef (instance and token id)
    ref_type = getattr(routes, "TokenRef", None)
    owner: Any = ref_type(instance_id=GATEWAY_INSTANCE, token_id="bench") if ref_type is not None else GATEWAY_INSTANCE
    instance = routes.InstanceRoutes(id=GATEWAY_INSTANCE, public=True,
                                     models={TRIVIAL_MODEL: (routes.Upstream("r1", upstream),)})
    snapshot = routes.Snapshot(instances={GATEWAY_INSTANCE: instance}, tokens={hash_token(token): owner})
    return create_gateway_app(StaticRoutes(snapshot), "public")


def _gateway_listener_options(listener: Any) -> dict[str, Any]:
    """As ``inferd serve`` configures a gateway listener (trees older than ``reads_body_itself``
    had no such option)."""
    fields = getattr(listener, "__dataclass_fields__", {})
    return {"reads_body_itself": True} if "reads_body_itself" in fields else {}


def serve_gateway(port: int, upstream: str, profile_path: Path | None, timer: str = "wall") -> None:
    """Serve the gateway as ``inferd serve`` serves a listener (``inferd.cli.servers.serve_all``: its
    uvicorn protocol, limits and event loop) until SIGTERM. With ``profile_path``: cProfile of the
    main thread (the event loop's: the whole request path) between SIGUSR1 and SIGUSR2, timed by
    the wall clock (cProfile's default) or by that thread's CPU clock (``timer="cpu"``: nothing is
    charged for time descheduled, but the clock is a system call, so its cost inflates functions
    that are called often)."""
    import cProfile

    from inferd.config.logging import configure_logging

    configure_logging("text")
    app = gateway_app(upstream, os.environ["BENCH_GATEWAY_TOKEN"])
    if profile_path is not None:
        profiler = cProfile.Profile(time.thread_time) if timer == "cpu" else cProfile.Profile()

        def stop_profile(*_: Any) -> None:
            profiler.disable()
            profiler.dump_stats(str(profile_path) + ".part")
            os.replace(str(profile_path) + ".part", profile_path)

        signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())
        signal.signal(signal.SIGUSR2, stop_profile)
    from inferd.cli.servers import Listener, serve_all

    serve_all([Listener(app, "127.0.0.1", port, name="public", **_gateway_listener_options(Listener))])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="bench helper processes")
    sub = parser.add_subparsers(dest="what", required=True)
    trivial = sub.add_parser("trivial")
    trivial.add_argument("--port", type=int, required=True)
    trivial.add_argument("--gap-ms", type=float, default=0.0, help="pause before each streamed token")
    gateway = sub.add_parser("gateway")
    gateway.add_argument("--port", type=int, required=True)
    gateway.add_argument("--upstream", required=True)
    gateway.add_argument("--profile", type=Path)
    gateway.add_argument("--timer", choices=("cpu", "wall"), default="wall")
    args = parser.parse_args(argv)
    if args.what == "trivial":
        asyncio.run(_serve_trivial(args.port, args.gap_ms / 1000))
    else:
        serve_gateway(args.port, args.upstream, args.profile, args.timer)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
