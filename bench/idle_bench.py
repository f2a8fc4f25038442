"""Idle benchmark of the gateway's route table: what does keeping 1,000 instances and 10,000
``di_`` tokens current cost when nothing changes, and how late does a revocation apply?

The store gets 1,000 instances, each with a deployment, one ready replica (an unused local
port: nothing is proxied) and 10 tokens, in SQLite and in PostgreSQL. Then, in a child process
of its own per case, the route table that ``inferd serve``/``inferd gateway`` build
(``inferd.cli.bootstrap.gateway_listeners``: the same loader, feed, TLS callback) starts, settles
and idles for ``--seconds``; its process CPU (``time.process_time``: all threads) over that
window, per second, is the idle cost. Afterwards ``--revocations`` tokens are deleted one by one
(at a random phase of the poll interval) and the time from the DELETE's commit to the token's
hash leaving the route table is the revocation latency.

``--baseline-src DIR`` runs the same cases with another checkout's ``src`` first on
``PYTHONPATH`` (the code before the change feed: a full reload every interval), labelled
``before``; e.g. ``mkdir /tmp/base && git archive 6691efa src | tar -x -C /tmp/base`` then
``--baseline-src /tmp/base/src``. The store is migrated by this checkout; older code reads the
columns it knows.

Usage: ``python bench/idle_bench.py [--seconds 10] [--intervals 0.5 0.2] [--backends sqlite postgres]
[--baseline-src DIR] [--out PATH]``. PostgreSQL: ``INFERD_TEST_POSTGRES_URL`` or
``scripts/ensure-postgres.sh`` (a throwaway database is created and dropped).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from reporting import finish  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
INSTANCES = 1000
TOKENS_PER_INSTANCE = 10
MODEL = "huggingfacetb/smollm2-135m-instruct"


def populate(url: str) -> dict[str, Any]:
    """Migrate and fill the store the way the API and controller would have: 1,000 instances."""
    from sqlalchemy import insert

    from inferd.domain.tokens import hash_token, new_instance_token
    from inferd.store.db import Database
    from inferd.store.migrate import upgrade
    from inferd.store.tables import AcceleratorRow, DeploymentRow, InstanceRow, InstanceTokenRow, ReplicaRow, TeamRow, utcnow

    started = time.perf_counter()
    upgrade(url)
    database = Database(url)
    now = utcnow()
    team = str(uuid.uuid4())
    spec = {"version": 1, "name": "x", "region": "atl1", "vpc": {"uuid": str(uuid.uuid4())},
            "enable_public_endpoint": True,
            "model_deployments": [{"model_slug": MODEL, "model_provider": "hugging_face", "workload_config": {},
                                   "accelerators": [{"scale": 1, "type": "prefill_decode", "accelerator_slug": "cpu-slot-2gb"}]}]}
    instances, deployments, accelerators, replicas, tokens = [], [], [], [], []
    for n in range(INSTANCES):
        instance, deployment, accelerator = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
        instances.append({"id": instance, "team_id": team, "name": f"bench-{n}", "region": "atl1", "vpc_uuid": spec["vpc"]["uuid"],
                          "status": "active", "live_deployment_id": deployment, "ca_cert_pem": "", "ca_key_sealed": "",
                          "created_at": now, "updated_at": now, "version": 1})
        deployments.append({"id": deployment, "instance_id": instance, "version": 1, "spec": {**spec, "name": f"bench-{n}"},
                            "status": "active", "created_at": now, "updated_at": now})
        accelerators.append({"id": accelerator, "instance_id": instance, "model_id": str(uuid.uuid4()), "slug": "cpu-slot-2gb",
                             "name": "cpu-slot-2gb", "role": "prefill_decode", "status": "active", "created_at": now, "updated_at": now})
        replicas.append({"id": str(uuid.uuid4()), "instance_id": instance, "accelerator_id": accelerator, "model_id": str(uuid.uuid4()),
                         "model_slug": MODEL, "accelerator_slug": "cpu-slot-2gb", "template": "bench", "engine": "llamacpp",
                         "endpoint": f"http://127.0.0.1:{1 + n % 1000}", "status": "ready", "phase": "ready",
                         "restarts": 0, "failures": 0, "created_at": now, "updated_at": now})
        tokens += [{"id": str(uuid.uuid4()), "instance_id": instance, "name": f"t{k}", "token_hash": hash_token(new_instance_token()),
                    "created_at": now} for k in range(TOKENS_PER_INSTANCE)]
    with database.session() as session:
        session.add(TeamRow(id=team, name=f"bench-{team[:8]}"))
        session.flush()
        for table, rows in ((InstanceRow, instances), (DeploymentRow, deployments), (AcceleratorRow, accelerators),
                            (ReplicaRow, replicas), (InstanceTokenRow, tokens)):
            session.execute(insert(table), rows)
    database.dispose()
    return {"instances": len(instances), "replicas": len(replicas), "tokens": len(tokens),
            "populate_s": round(time.perf_counter() - started, 2)}


# -- one case, in a child process ----------------------------------------------------------------
def child(url: str, interval: float, seconds: float, revocations: int) -> dict[str, Any]:
    from sqlalchemy import delete, select

    import inferd
    from inferd.cli.bootstrap import build_state, gateway_listeners
    from inferd.config import Settings
    from inferd.pki import ensure_local_tls
    from inferd.store.db import Database
    from inferd.store.tables import InstanceTokenRow

    with tempfile.TemporaryDirectory(prefix="inferd-idle-") as tmp:
        settings = Settings(data_dir=Path(tmp), database_url=url, gateway_refresh_interval=interval)
        state = build_state(settings, migrate=False)
        routes, _ = gateway_listeners(state, ensure_local_tls(Path(tmp) / "tls"))
        cpu, wall = time.process_time(), time.perf_counter()
        routes.start()
        first_load = {"cpu_ms": round((time.process_time() - cpu) * 1000, 1), "wall_ms": round((time.perf_counter() - wall) * 1000, 1)}
        loaded = (len(routes.snapshot.instances), len(routes.snapshot.tokens))
        time.sleep(max(1.0, 2 * interval))  # settle: the first cycles, imports, caches
        cpu, wall = time.process_time(), time.perf_counter()
        time.sleep(seconds)
        idle = (time.process_time() - cpu) / (time.perf_counter() - wall)

        # the backstop: a full reload every gateway_full_reload_interval (after: the feed asks for
        # one; before: every cycle is one), its CPU amortized over that interval. The mean of a
        # few includes the garbage collections their allocations trigger (gen2: ~1 in 2 here)
        feed = getattr(routes, "_changes", None)
        costs = []
        for _ in range(6):
            if feed is not None:
                feed.reset()
            cpu = time.process_time()
            routes.refresh()
            costs.append(time.process_time() - cpu)
        full_reload = statistics.mean(costs)
        every = getattr(settings, "gateway_full_reload_interval", None) if feed is not None else None

        writer = Database(url)
        latencies = []
        with writer.session() as session:
            victims = list(session.execute(select(InstanceTokenRow.id, InstanceTokenRow.token_hash).limit(revocations)))
        for token_id, token_hash in victims:
            time.sleep(random.uniform(0, interval))  # any phase of the poll interval
            with writer.session() as session:
                session.execute(delete(InstanceTokenRow).where(InstanceTokenRow.id == token_id))
            committed = time.perf_counter()
            deadline = committed + 30
            while token_hash in routes.snapshot.tokens and time.perf_counter() < deadline:
                time.sleep(0.0005)
            latencies.append(time.perf_counter() - committed)
        writer.dispose()
        routes.stop()
        state.database.dispose()
    return {
        "code": str(Path(inferd.__file__).parent), "loaded_instances": loaded[0], "loaded_tokens": loaded[1],
        "first_load": first_load, "idle_cpu_ms_per_s": round(idle * 1000, 2),
        "full_reload_cpu_ms": round(full_reload * 1000, 1), "full_reload_cpu_ms_median": round(statistics.median(costs) * 1000, 1),
        "full_reload_every_s": every,
        "total_cpu_ms_per_s": round((idle + (full_reload / every if every else 0)) * 1000, 2),
        "revocation_ms": {"p50": round(statistics.median(latencies) * 1000, 1), "max": round(max(latencies) * 1000, 1),
                          "n": len(latencies)} if latencies else None,
    }


def run_case(url: str, interval: float, seconds: float, revocations: int, src: str | None) -> dict[str, Any]:
    env = {**os.environ, "INFERD_LOG_LEVEL": "WARNING"}
    if src:
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    argv = [sys.executable, __file__, "--child", url, "--interval", str(interval), "--seconds", str(seconds),
            "--revocations", str(revocations)]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"case failed: {result.stderr[-3000:]}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def render(report: dict[str, Any]) -> str:
    header = (f"{'backend':<9} {'code':<7} {'interval s':>10} {'idle cpu ms/s':>13} {'full reload ms':>14} {'every s':>7} "
              f"{'total ms/s':>10} {'revoke p50 ms':>13} {'revoke max ms':>13}")
    lines = [f"Route table idle with {report['store']['instances']} instances, {report['store']['tokens']} tokens "
             f"({report['settings']['seconds']} s per case)", "", header, "-" * len(header)]
    for row in report["rows"]:
        revoke = row["revocation_ms"] or {}
        lines.append(f"{row['backend']:<9} {row['label']:<7} {row['interval']:>10} {row['idle_cpu_ms_per_s']:>13.2f} "
                     f"{row['full_reload_cpu_ms']:>14.1f} {row['full_reload_every_s'] or row['interval']:>7} "
                     f"{row['total_cpu_ms_per_s']:>10.2f} {revoke.get('p50', '-'):>13} {revoke.get('max', '-'):>13}")
    lines += ["", "idle: CPU of the gateway process per second of an idle window (no change); full reload: mean CPU of",
              "one reload of everything, garbage collections included; total: idle + the full reloads amortized",
              "(before: every cycle is a full reload, already in idle); revoke: DELETE committed -> the token's hash",
              "gone from the route table."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="idle window per case")
    parser.add_argument("--intervals", type=float, nargs="+", default=[0.5, 0.2], help="INFERD_GATEWAY_REFRESH_INTERVAL values")
    parser.add_argument("--backends", nargs="+", choices=("sqlite", "postgres"), default=["sqlite", "postgres"])
    parser.add_argument("--revocations", type=int, default=10)
    parser.add_argument("--baseline-src", help="src directory of the code to compare with (labelled 'before')")
    parser.add_argument("--out", type=Path, help="JSON path (default bench/results/idle-<UTC>.json)")
    parser.add_argument("--child", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--interval", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.interval, args.seconds, args.revocations)))
        return 0

    started = dt.datetime.now(dt.UTC)
    out = args.out or REPO / "bench" / "results" / f"idle-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    report: dict[str, Any] = {
        "started_at": started.isoformat(timespec="seconds"),
        "machine": {"cpu_count": os.cpu_count(), "python": sys.version.split()[0], "platform": platform.platform()},
        "settings": {"seconds": args.seconds, "intervals": args.intervals, "revocations": args.revocations,
                     "baseline_src": args.baseline_src},
        "rows": [],
    }
    codes = ([("before", args.baseline_src)] if args.baseline_src else []) + [("after", None)]
    with tempfile.TemporaryDirectory(prefix="inferd-idle-bench-") as tmp, ExitStack() as stack:
        for backend in args.backends:
            if backend == "sqlite":
                url = f"sqlite:///{Path(tmp) / 'inferd.db'}"
            else:
                sys.path.insert(0, str(REPO))
                from tests.support.postgres import postgres_admin_url, temporary_database

                url = stack.enter_context(temporary_database(postgres_admin_url()))
            report["store"] = populate(url)
            print(f"{backend}: stored {report['store']}", flush=True)
            for label, src in codes:
                for interval in args.intervals:
                    row = {"backend": backend, "label": label, "interval": interval,
                           **run_case(url, interval, args.seconds, args.revocations, src)}
                    report["rows"].append(row)
                    print(f"  {label:<6} interval {interval}: idle {row['idle_cpu_ms_per_s']} ms/s, "
                          f"revocation {row['revocation_ms']}", flush=True)
    report["duration_s"] = round((dt.datetime.now(dt.UTC) - started).total_seconds(), 1)
    return finish(report, out, render(report))


if __name__ == "__main__":
    raise SystemExit(main())
