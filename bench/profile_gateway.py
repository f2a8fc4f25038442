"""Profile inferd's gateway on its request path, under load, against a trivial upstream.

The gateway runs alone in a process of its own, built and served as ``inferd serve`` serves its
public listener (``create_gateway_app`` with a fixed route snapshot, ``inferd.cli.servers.serve_all``:
the same uvicorn protocol, limits and event loop; see ``bench/proxies.py``), in front of the bench's
trivial upstream (raw asyncio, its own process). cProfile covers the gateway's main thread, which
runs the event loop and so every request from accept to the last byte relayed, and is switched on
by signal only after a warm-up. This process drives the load (httpx, ``--concurrency`` workers).

Output under ``--out`` (a directory): ``gateway.prof`` (pstats), ``profile.txt`` (the top entries
by cumulative and by self time) and ``profile.json`` (the same, with per-request microseconds and
the run's settings). cProfile slows Python code down (about 2x here) and, with its default wall
clock, charges time the process spent descheduled to whatever ran then, and the event loop's idle
wait to its poll: compare entries with each other and with another profile taken the same way on
an equally quiet machine, not with unprofiled latencies. ``--timer cpu`` uses the thread's CPU
clock instead (a system call per event: more overhead, but no descheduled time).

Usage: ``python bench/profile_gateway.py --out DIR [--requests 2000] [--concurrency 8] [--mode stream|plain]``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import json
import os
import pstats
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from gateway_bench import Target, drive, machine_info
from proxies import STREAM_CHUNKS, TRIVIAL_MODEL, start_gateway, start_trivial, wait_until

REPO = Path(__file__).resolve().parents[1]


def short(filename: str) -> str:
    """A profile entry's file, relative to site-packages, the repo or the stdlib."""
    for marker in ("site-packages/", "/src/", "/lib/python3."):
        if marker in filename:
            rest = filename.split(marker, 1)[1]
            return rest.split("/", 1)[1] if marker == "/lib/python3." and "/" in rest else rest
    return filename


def entries(stats: pstats.Stats, key: str, top: int, requests: int) -> list[dict[str, Any]]:
    """The ``top`` functions by ``key`` ('cumulative' or 'tottime')."""
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    index = 3 if key == "cumulative" else 2
    rows = sorted(raw.items(), key=lambda item: item[1][index], reverse=True)[:top]
    out = []
    for (filename, line, name), (primitive, calls, tottime, cumtime, _) in rows:
        out.append({
            "function": f"{short(filename)}:{line}({name})" if line else name,
            "ncalls": calls, "primitive_calls": primitive,
            "tottime_s": round(tottime, 4), "cumtime_s": round(cumtime, 4),
            "tottime_us_per_request": round(tottime * 1e6 / requests, 1),
            "cumtime_us_per_request": round(cumtime * 1e6 / requests, 1),
        })
    return out


def table(title: str, rows: list[dict[str, Any]]) -> str:
    lines = [title, f"{'ncalls':>9} {'tottime s':>9} {'cumtime s':>9} {'self us/req':>11} {'cum us/req':>10}  function"]
    for row in rows:
        lines.append(f"{row['ncalls']:>9} {row['tottime_s']:>9.3f} {row['cumtime_s']:>9.3f} "
                     f"{row['tottime_us_per_request']:>11.1f} {row['cumtime_us_per_request']:>10.1f}  {row['function']}")
    return "\n".join(lines)


async def plain(target: Target, requests: int, concurrency: int) -> tuple[int, float]:
    """Non-streaming 1-token requests; returns (errors, wall)."""
    body = {"model": TRIVIAL_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    errors, remaining = 0, requests
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency), timeout=30, trust_env=False) as client:

        async def worker() -> None:
            nonlocal errors, remaining
            while remaining > 0:
                remaining -= 1
                try:
                    response = await client.post(target.url, json=body, headers=target.headers)
                    errors += response.status_code != 200
                except httpx.HTTPError:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return errors, time.perf_counter() - started


def load(target: Target, mode: str, requests: int, concurrency: int) -> tuple[int, float, int]:
    """(errors, wall, content chunks) of one batch."""
    if mode == "plain":
        errors, wall = asyncio.run(plain(target, requests, concurrency))
        return errors, wall, 0
    results, wall = asyncio.run(drive(target, TRIVIAL_MODEL, requests, concurrency))
    return sum(r.error is not None for r in results), wall, sum(r.chunks for r in results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for gateway.prof, profile.txt, profile.json")
    parser.add_argument("--requests", type=int, default=2000, help="profiled requests (default 2000)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--mode", choices=("stream", "plain"), default="stream",
                        help=f"stream: {STREAM_CHUNKS} SSE chunks per request (default); plain: non-streaming 1-token answers")
    parser.add_argument("--gap-ms", type=float, default=1.0, help="the upstream's pause before each streamed chunk")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--timer", choices=("wall", "cpu"), default="wall",
                        help="wall: cProfile's default clock (cheap); cpu: the gateway thread's CPU clock (nothing charged "
                             "for time descheduled, but a system call per event: about 2x the profiling overhead)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    prof = (args.out / "gateway.prof").resolve()
    prof.unlink(missing_ok=True)

    with tempfile.TemporaryDirectory(prefix="inferd-profile-") as tmp:
        work = Path(tmp)
        trivial = start_trivial(work, args.gap_ms)
        try:
            gateway = start_gateway(work, trivial.urls["trivial"], profile=prof, timer=args.timer)
            try:
                target = Target(gateway.urls["trivial"] + "/v1/chat/completions", gateway.headers)
                errors, _, _ = load(target, args.mode, args.warmup, args.concurrency)
                if errors:
                    raise RuntimeError(f"{errors} warm-up requests failed:\n{gateway.log_tail()}")
                os.kill(gateway.process.pid, signal.SIGUSR1)
                time.sleep(0.3)
                cpu0 = gateway.cpu()
                errors, wall, chunks = load(target, args.mode, args.requests, args.concurrency)
                cpu1 = gateway.cpu()
                os.kill(gateway.process.pid, signal.SIGUSR2)
                wait_until(prof.exists, 60, "the profile written")
            finally:
                gateway.stop()
        finally:
            trivial.stop()

    stats = pstats.Stats(str(prof), stream=io.StringIO())
    by_cum = entries(stats, "cumulative", args.top, args.requests)
    by_self = entries(stats, "tottime", args.top, args.requests)
    cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    summary = {
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": machine_info(),
        "settings": {"mode": args.mode, "requests": args.requests, "concurrency": args.concurrency,
                     "gap_ms": args.gap_ms, "warmup": args.warmup, "timer": args.timer,
                     "chunks_per_request": STREAM_CHUNKS if args.mode == "stream" else 0},
        "errors": errors, "wall_s": round(wall, 3), "content_chunks": chunks,
        "requests_per_s": round(args.requests / wall, 1),
        "gateway_cpu_s_profiled": None if cpu is None else round(cpu, 3),
        "gateway_cpu_ms_per_request_profiled": None if cpu is None else round(cpu * 1000 / args.requests, 3),
        "total_tt_s": round(stats.total_tt, 3),  # type: ignore[attr-defined]
        "by_cumulative": by_cum, "by_self": by_self,
    }
    source = summary["machine"].get("git") or summary["machine"].get("inferd_source")
    head = (f"inferd gateway profile ({source}): {args.requests} {args.mode} requests at "
            f"concurrency {args.concurrency} against a trivial upstream (gap {args.gap_ms} ms); {errors} errors; "
            f"{summary['requests_per_s']} req/s; gateway CPU {summary['gateway_cpu_ms_per_request_profiled']} ms/request "
            f"under cProfile; profiled time {summary['total_tt_s']} s ({args.timer} clock)")
    text = "\n\n".join([head, table(f"Top {args.top} by cumulative time", by_cum), table(f"Top {args.top} by self time", by_self)])
    (args.out / "profile.txt").write_text(text + "\n")
    (args.out / "profile.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(text)
    print(f"\n{args.out}/profile.txt, profile.json, gateway.prof")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
