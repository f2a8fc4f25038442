"""Controller HA with real processes: ``inferd serve --no-controller`` (API and gateway) and
two ``inferd controller`` processes sharing one database, on SQLite and on PostgreSQL, driving
real llama.cpp replicas on the local runtime.

One controller holds the lease and acts; the other takes over when the leader dies (SIGKILL:
after the lease TTL) or leaves (SIGTERM: at once, it releases the lease). Model servers never
notice: the next leader adopts them by their labels, so no replica starts twice, restarts, or
fails a request.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from tests.conftest import running_server
from tests.support import specs
from tests.support.controllers import (
    Controller,
    EngineWatch,
    LeaseReader,
    holder_pid,
    installation_owner,
    owned_engines,
    replica_records,
    status,
)
from tests.support.engine import requires_llama_server
from tests.support.replicas import process_exists
from tests.support.server import Server
from tests.support.waiting import wait_for

ENV = {
    "INFERD_LEASE_TTL": "3",
    "INFERD_CONTROLLER_INTERVAL": "0.3",
    "INFERD_DRAIN_SECONDS": "1",
    "INFERD_RATE_LIMIT_PER_MINUTE": "100000",
    "INFERD_RATE_LIMIT_PER_HOUR": "1000000",
}
TAKEOVER_LIMIT_S = 10  # lease TTL 3 s + one interval, with room for a busy machine
HANDOVER_LIMIT_S = 2.0  # SIGTERM releases the lease: the next pass of another controller takes it, not the TTL
ACTIVE_TIMEOUT_S = 150


pytestmark = requires_llama_server


def _parent_pid(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(raw[raw.rindex(")") + 2:].split()[1])


def _report(text: str) -> None:
    print(f"[controller-ha] {text}", file=sys.stderr)


@dataclass
class Deployment:
    """The API+gateway process, the controllers started so far, and ways to look at them."""

    backend: str
    server: Server
    lease: LeaseReader
    owner: str
    controllers: list[Controller] = field(default_factory=list)

    def start_controller(self) -> Controller:
        controller = Controller(
            self.server.data_dir, self.server.database_url, name=f"{len(self.controllers) + 1}", env=dict(ENV)
        )
        self.controllers.append(controller)
        return controller.start()

    def running(self) -> list[Controller]:
        return [c for c in self.controllers if c.alive()]

    def wait_leader(self, among: list[Controller] | None = None, timeout: float = 30) -> Controller:
        """The controller that holds the lease, once one of ``among`` (default: the running ones) does."""
        candidates = among or self.running()
        holders = {c.holder: c for c in candidates}

        def probe() -> str | None:
            current = self.lease.leader()
            return current if current in holders else None

        holder = wait_for(probe, timeout=timeout, interval=0.05, what=f"one of {sorted(h or '' for h in holders)} to lead")
        return holders[holder]

    def status(self) -> dict[str, Any]:
        return status(self.server.data_dir, self.server.database_url)

    def replicas(self, instance_id: str) -> list[dict[str, Any]]:
        return replica_records(self.server.data_dir, self.server.database_url, instance_id)

    def engines(self) -> dict[str, int]:
        """This installation's engines, handle → pid; each handle must be one process."""
        found = owned_engines(self.owner)
        assert all(len(pids) == 1 for pids in found.values()), f"a handle runs twice: {found}"
        return {handle: pids[0] for handle, pids in found.items()}

    def api(self) -> httpx.Client:
        return self.server.client(self.server.admin_token)

    def check_logs(self) -> None:
        for controller in self.controllers:
            assert controller.errors() == [], f"controller {controller.name}:\n{controller.log_text()[-4000:]}"


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    directory = tmp_path_factory.mktemp(f"controller-ha-{request.param}") / "inferd"
    with running_server(request.param, directory, controller=False, gateway=True, **ENV) as server:
        owner = installation_owner(server.data_dir, server.database_url)
        deployment = Deployment(request.param, server, LeaseReader(server.database_url), owner)
        try:
            yield deployment
        finally:
            for controller in deployment.running():
                controller.stop(signal.SIGTERM)
            leftovers = owned_engines(owner)  # only if a test failed before deleting its instances
            for pids in leftovers.values():
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
            deployment.lease.close()


@pytest.fixture
def ha(deployment: Deployment) -> Iterator[Deployment]:
    """Two controllers running (one leading) at the start; every instance deleted at the end."""
    while len(deployment.running()) < 2:
        deployment.start_controller()
    deployment.wait_leader()
    yield deployment
    if not deployment.running():
        deployment.start_controller()
    with deployment.api() as api:
        for item in api.get("/v2/dedicated-inferences?per_page=200").json()["dedicated_inferences"]:
            api.delete(f"/v2/dedicated-inferences/{item['id']}")
        wait_for(lambda: api.get("/v2/dedicated-inferences").json()["meta"]["total"] == 0, timeout=90, what="cleanup")
    wait_for(lambda: not owned_engines(deployment.owner), timeout=60, what="every engine to stop")
    deployment.check_logs()


# -- instances and the gateway ------------------------------------------------------------------
def create(api: httpx.Client, name: str, scale: int) -> dict[str, Any]:
    response = api.post("/v2/dedicated-inferences", json=specs.create_body(name, scale=scale))
    assert response.status_code == 202, response.text
    created = response.json()
    instance_id = created["dedicated_inference"]["id"]
    instance = wait_active(api, instance_id)
    return {"id": instance_id, "token": created["token"]["value"], "endpoints": instance["endpoints"]}


def instance_of(api: httpx.Client, instance_id: str) -> dict[str, Any]:
    return dict(api.get(f"/v2/dedicated-inferences/{instance_id}").json()["dedicated_inference"])


def wait_active(api: httpx.Client, instance_id: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        body = instance_of(api, instance_id)
        assert body["status"] != "error", body
        return body if body["status"] == "active" and "pending_deployment_spec" not in body else None

    return wait_for(probe, timeout=ACTIVE_TIMEOUT_S, interval=0.3, what=f"{instance_id} to be active")


def set_scale(api: httpx.Client, instance_id: str, scale: int) -> None:
    current = instance_of(api, instance_id)["spec"]
    deployment = {"model_slug": specs.MODEL, "accelerator_slug": specs.SLUG, "node_count": scale,
                  "model_id": current["model_deployments"][0]["model_id"]}
    response = api.patch(f"/v2/dedicated-inferences/{instance_id}", json={"spec": {"model_deployments": [deployment]}})
    assert response.status_code == 202, response.text


def openai_client(instance: dict[str, Any]) -> OpenAI:
    return OpenAI(base_url=instance["endpoints"]["public_endpoint_fqdn"] + "/v1", api_key=instance["token"],
                  max_retries=0, timeout=60)


def complete(instance: dict[str, Any]) -> str:
    answer = openai_client(instance).chat.completions.create(
        model=specs.MODEL, messages=[{"role": "user", "content": "Name one colour."}], max_tokens=6)
    return answer.choices[0].message.content or ""


def wait_served(instance: dict[str, Any]) -> None:
    """The gateway reloads its routes about every half second: wait for the first answer."""
    def probe() -> bool:
        try:
            return bool(complete(instance))
        except Exception:
            return False

    wait_for(probe, timeout=30, interval=0.2, what="the gateway to serve the instance")


class Load:
    """One client sending streamed chat completions through the gateway, back to back."""

    def __init__(self, instance: dict[str, Any]) -> None:
        self.client = openai_client(instance)
        self.completed = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                stream = self.client.chat.completions.create(
                    model=specs.MODEL, messages=[{"role": "user", "content": "Count to five."}],
                    max_tokens=12, stream=True)
                text, finish = "", None
                for chunk in stream:
                    if chunk.choices:
                        text += chunk.choices[0].delta.content or ""
                        finish = chunk.choices[0].finish_reason or finish
                if not text or finish is None:
                    self.failures.append(f"incomplete stream: text={text!r} finish_reason={finish!r}")
                else:
                    self.completed += 1
            except Exception as exc:
                self.failures.append(repr(exc))

    def more(self, count: int = 2, timeout: float = 60) -> None:
        """Wait until ``count`` more requests completed (or one failed)."""
        target = self.completed + count
        wait_for(lambda: self.completed >= target or self.failures, timeout=timeout, what=f"{count} more completions")

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=90)


def leader_and_follower(ha: Deployment) -> tuple[Controller, Controller]:
    """Through ``inferd status --json``: exactly one leader, one of the two running controllers."""
    first, second = ha.running()
    leader = ha.status()["leader"]
    assert leader is not None
    assert holder_pid(leader["holder"]) in (first.pid, second.pid), (leader, first.holder, second.holder)
    assert leader["holder"] in (first.holder, second.holder)
    return (first, second) if holder_pid(leader["holder"]) == first.pid else (second, first)


def unchanged(records: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted((r["replica"], r["handle"], r["restarts"], r["status"]) for r in records)


# -- the tests --------------------------------------------------------------------------------
def test_one_acts_and_the_other_takes_over_after_sigkill(ha: Deployment) -> None:
    leader, follower = leader_and_follower(ha)
    with ha.api() as api:
        instance = create(api, "ha-takeover", scale=2)
        before = ha.replicas(instance["id"])
        handles = sorted(r["handle"] for r in before)
        assert len(handles) == 2 and all(r["status"] == "ready" for r in before), before
        engines = ha.engines()
        assert sorted(engines) == handles
        # only the leader acted: it started both engines (they are its children until it dies)
        assert {_parent_pid(pid) for pid in engines.values()} == {leader.pid}

        with EngineWatch(ha.owner) as watch:
            killed_at = time.time()
            leader.stop(signal.SIGKILL)
            assert ha.wait_leader([follower], timeout=TAKEOVER_LIMIT_S) is follower
            seen_at = time.time()
            shown = ha.status()["leader"]
            assert shown is not None and holder_pid(shown["holder"]) == follower.pid
            ha.lease.wait_for_passes(follower.holder or "", passes=3)  # the new leader reconciled
            assert instance_of(api, instance["id"])["status"] == "active"
            after = ha.replicas(instance["id"])
        takeover = (follower.became_leader_at() or seen_at) - killed_at
        _report(f"{ha.backend}: SIGKILL takeover {takeover:.2f} s (lease seen moved after {seen_at - killed_at:.2f} s)")
        assert takeover < TAKEOVER_LIMIT_S
        assert unchanged(after) == unchanged(before)
        assert watch.samples and watch.unexpected(engines) == [], watch.unexpected(engines)[:3]
        assert all(process_exists(pid) for pid in engines.values())

        # the new leader acts: it places the third replica, and only that one
        with EngineWatch(ha.owner) as watch:
            set_scale(api, instance["id"], 3)
            wait_active(api, instance["id"])
            scaled = ha.replicas(instance["id"])
            now = ha.engines()
        assert len(scaled) == 3 and all(r["status"] == "ready" for r in scaled), scaled
        assert sorted(now) == sorted(r["handle"] for r in scaled)
        (third,) = set(now) - set(handles)
        assert {h: now[h] for h in handles} == engines  # the first two kept their processes
        assert _parent_pid(now[third]) == follower.pid
        assert watch.seen() <= {(h, (p,)) for h, p in now.items()}, watch.seen()  # nothing else ever ran
        assert all(len(sample) in (2, 3) and set(engines) <= set(sample) for sample in watch.samples)
        assert len(ha.engines()) == 3


def test_sigterm_of_either_controller_under_load_fails_no_request(ha: Deployment) -> None:
    first_leader, first_follower = leader_and_follower(ha)
    with ha.api() as api:
        instance = create(api, "ha-load", scale=2)
        wait_served(instance)
        before = ha.replicas(instance["id"])
        engines = ha.engines()
        assert len(engines) == 2

        with EngineWatch(ha.owner) as watch, Load(instance) as load:
            load.more(2)

            # 1. the leader leaves: it hands the lease over at once
            stopped_at = time.time()
            assert first_leader.stop(signal.SIGTERM) == 0
            assert ha.wait_leader([first_follower], timeout=TAKEOVER_LIMIT_S) is first_follower
            handover = (first_follower.became_leader_at() or time.time()) - stopped_at
            ha.lease.wait_for_passes(first_follower.holder or "", passes=3)
            load.more(2)

            # 2. a replacement joins; then the other original controller (leading now) leaves too
            replacement = ha.start_controller()
            ha.lease.wait_for_passes(first_follower.holder or "", passes=2)  # the replacement tried, too
            assert ha.lease.leader() == first_follower.holder
            stopped_at = time.time()
            assert first_follower.stop(signal.SIGTERM) == 0
            assert ha.wait_leader([replacement], timeout=TAKEOVER_LIMIT_S) is replacement
            second_handover = (replacement.became_leader_at() or time.time()) - stopped_at
            ha.lease.wait_for_passes(replacement.holder or "", passes=3)
            load.more(2)

            # 3. a follower leaves: nothing changes hands
            spare = ha.start_controller()
            ha.lease.wait_for_passes(replacement.holder or "", passes=2)
            term = ha.lease.current().term
            assert spare.stop(signal.SIGTERM) == 0
            assert spare.messages("became leader") == []
            load.more(2)
            lease = ha.lease.current()
            assert (lease.holder, lease.term) == (replacement.holder, term)

            shown = ha.status()["leader"]
            assert shown is not None and holder_pid(shown["holder"]) == replacement.pid
            after = ha.replicas(instance["id"])
            assert instance_of(api, instance["id"])["status"] == "active"
        _report(f"{ha.backend}: SIGTERM handovers {handover:.2f} s and {second_handover:.2f} s; "
                f"{load.completed} streamed completions, {len(load.failures)} failed")
        assert load.failures == [], load.failures[:5]
        assert handover < HANDOVER_LIMIT_S and second_handover < HANDOVER_LIMIT_S
        assert load.completed >= 8
        assert unchanged(after) == unchanged(before)  # same replicas, handles, restarts
        assert ha.engines() == engines
        assert watch.samples and watch.unexpected(engines) == [], watch.unexpected(engines)[:3]


def test_stopping_every_controller_never_stops_model_servers(ha: Deployment) -> None:
    with ha.api() as api:
        instance = create(api, "ha-orphans", scale=2)
        wait_served(instance)
        before = ha.replicas(instance["id"])
        engines = ha.engines()
        assert len(engines) == 2

        with EngineWatch(ha.owner) as watch:
            for controller in ha.running():
                assert controller.stop(signal.SIGTERM) == 0
            assert ha.lease.leader() is None
            assert ha.status()["leader"] is None
            assert ha.engines() == engines
            assert complete(instance)
            assert instance_of(api, instance["id"])["status"] == "active"

            again = ha.start_controller()
            assert ha.wait_leader([again]) is again
            ha.lease.wait_for_passes(again.holder or "", passes=3)  # it reconciled with what runs
            after = ha.replicas(instance["id"])
            assert complete(instance)
            assert instance_of(api, instance["id"])["status"] == "active"
        assert unchanged(after) == unchanged(before)
        assert ha.engines() == engines  # adopted: the same processes, none new
        assert watch.samples and watch.unexpected(engines) == [], watch.unexpected(engines)[:3]
        assert again.messages("ending stray") == []
