"""What the controller needs from a place that runs replicas, whatever that place is.

The controller only ever holds an opaque *handle* (a string it stores in the replica row) and
asks the runtime about it. A runtime turns a ``ReplicaRequest`` into a running model server
somewhere (a child process here, a detached actor on a Ray node), prepares the model on the
node that runs it, and reports a ``ReplicaState``: phase, endpoint, node, and a detail line
(download progress, or why it stopped). Starting never blocks: preparation (downloads) runs in
the background and shows as the ``downloading`` phase.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from inferd.domain.workload import EngineOptions


class Phase(StrEnum):
    PLACING = "placing"  # waiting for a node with room (Ray), or the node does not answer yet
    DOWNLOADING = "downloading"  # preparing the model artifact on its node
    STARTING = "starting"  # engine launched, health check not answering yet
    READY = "ready"  # the engine answers its health check
    EXITED = "exited"  # the engine exited or could not be prepared (``detail`` says why)
    LOST = "lost"  # the runtime does not know this handle (its process or node is gone)


RUNNING_PHASES = frozenset({Phase.PLACING, Phase.DOWNLOADING, Phase.STARTING, Phase.READY})


class RuntimeUnavailable(RuntimeError):
    """The runtime cannot be asked right now (Ray head unreachable): callers change nothing."""


@dataclass(frozen=True)
class ReplicaRequest:
    """Everything needed to run one replica on whichever node gets it (picklable, no secrets in repr)."""

    replica_id: str
    instance_id: str
    model_slug: str
    engine: str
    """``llama.cpp`` or ``vllm``."""
    source: str
    """The catalog's model source for that engine (``package:…``, ``file:…``, ``hf:…``)."""
    gated: bool = False
    slots: int = 4
    threads: int | None = None
    gpus: int = 0
    """GPUs of one replica (vLLM's tensor-parallel size)."""
    devices: tuple[int, ...] = ()
    """Local runtime: the CUDA devices of the units this replica was placed on."""
    num_cpus: float = 1.0
    """CPU cores reserved for it where a scheduler counts them (Ray)."""
    resources: Mapping[str, float] = field(default_factory=dict)
    """Extra scheduler resources of one replica (Ray custom resources, ``accelerator_type:…``)."""
    engine_args: tuple[str, ...] = ()
    """The catalog's flags for the engine on this kind of accelerator."""
    options: EngineOptions = field(default_factory=EngineOptions)
    """The deployment's ``workload_config`` and the model's tool calling, chat template and embedding,
    for the engine to translate."""
    max_download_bytes: int | None = None
    hf_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ReplicaState:
    phase: Phase
    endpoint: str | None = None
    """``http://<node address>:<port>``: the engine's OpenAI-compatible root."""
    node: str | None = None
    detail: str | None = None
    """Progress while preparing (``downloading 35% of 1.2 GiB``), the reason once exited."""


@dataclass(frozen=True)
class NodeResources:
    """One node of the cluster as the runtime sees it (for inventory)."""

    node_id: str
    address: str
    alive: bool
    resources: Mapping[str, float]


class Runtime(Protocol):
    name: str

    def start(self, request: ReplicaRequest) -> str:
        """Begin running a replica; returns its handle at once (preparation goes on in the background).
        Whatever this runtime still runs for the same replica id is ended first: the controller
        starts a replica only when none of its processes should run (one process per replica)."""
        ...

    def observe(self, handles: Mapping[str, str]) -> dict[str, ReplicaState]:
        """The state of each ``replica_id → handle``; raises ``RuntimeUnavailable`` if it cannot tell."""
        ...

    def discover(self) -> dict[str, str]:
        """Replicas of this installation the runtime runs, ``replica_id → handle`` (adoption after a restart).
        One handle per replica id: ``start`` keeps it at one process (or actor) each."""
        ...

    def in_flight(self, handle: str) -> int | None:
        """Requests the engine is working on, or None when it cannot tell (then nobody waits for it)."""
        ...

    def terminate(self, handle: str) -> None:
        """Ask the engine to finish (SIGTERM); the replica shows ``exited`` once it has."""
        ...

    def kill(self, handle: str) -> None:
        """End the replica at once and free what it holds (its actor, its process)."""
        ...

    def logs(self, handle: str, lines: int = 50) -> str:
        """The end of the engine's log."""
        ...

    def discard_logs(self, instance_id: str, replica_id: str) -> None:
        """The replica is gone for good: remove what its engine logged (where this runtime can).
        While replicas run, each one's log is kept within ``INFERD_REPLICA_LOG_MAX_BYTES``."""
        ...

    def logged_replicas(self) -> set[tuple[str, str]]:
        """``(instance_id, replica_id)`` of every replica whose log this runtime keeps where the
        controller runs (a sweep removes those whose replica is gone: a crash between removing
        the row and ``discard_logs`` must not leave a log forever)."""
        ...

    def nodes(self) -> list[NodeResources] | None:
        """The cluster's nodes and resources, or None when capacity comes from the catalog alone."""
        ...

    def close(self) -> None: ...
