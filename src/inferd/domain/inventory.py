"""From a cluster's nodes to accelerator units, and from a kind to what one replica asks for.

Pure: the runtime lists nodes (``{resource: amount}`` each, Ray's vocabulary), these rules
count units. One Ray cluster serves one region: every node counts toward the kind's region.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from inferd.domain.catalog import AcceleratorKind, Catalog

ACCELERATOR_TYPE_PREFIX = "accelerator_type:"
TINY = 0.001
"""How much of a marker resource (``accelerator_type:H100``) a replica asks for: enough to
land on such a node, without using up what Ray counts as the node's one unit of it."""


def unit_demand(kind: AcceleratorKind) -> dict[str, float]:
    """Scheduler resources one unit (= one replica) of ``kind`` takes, besides CPUs."""
    demand: dict[str, float] = {}
    if kind.ray_resource:
        demand[kind.ray_resource] = 1.0
    elif kind.gpus_per_unit:
        demand["GPU"] = float(kind.gpus_per_unit)
    if kind.ray_accelerator_type:
        demand[ACCELERATOR_TYPE_PREFIX + kind.ray_accelerator_type] = TINY
    return demand


def units_on_node(kind: AcceleratorKind, resources: Mapping[str, float]) -> int:
    """How many replicas of ``kind`` fit on a node with ``resources`` (total, not free)."""
    demand = unit_demand(kind)
    if not demand:  # a kind with no resource of its own is bounded by CPUs
        demand = {"CPU": kind.cpus_per_unit or 1.0}
    fits = [math.floor(resources.get(name, 0.0) / amount + 1e-9) for name, amount in demand.items()
            if not name.startswith(ACCELERATOR_TYPE_PREFIX)]
    if any(resources.get(name, 0.0) <= 0 for name in demand if name.startswith(ACCELERATOR_TYPE_PREFIX)):
        return 0
    return min(fits) if fits else 0


def cluster_counts(catalog: Catalog, nodes: Iterable[Mapping[str, float]]) -> dict[tuple[str, str], int]:
    """Units of each cluster-counted kind over the alive nodes."""
    alive = list(nodes)
    return {
        (kind.slug, kind.region): sum(units_on_node(kind, node) for node in alive)
        for kind in catalog.accelerators
        if kind.capacity_from == "cluster"
    }
