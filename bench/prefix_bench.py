"""Prefix-cache-aware routing benchmark: ``prefix`` vs ``least-outstanding`` in one run.

One instance of SmolLM2-135M on 2 llama.cpp replicas (scale 2, default catalog: 4 slots each),
an API + controller process (``inferd serve --no-gateway``) that stays up, and for each phase a
fresh ``inferd gateway`` with ``INFERD_GATEWAY_ROUTING`` set to the phase's mode, in ABBA order
(prefix, least-outstanding, least-outstanding, prefix) so drift and noise land on both.

Workload per phase: a few families, each a long system prompt (~900 tokens, generated
deterministically) followed by varied short user turns, streamed with a small ``max_tokens``
by a few concurrent clients. The family sequence is the same in every phase; the family *texts*
differ per phase, so no phase finds prompts an earlier phase left in the engines' caches.
llama-server reuses a slot's cached prompt (``cache_prompt``; a request takes the idle slot
whose prompt it shares most with), so a family kept on one replica skips most of its prefill.

Besides TTFT and tokens/s it reads llama-server's own ``timings`` (``prompt_n``: prompt tokens
processed; ``cache_n``: reused from the cache) from each stream's last chunk, and the
``x-inferd-replica`` header, to show *why* the times differ.

Usage: ``python bench/prefix_bench.py [--quick] [--out PATH]``. Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import datetime as dt
import json
import os
import random
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway_bench as gb  # noqa: E402 - the sibling script's helpers, not a package
from proxies import stop_process  # noqa: E402
from reporting import finish  # noqa: E402

MODES = ("prefix", "least-outstanding")
Request = tuple[int, dict[str, Any]]
FULL: dict[str, Any] = {"families": 6, "system_words": 800, "requests": 40, "concurrency": 4, "max_tokens": 8,
                        "order": ["prefix", "least-outstanding", "least-outstanding", "prefix"]}
"""7.6 minutes on the busy shared 2-core box (most of it prefill of cache misses)."""
QUICK: dict[str, Any] = {"families": 4, "system_words": 300, "requests": 12, "concurrency": 4, "max_tokens": 4,
                         "order": ["prefix", "least-outstanding"]}
WORDS = ("the a of to and in is it that for on with as was at by this be from or have an are not they which you one "
         "all were her she there would their we him been has when who will more no if out so said what up its about "
         "into than them can only other new some could time these two may then do first any my now such like our over "
         "man me even most made after also did many before must through back years where much your way well down "
         "should because each just those people how too little state good very make world still own see men work long "
         "get here between both life being under never day same another know while last might us great old year off "
         "come since against go came right used take three").split()
TURNS = ("Summarize the rules above in one line.", "What should I do first?", "Give me a short example.",
         "Which rule matters most?", "Explain it to a child.", "List two risks.", "What is the next step?",
         "Answer yes or no: is this allowed?", "Name one exception.", "Write a title for this.")


def system_prompt(phase: int, family: int, words: int) -> str:
    """A family's long, deterministic system prompt (different per phase)."""
    rng = random.Random(f"prefix-bench/{phase}/{family}")
    sentences: list[str] = []
    while sum(len(s.split()) for s in sentences) < words:
        sentences.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16))).capitalize() + ".")
    return f"You are assistant number {family}. Follow these rules. " + " ".join(sentences)


def workload(phase: int, settings: dict[str, Any]) -> tuple[list[Request], list[Request]]:
    """(warm-up, measured) requests as (family, body). The warm-up sends each family once, so
    the measured part shows the steady state (every family seen somewhere) rather than the
    first prefills, which cost the same in both modes. The measured family sequence is the same
    in every phase."""
    order = random.Random("prefix-bench/order")
    families = [system_prompt(phase, f, settings["system_words"]) for f in range(settings["families"])]

    def body(family: int, turn: str) -> dict[str, Any]:
        return {"model": gb.MODEL, "stream": True, "stream_options": {"include_usage": True}, "temperature": 0,
                "max_tokens": settings["max_tokens"],
                "messages": [{"role": "system", "content": families[family]}, {"role": "user", "content": turn}]}

    warm = [(f, body(f, "Hello.")) for f in range(settings["families"])]
    measured = []
    for i in range(settings["requests"]):
        family = order.randrange(settings["families"])
        measured.append((family, body(family, f"({i}) {order.choice(TURNS)}")))
    return warm, measured


@dataclass
class Sample:
    family: int
    ttft: float | None
    chunks: int
    latency: float
    replica: str | None
    prompt_n: int | None  # prompt tokens the engine processed
    cache_n: int | None  # prompt tokens it reused from its cache
    error: str | None = None


async def stream_one(client: httpx.AsyncClient, url: str, token: str, family: int, body: dict[str, Any]) -> Sample:
    started = time.perf_counter()
    ttft: float | None = None
    chunks, replica = 0, None
    timings: dict[str, Any] = {}
    try:
        async with client.stream("POST", url, json=body, headers={"Authorization": f"Bearer {token}"}) as response:
            replica = response.headers.get("x-inferd-replica")
            if response.status_code != 200:
                await response.aread()
                return Sample(family, None, 0, time.perf_counter() - started, replica, None, None, f"HTTP {response.status_code}")
            async for line in response.aiter_lines():
                data = line[5:].strip() if line.startswith("data:") else ""
                if not data or data == "[DONE]":
                    continue
                chunk = json.loads(data)
                timings = chunk.get("timings") or timings
                choices = chunk.get("choices") or []
                if choices and (choices[0].get("delta") or {}).get("content"):
                    chunks += 1
                    ttft = ttft or time.perf_counter() - started
    except (httpx.HTTPError, ValueError) as exc:
        return Sample(family, ttft, chunks, time.perf_counter() - started, replica, None, None, type(exc).__name__)
    return Sample(family, ttft, chunks, time.perf_counter() - started, replica, timings.get("prompt_n"),
                  timings.get("cache_n"), None if chunks else "no content")


async def run_phase(url: str, token: str, requests: list[Request], concurrency: int) -> tuple[list[Sample], float]:
    """The requests in order, ``concurrency`` at a time; results and wall time."""
    queue = list(reversed(requests))
    samples: list[Sample] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(300.0, connect=5.0), trust_env=False) as client:

        async def worker() -> None:
            while queue:
                family, body = queue.pop()
                samples.append(await stream_one(client, url, token, family, body))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return samples, time.perf_counter() - started


# -- processes --------------------------------------------------------------------------------


@dataclass
class ControlPlane:
    env: dict[str, str]
    data_dir: Path
    database: str
    instance_id: str
    token: str
    replicas: list[dict[str, Any]]


def catalog_with(engine_args: list[str], workdir: Path) -> Path:
    """The default catalog with ``engine_args`` on its CPU kind (e.g. ``--cache-ram 0``)."""
    from importlib.resources import files

    text = files("inferd.config").joinpath("default_catalog.toml").read_text()
    kind = 'slug = "cpu-slot-2gb"\n'
    if kind not in text:
        raise RuntimeError("the default catalog has no cpu-slot-2gb kind")
    path = workdir / "catalog.toml"
    path.write_text(text.replace(kind, kind + f"engine_args = {json.dumps(engine_args)}\n", 1))
    return path


@contextmanager
def control_plane(workdir: Path, engine_args: list[str]) -> Iterator[ControlPlane]:
    """``inferd serve --no-gateway`` (API + controller, stops its replicas on exit) with one
    instance of scale 2, active."""
    data_dir = workdir / "inferd"
    data_dir.mkdir(parents=True)
    database = f"sqlite:///{data_dir}/inferd.db"
    api_port = gb.free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "INFERD_RATE_LIMIT_PER_MINUTE": "100000",
           "INFERD_RATE_LIMIT_PER_HOUR": "1000000", "INFERD_METRICS_PORT": str(gb.free_port())}
    if engine_args:
        env["INFERD_CATALOG_FILE"] = str(catalog_with(engine_args, workdir))
    log_path = workdir / "server.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "inferd", "serve", "--no-gateway", "--data-dir", str(data_dir), "--database-url", database,
             "--port", str(api_port)], stdout=log, stderr=subprocess.STDOUT, cwd=gb.REPO, env=env)
        try:
            api, ca = f"https://127.0.0.1:{api_port}", data_dir / "tls" / "api-ca.pem"
            gb.wait_until(lambda: gb._healthy(api, ca, process, log_path), 60, "inferd serve ready")
            admin = (data_dir / "admin-token").read_text().strip()
            body = copy.deepcopy(gb.CREATE_BODY)
            body["spec"]["name"] = "prefix-bench"
            body["spec"]["model_deployments"][0]["accelerators"][0]["scale"] = 2
            with httpx.Client(base_url=api, verify=ssl.create_default_context(cafile=str(ca)), timeout=30,
                              headers={"Authorization": f"Bearer {admin}"}, trust_env=False) as client:
                created = client.post("/v2/dedicated-inferences", json=body)
                if created.status_code != 202:
                    raise RuntimeError(f"create failed: {created.status_code} {created.text}")
                instance_id = created.json()["dedicated_inference"]["id"]

                def active() -> bool:
                    status = client.get(f"/v2/dedicated-inferences/{instance_id}").json()["dedicated_inference"]["status"]
                    if status in {"error", "failed"}:
                        raise RuntimeError(f"instance went {status}; see {log_path}")
                    return bool(status == "active")

                gb.wait_until(active, 180, "instance active")
            out = subprocess.run([sys.executable, "-m", "inferd", "replicas", instance_id, "--json", "--data-dir", str(data_dir),
                                  "--database-url", database], capture_output=True, text=True, timeout=60, cwd=gb.REPO,
                                 check=True, env=env).stdout
            ready = [r for r in json.loads(out)["replicas"] if r["status"] == "ready"]
            yield ControlPlane(env, data_dir, database, instance_id, created.json()["token"]["value"], ready)
        finally:
            stop_process(process)


@contextmanager
def gateway(plane: ControlPlane, routing: str, workdir: Path) -> Iterator[str]:
    """A fresh ``inferd gateway`` with ``INFERD_GATEWAY_ROUTING=routing``; yields the chat URL."""
    port = gb.free_port()
    env = {**plane.env, "INFERD_GATEWAY_ROUTING": routing, "INFERD_GATEWAY_PUBLIC_PORT": str(port),
           "INFERD_GATEWAY_PRIVATE_PORT": str(gb.free_port()), "INFERD_METRICS_PORT": str(gb.free_port())}
    base = f"http://127.0.0.1:{port}/{plane.instance_id}/v1"
    with open(workdir / f"gateway-{routing}.log", "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "inferd", "gateway", "--data-dir", str(plane.data_dir),
                                    "--database-url", plane.database], stdout=log, stderr=subprocess.STDOUT, cwd=gb.REPO, env=env)
        try:
            def up() -> bool:
                if process.poll() is not None:
                    raise RuntimeError(f"inferd gateway exited: see {workdir}/gateway-{routing}.log")
                try:
                    answer = httpx.get(f"{base}/models", headers={"Authorization": f"Bearer {plane.token}"}, timeout=2,
                                       trust_env=False)
                    return answer.status_code == 200
                except httpx.HTTPError:
                    return False

            gb.wait_until(up, 60, f"gateway ({routing})")
            yield f"{base}/chat/completions"
        finally:
            stop_process(process)


# -- numbers ----------------------------------------------------------------------------------


def summarize(mode: str, samples: list[Sample], wall: float) -> dict[str, Any]:
    ok = [s for s in samples if s.error is None]
    ttfts = [s.ttft for s in ok if s.ttft is not None]
    chunks = sum(s.chunks for s in ok)
    homes: defaultdict[int, Counter[str | None]] = defaultdict(Counter)
    for s in ok:
        homes[s.family][s.replica] += 1
    processed = sum(s.prompt_n or 0 for s in ok)
    cached = sum(s.cache_n or 0 for s in ok)
    return {
        "mode": mode, "requests": len(samples), "errors": len(samples) - len(ok),
        "error_samples": sorted({s.error for s in samples if s.error})[:3], "wall_s": round(wall, 2),
        "tokens": chunks, "tokens_per_s": round(chunks / wall, 2) if wall else None,
        "ttft_p50_ms": gb.ms(gb.percentile(ttfts, 50)), "ttft_p99_ms": gb.ms(gb.percentile(ttfts, 99)),
        "prompt_tokens_processed": processed, "prompt_tokens_cached": cached,
        "cached_share": round(cached / (processed + cached), 3) if processed + cached else None,
        "family_on_home_replica": round(sum(max(c.values()) for c in homes.values()) / len(ok), 3) if ok else None,
        "per_replica": dict(Counter(s.replica for s in ok)),
        "ttfts_ms": [gb.ms(t) for t in ttfts],
    }


def combine(phases: list[dict[str, Any]], samples: dict[str, list[Sample]], walls: dict[str, float]) -> dict[str, Any]:
    """Per mode over all its phases, and prefix / least-outstanding ratios. (A family's home is
    per phase: the texts, and so the homes, differ between phases.)"""
    modes = {mode: summarize(mode, samples[mode], walls[mode]) for mode in MODES if samples[mode]}
    for mode, summary in modes.items():
        summary.pop("ttfts_ms")
        rows = [p for p in phases if p["mode"] == mode and p["family_on_home_replica"] is not None]
        ok = sum(p["requests"] - p["errors"] for p in rows)
        summary["family_on_home_replica"] = (
            round(sum(p["family_on_home_replica"] * (p["requests"] - p["errors"]) for p in rows) / ok, 3) if ok else None)
    a, b = modes.get("prefix"), modes.get("least-outstanding")
    ratios = {}
    if a and b:
        for key in ("ttft_p50_ms", "ttft_p99_ms", "tokens_per_s", "prompt_tokens_processed"):
            ratios[key] = gb._ratio(a[key], b[key])
    return {"modes": modes, "ratios_prefix_over_least": ratios}


def render(report: dict[str, Any]) -> str:
    s = report["settings"]
    extra = f", engine args {' '.join(s['engine_args'])}" if s["engine_args"] else ""
    lines = [f"2 llama.cpp replicas (4 slots each{extra}), {s['families']} families x ~{report['prompt_tokens_mean']} prompt tokens, "
             f"{s['requests']} streamed requests per phase, concurrency {s['concurrency']}, max_tokens {s['max_tokens']}", ""]
    head = (f"{'phase':<22} {'reqs':>4} {'err':>3} {'wall s':>7} {'tok/s':>6} {'TTFT p50':>9} {'TTFT p99':>9} "
            f"{'prompt tok':>10} {'cached':>6} {'home':>5}")
    lines += [head, "-" * len(head)]
    for row in report["phases"] + [dict(m, phase="ALL " + m["mode"]) for m in report["combined"]["modes"].values()]:
        lines.append(f"{row.get('phase', ''):<22} {row['requests']:>4} {row['errors']:>3} {row['wall_s']:>7.1f} "
                     f"{gb._fmt(row['tokens_per_s']):>6} {gb._fmt(row['ttft_p50_ms']):>9} {gb._fmt(row['ttft_p99_ms']):>9} "
                     f"{row['prompt_tokens_processed']:>10} {gb._fmt(row['cached_share']):>6} {gb._fmt(row['family_on_home_replica']):>5}")
    ratios = report["combined"]["ratios_prefix_over_least"]
    if ratios:
        lines += ["", "prefix / least-outstanding: " + ", ".join(f"{k} {gb._fmt(v)}" for k, v in ratios.items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (not numbers to quote)")
    parser.add_argument("--out", type=Path, help="JSON path (default bench/results/prefix-<UTC>.json)")
    parser.add_argument("--engine-args", default="", help='extra llama-server flags for the replicas, e.g. "--cache-ram 0"')
    for key in ("families", "system_words", "requests", "concurrency", "max_tokens"):
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, help=f"override {key}")
    args = parser.parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    settings = {**(QUICK if args.quick else FULL), "quick": args.quick, "model": gb.MODEL, "engine_args": args.engine_args.split()}
    settings.update({k: v for k in ("families", "system_words", "requests", "concurrency", "max_tokens")
                     if (v := getattr(args, k)) is not None})
    out = args.out or gb.REPO / "bench" / "results" / f"prefix-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    report: dict[str, Any] = {"started_at": started.isoformat(timespec="seconds"), "machine": gb.machine_info(), "settings": settings}
    phases: list[dict[str, Any]] = []
    samples: dict[str, list[Sample]] = {mode: [] for mode in MODES}
    walls: dict[str, float] = dict.fromkeys(MODES, 0.0)
    with tempfile.TemporaryDirectory(prefix="inferd-prefix-bench-") as tmp, control_plane(Path(tmp), settings["engine_args"]) as plane:
        report["replicas"] = [{"replica": r["replica"], "endpoint": r["endpoint"]} for r in plane.replicas]
        print(f"instance {plane.instance_id} active with {len(plane.replicas)} replicas", flush=True)
        for index, mode in enumerate(settings["order"]):
            warm, measured = workload(index, settings)
            with gateway(plane, mode, Path(tmp)) as url:
                warmed, warm_wall = asyncio.run(run_phase(url, plane.token, warm, 2))
                phase_samples, wall = asyncio.run(run_phase(url, plane.token, measured, settings["concurrency"]))
            row = summarize(mode, phase_samples, wall)
            row["phase"] = f"{index + 1}: {mode}"
            row["warmup"] = {"requests": len(warmed), "errors": sum(1 for w in warmed if w.error), "wall_s": round(warm_wall, 2)}
            phases.append(row)
            samples[mode] += phase_samples
            walls[mode] += wall
            print(f"  phase {row['phase']}: {wall:.1f}s, TTFT p50 {row['ttft_p50_ms']} ms, cached {row['cached_share']}", flush=True)
    every = [s for mode in MODES for s in samples[mode] if s.prompt_n is not None]
    report["prompt_tokens_mean"] = round(sum((s.prompt_n or 0) + (s.cache_n or 0) for s in every) / len(every)) if every else None
    report["phases"] = phases
    report["combined"] = combine(phases, samples, walls)
    report["duration_s"] = round((dt.datetime.now(dt.UTC) - started).total_seconds(), 1)
    return finish(report, out, render(report))


if __name__ == "__main__":
    raise SystemExit(main())
