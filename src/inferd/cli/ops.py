"""Operator commands: ``inferd replicas``, ``inferd logs``, ``inferd status``.

They read the store (and, for logs, ask the runtime that runs the replica, since with Ray
the log lives on the replica's node). ``--json`` output is for scripts.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

DataDir = Annotated[Path | None, typer.Option(help="State directory [env INFERD_DATA_DIR].")]
DatabaseUrl = Annotated[str | None, typer.Option(help="SQLAlchemy URL [env INFERD_DATABASE_URL].")]
AsJson = Annotated[bool, typer.Option("--json", help="One JSON document on stdout, for scripts.")]

REPLICA_COLUMNS = ["replica", "instance", "model", "status", "phase", "node", "endpoint", "restarts", "last_error"]


def _replica_record(row: Any) -> dict[str, Any]:
    return {
        "replica": row.id,
        "instance": row.instance_id,
        "model": row.model_slug,
        "accelerator": row.accelerator_slug,
        "status": row.status,
        "phase": row.phase,
        "phase_since": row.phase_since.isoformat() if row.phase_since else None,
        "detail": row.detail,
        "node": row.node,
        "endpoint": row.endpoint,
        "handle": row.handle,
        "restarts": row.restarts,
        "last_error": row.last_error,
    }


def _phase_text(record: dict[str, Any]) -> str:
    """``downloading: 35% …``, or ``starting 95 s: <the engine's last log line>``."""
    phase = record["phase"] or "-"
    if phase == "starting" and record["status"] == "starting" and record["phase_since"]:
        since = datetime.fromisoformat(record["phase_since"])
        phase += f" {int((datetime.now(UTC) - since.replace(tzinfo=since.tzinfo or UTC)).total_seconds())} s"
    if record["detail"] and record["phase"] in ("downloading", "placing", "starting"):
        phase = f"{phase}: {record['detail']}"
    return phase


def replicas(
    instance_id: Annotated[str | None, typer.Argument(help="Only this instance.")] = None,
    as_json: AsJson = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Model-server replicas: status, phase (download progress), node, endpoint, restarts, last error."""
    from inferd.cli.common import print_table as _print_table
    from inferd.cli.common import state_from as _state
    from inferd.store import replicas as repo

    state = _state(data_dir, database_url)
    with state.database.session() as session:
        records = [_replica_record(r) for r in repo.listing(session, instance_id)]
    if as_json:
        print(json.dumps({"replicas": records}, indent=2))
        return
    rows = []
    for record in records:
        phase = _phase_text(record)
        rows.append([record["replica"], record["instance"], record["model"], record["status"], phase,
                     record["node"] or "-", record["endpoint"] or "-", str(record["restarts"]), record["last_error"] or ""])
    _print_table(REPLICA_COLUMNS, rows)


def logs(
    instance_id: str,
    lines: Annotated[int, typer.Option(help="Lines from the end of each replica's log.")] = 50,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Print the end of the model-server log of each replica of an instance (from its node)."""
    from inferd.cli.bootstrap import build_runtime
    from inferd.cli.common import fail as _fail
    from inferd.cli.common import state_from as _state
    from inferd.runtime.base import RuntimeUnavailable
    from inferd.runtime.process import log_excerpt
    from inferd.store import replicas as repo

    state = _state(data_dir, database_url)
    with state.database.session() as session:
        rows = [(r.id, r.handle) for r in repo.listing(session, instance_id)]
    if not rows:
        _fail(f"no replicas for instance {instance_id}")
    runtime = build_runtime(state.settings)
    try:
        for replica_id, handle in rows:
            text = ""
            if handle:
                try:
                    text = runtime.logs(handle, lines)
                except RuntimeUnavailable as exc:
                    text = f"(the runtime cannot be reached: {exc})"
            if not text:  # not running now: what this machine kept of it, if anything
                path = state.settings.replica_log_dir() / instance_id / f"{replica_id}.log"
                text = log_excerpt(path, lines) or "(no log)"
            print(f"==> replica {replica_id} <==")
            print(text)
    finally:
        runtime.close()


def status(as_json: AsJson = False, data_dir: DataDir = None, database_url: DatabaseUrl = None) -> None:
    """The leading controller, replicas by status, and the cluster's capacity."""
    from collections import Counter

    from inferd.cli.common import state_from as _state
    from inferd.store import capacity, leases
    from inferd.store import replicas as repo
    from inferd.store.tables import utcnow

    state = _state(data_dir, database_url)
    with state.database.session() as session:
        lease = leases.current(session, "controller")
        by_status = Counter(r.status for r in repo.listing(session))
        counts = capacity.read_counts(session)
    now = utcnow()
    leader = None
    if lease and lease.holder and lease.expires_at and lease.expires_at > now:
        leader = {"holder": lease.holder, "term": lease.term, "expires_in_s": round((lease.expires_at - now).total_seconds(), 1),
                  "since": lease.acquired_at.isoformat() if lease.acquired_at else None}
    document = {
        "runtime": state.settings.runtime,
        "leader": leader,
        "replicas": dict(by_status),
        "cluster_capacity": [{"slug": s, "region": r, "count": n} for (s, r), n in sorted(counts.items())],
    }
    if as_json:
        print(json.dumps(document, indent=2))
        return
    print(f"runtime:  {document['runtime']}")
    print(f"leader:   {leader['holder']} (term {leader['term']}, lease renewed, expires in {leader['expires_in_s']} s)"
          if leader else "leader:   none (no controller holds the lease)")
    print("replicas: " + (", ".join(f"{n} {s}" for s, n in sorted(by_status.items())) or "none"))
    for item in document["cluster_capacity"]:
        print(f"capacity: {item['slug']} in {item['region']}: {item['count']} units")


def register(app: typer.Typer) -> None:
    app.command()(replicas)
    app.command()(logs)
    app.command()(status)
