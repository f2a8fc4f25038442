"""Everything of the Ray runtime that runs with ``import ray``: the replica actor and the driver.

**The actor.** ``ReplicaActor`` runs as a detached named actor on the node Ray placed it on. It
prepares the model in that node's cache and runs the engine with ``ReplicaProcess``, exactly as
the local runtime does on its machine; the engine is started with ``PR_SET_PDEATHSIG`` so that
a killed actor (``ray.kill``) or a lost node (its raylet and workers die) leaves no engine behind.
The request (with the instance's Hugging Face token, if any) arrives as an actor argument: it
is never logged, and never part of the actor's name or options (Ray does keep the arguments
in the GCS's actor table, like any actor's). The engine's log lives in the node's log directory
as long as the actor: each ``state()`` call keeps it within its cap (``logfiles.rotate``), and
``discard()``, which the driver calls before ``ray.kill``, removes it (only the actor can reach
it: ``logs()`` is asked of the actor, so once the actor is gone its log would be read by no one).

**The driver.** ``RayRuntime`` (``ray.py``, which never imports Ray) runs ``driver_main`` as a
child process and sends it one call at a time over a socket; ``Driver`` makes the Ray calls.
A Ray driver that loses the head blocks and, 60 s later, is terminated by Ray: only this child
ever is one.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from inferd.runtime import logfiles
from inferd.runtime.base import NodeResources, Phase, ReplicaRequest, ReplicaState
from inferd.runtime.process import (
    HANDLE_ENV,
    OWNER_ENV,
    REPLICA_ENV,
    Placement,
    ReplicaProcess,
)

CACHE_DIR_ENV = "INFERD_MODEL_CACHE_DIR"
LOG_DIR_ENV = "INFERD_REPLICA_LOG_DIR"
PREFIX = "replica."
OBSERVE_WAIT_S = 2.0
ACTOR_CALL_S = 5.0
DISCARD_WAIT_S = 2.0
"""How long ``kill`` waits for the actor to remove its log before ``ray.kill``."""


def actor_name(replica_id: str) -> str:
    return f"{PREFIX}{replica_id}.{secrets.token_hex(4)}"


def replica_id_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) == 3 and name.startswith(PREFIX) and parts[1] else None


def _node_dir(env: str, default: str) -> Path:
    configured = os.environ.get(env)
    return Path(configured) if configured else Path.home() / ".cache" / "inferd" / default


class ReplicaActor:
    """One replica: its model server on this node. Every method answers at once."""

    def __init__(self, request: ReplicaRequest, owner: str, log_max_bytes: int | None = None) -> None:
        import ray  # only ever constructed inside a Ray worker

        address = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        context = ray.get_runtime_context()
        labels = {REPLICA_ENV: request.replica_id, OWNER_ENV: owner, HANDLE_ENV: context.get_actor_name() or ""}
        placement = Placement(
            host=address,
            node=address,
            cache_dir=_node_dir(CACHE_DIR_ENV, "models"),
            log_dir=_node_dir(LOG_DIR_ENV, "replica-logs"),
            labels=labels,
            die_with_parent=True,
            own_session=False,
            log_max_bytes=log_max_bytes or logfiles.max_bytes_from_env(),
        )
        # Ray chose this actor's GPUs and set CUDA_VISIBLE_DEVICES: devices picked elsewhere mean nothing here
        self._replica = ReplicaProcess(dataclasses.replace(request, devices=()), placement)
        self._replica.start()

    def state(self) -> ReplicaState:
        return self._replica.state()

    def in_flight(self) -> int | None:
        return self._replica.in_flight()

    def terminate(self) -> None:
        self._replica.terminate()

    def logs(self, lines: int = 50) -> str:
        return self._replica.logs(lines)

    def shutdown(self) -> None:
        self._replica.kill()

    def discard(self) -> None:
        """Before ``ray.kill``: no engine may start any more, and its log goes (and the instance's
        directory once empty). A running engine writes to the removed file until ``ray.kill``
        ends it with the actor (``PR_SET_PDEATHSIG``), moments later."""
        self._replica.cancel()
        self._replica.discard_logs()

    def __repr__(self) -> str:  # Ray shows this in its logs and state API: no request fields
        replica = getattr(self, "_replica", None)
        return f"ReplicaActor({replica.request.replica_id if replica else '-'})"


# -- the driver process -----------------------------------------------------------------------
class Driver:
    """Runs in the driver process: every Ray call of the runtime."""

    def __init__(self, ray: Any, namespace: str) -> None:
        self.ray, self.namespace = ray, namespace
        self.actor_class = ray.remote(ReplicaActor)
        self.handles: dict[str, Any] = {}
        self.pending: dict[str, Any] = {}  # actor name → its unanswered state() call
        self.node_of: dict[str, str] = {}  # actor name → the node it last reported

    def _actor(self, name: str) -> Any | None:
        if name not in self.handles:
            try:
                self.handles[name] = self.ray.get_actor(name, namespace=self.namespace)
            except ValueError:
                return None
        return self.handles[name]

    def _forget(self, name: str) -> None:
        for table in (self.handles, self.pending, self.node_of):
            table.pop(name, None)

    def start(self, request: ReplicaRequest, log_max_bytes: int | None = None) -> str:
        for earlier, replica_id in self.discover_all():
            if replica_id == request.replica_id:  # one actor per replica: what a crashed controller failed to kill
                self.kill(earlier)
        name = actor_name(request.replica_id)
        self.handles[name] = self.actor_class.options(
            name=name, namespace=self.namespace, lifetime="detached", max_restarts=0, max_concurrency=8,
            num_cpus=request.num_cpus, num_gpus=request.gpus, resources=dict(request.resources),
            scheduling_strategy="SPREAD",  # replicas of an instance on different nodes where there is room
        ).remote(request, f"ray:{self.namespace}", log_max_bytes)
        return name

    def observe(self, handles: dict[str, str]) -> dict[str, ReplicaState]:
        states: dict[str, ReplicaState] = {}
        asked: dict[str, str] = {}
        for replica_id, name in handles.items():
            actor = self._actor(name)
            if actor is None:
                states[replica_id] = ReplicaState(Phase.LOST, node=self.node_of.pop(name, None), detail="no such actor in the Ray cluster")
            else:
                self.pending.setdefault(name, actor.state.remote())
                asked[replica_id] = name
        refs = [self.pending[name] for name in asked.values()]
        ready = set(self.ray.wait(refs, num_returns=len(refs), timeout=OBSERVE_WAIT_S)[0]) if refs else set()
        for replica_id, name in asked.items():
            node = self.node_of.get(name)
            if self.pending[name] not in ready:
                detail = f"node {node} does not answer" if node else "waiting for a node with room"
                states[replica_id] = ReplicaState(Phase.PLACING, node=node, detail=detail)
                continue
            try:
                state = self.ray.get(self.pending.pop(name))
            except self.ray.exceptions.ActorUnavailableError as exc:
                states[replica_id] = ReplicaState(Phase.PLACING, node=node, detail=f"the actor does not answer: {_first_line(exc)}")
            except self.ray.exceptions.RayActorError as exc:
                self._forget(name)
                states[replica_id] = ReplicaState(Phase.LOST, node=node, detail=f"the actor on node {node or '?'} died: {_first_line(exc)}")
            else:
                self.node_of[name] = state.node
                states[replica_id] = state
        return states

    def discover(self) -> dict[str, str]:
        return {replica_id: name for name, replica_id in self.discover_all()}

    def discover_all(self) -> list[tuple[str, str]]:
        """``(actor name, replica id)`` of every replica actor of this namespace."""
        return [(name, replica_id) for name in self.ray.util.list_named_actors() if (replica_id := replica_id_of(name))]

    def _ask(self, name: str, method: str, *args: Any, default: Any = None) -> Any:
        actor = self._actor(name)
        if actor is None:
            return default
        try:
            return self.ray.get(getattr(actor, method).remote(*args), timeout=ACTOR_CALL_S)
        except self.ray.exceptions.RayError:
            return default

    def in_flight(self, name: str) -> int | None:
        return self._ask(name, "in_flight")  # type: ignore[no-any-return]

    def terminate(self, name: str) -> None:
        self._ask(name, "terminate")

    def logs(self, name: str, lines: int) -> str:
        return str(self._ask(name, "logs", lines, default=""))

    def kill(self, name: str) -> None:
        actor = self._actor(name)
        if actor is not None:
            # its log goes with it; an actor that did not answer its last state() (waiting for room,
            # or its node does not answer) is not asked, and none holds us up for long
            if name not in self.pending:
                try:
                    self.ray.get(actor.discard.remote(), timeout=DISCARD_WAIT_S)
                except self.ray.exceptions.RayError:
                    pass
            self.ray.kill(actor, no_restart=True)  # the engine gets SIGKILL with the actor's process
        self._forget(name)

    def nodes(self) -> list[NodeResources]:
        return [
            NodeResources(node["NodeID"], node["NodeManagerAddress"], bool(node["Alive"]), dict(node.get("Resources") or {}))
            for node in self.ray.nodes()
        ]


def _first_line(exc: BaseException) -> str:
    """The gist of a Ray error: its line that says why (``…because its node has died…``), else its first."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    why = [line for line in lines if "because" in line]
    return (why or lines or [type(exc).__name__])[0][:300]


def driver_main() -> None:
    """Entry point of the driver process: connect, then answer calls until the socket closes."""
    conn = Connection(int(sys.argv[1]))
    address, namespace = conn.recv()
    try:
        import ray

        ray.init(address=address, namespace=namespace, log_to_driver=False, logging_level=logging.ERROR)
        driver = Driver(ray, namespace)
    except Exception as exc:  # noqa: BLE001 - any failure to connect means "unavailable"
        conn.send(("unavailable", f"cannot connect to the Ray cluster at {address}: {_first_line(exc)}"))
        os._exit(1)
    conn.send(("ok", None))
    unavailable = (ConnectionError, ray.exceptions.RpcError, ray.exceptions.RaySystemError)
    while True:
        try:
            method, args = conn.recv()
        except (EOFError, OSError):
            os._exit(0)  # the runtime is gone; detached actors stay
        if method == "close":
            os._exit(0)
        try:
            reply: tuple[str, Any] = ("ok", getattr(driver, method)(*args))
        except unavailable as exc:
            reply = ("unavailable", f"the Ray cluster does not answer: {_first_line(exc)}")
        except Exception as exc:  # noqa: BLE001 - reported to the caller, raised there
            reply = ("error", RuntimeError(f"{method} failed in the Ray driver: {type(exc).__name__}: {_first_line(exc)}"))
        conn.send(reply)
