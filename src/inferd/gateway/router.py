"""Prefix-cache-aware routing: send a prompt to the replica that most likely still holds its
prefix in its KV / prompt cache, unless that replica is over its fair share of the load.

Why: an engine that already holds a prompt's prefix skips its prefill (llama-server keeps each
slot's last prompt and reuses the longest common prefix; vLLM's prefix cache keeps 16-token
blocks). Requests sharing a long system prompt that land on different replicas pay that
prefill on every replica; kept together they pay it about once. Pure affinity would pile a hot
prefix onto one replica, so affinity is bounded by load (consistent hashing with bounded loads,
Mirrokni, Thorup, Zadimoghaddam 2016, plus one request of slack): a replica may take a request
for its prefix only while it holds at most ``ceil(c * (total + 1) / n)`` outstanding requests,
``c`` = 1.25.

How (all in this process, no I/O; see docs/routing.md):

- :func:`prefix_blocks` turns the prompt as the engine will see it (tools, then each message's
  role and content, or the completion prompt) into chained 64-bit hashes of whole 256-byte
  blocks, at most 32 of them (8 KiB, about 2k tokens). Hash *i* stands for the whole text up to
  the end of block *i*, so one dictionary lookup says "this replica saw this entire prefix".
- :class:`PrefixMemory` is a bounded LRU from block hash to the replicas that were sent it,
  the prefix's *home* (the first) first.
- :class:`PrefixRouter` picks the deepest-matching replica under the bound, else the least
  loaded, and remembers the request's blocks for the replica it picked.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from inferd.gateway.balancer import Balancer
from inferd.gateway.route_loader import Upstream

BLOCK_BYTES = 256
"""Bytes of prompt text per block: about 64 tokens of English (4 vLLM blocks of 16). Finer
blocks cost hashing and memory for no routing gain: llama.cpp reuses any common prefix, token
by token, and missing at most the last 255 bytes of a shared prefix forgoes ~64 tokens of
prefill out of the hundreds or thousands that routing saves."""
MAX_BLOCKS = 32
"""Blocks hashed per request (8 KiB): prompts that share this much are treated as one family.
Bounds the work per request (7-11 us to hash, 10-23 us to choose, measured) whatever the
prompt's size."""
MEMORY_ENTRIES = 100_000
"""Block hashes remembered per router (about 3,000 distinct 8 KiB prefixes; measured 14 MB full)."""
HOLDERS = 4
"""Replicas remembered per block, in the order they first got it: a prefix that spilled over to
a second replica under load is found on both, and its home stays first."""
LOAD_FACTOR = 1.25
"""``c`` of the load bound: a replica takes a request for its prefix only while it holds at most
25 % more than an equal share (rounded up, see :func:`load_bound`). 1.0 is near-strict balance,
large values are pure affinity; 1.25 is the value the bounded-loads paper and HAProxy's
``hash-balance-factor`` suggest."""
MODES = ("prefix", "least-outstanding")
"""Values of the routing setting; the first is the default."""

_UNSEEN = ("\x00",)  # no replica id
_MESSAGE = "\x1e"  # record separator: starts each message
_FIELD = "\x1f"  # unit separator: between a message's role and its content


def prefix_blocks(payload: Mapping[str, Any], seed: str) -> tuple[int, ...]:
    """Chained hashes of the whole ``BLOCK_BYTES`` blocks at the start of the request's prompt.

    ``seed`` (instance id + model) keeps identical prompts of different deployments apart. Only
    whole blocks count (a partial one could not be compared with a longer prompt's), at most
    ``MAX_BLOCKS``; a prompt shorter than one block gives ``()``, routed by load alone (its
    prefill is cheap anyway). Never raises: a body of an unexpected shape is the engine's to
    refuse, not ours.

    The hash is Python's own (SipHash, keyed at random per process): 7x cheaper than blake2b
    here, and tenants cannot craft collisions with a key they do not know. Values are therefore
    comparable only within one process, which is all the per-process memory needs."""
    limit = BLOCK_BYTES * MAX_BLOCKS
    data = prompt_text(payload, limit).encode("utf-8", "surrogatepass")[:limit]
    running = hash(seed)
    blocks = []
    for start in range(0, len(data) - BLOCK_BYTES + 1, BLOCK_BYTES):
        running = hash((running, data[start:start + BLOCK_BYTES]))
        blocks.append(running)
    return tuple(blocks)


def prompt_text(payload: Mapping[str, Any], limit: int) -> str:
    """The start (at least ``limit`` characters when there are that many) of the text the engine
    builds its prompt from, in its order: tool definitions (chat templates render them first),
    then each message's role and content (chat), or the prompt (completions). Roles and
    separators matter because the template renders them; exact template text does not, since
    equal inputs give equal rendered prompts."""
    parts: list[str] = []
    size = 0

    def add(text: str) -> bool:
        nonlocal size
        parts.append(text[: limit - size])
        size += len(parts[-1])
        return size >= limit

    messages = payload.get("messages")
    if isinstance(messages, list):
        tools = payload.get("tools")
        if tools and add(_json(tools)):
            return "".join(parts)
        for message in messages:
            if not isinstance(message, Mapping):
                break
            if add(f"{_MESSAGE}{str(message.get('role', ''))[:64]}{_FIELD}") or add(_content(message.get("content"), limit - size)):
                break
            calls = message.get("tool_calls")
            if calls and add(_json(calls)):
                break
    else:
        prompt = payload.get("prompt")
        if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
            prompt = prompt[0]  # a batch: route by its first prompt
        if isinstance(prompt, str):
            add(prompt)
        elif isinstance(prompt, list):  # token ids
            add(",".join(str(token) for token in prompt[: limit // 2]))
    return "".join(parts)


def _content(content: Any, budget: int) -> str:
    """The first ``budget`` characters of a message's content as text: a string, or its parts
    (text, an image's URL, else the part's type). Never copies more than the budget of a huge
    string (a data: URL may be megabytes)."""
    if isinstance(content, str):
        return content[:budget]
    if not isinstance(content, list):
        return ""
    texts: list[str] = []
    for part in content:
        if budget <= 0:
            break
        if not isinstance(part, Mapping):
            continue
        kind = part.get("type")
        value = part.get(kind) if isinstance(kind, str) else None
        if kind == "text" and isinstance(part.get("text"), str):
            text = part["text"][:budget]
        elif isinstance(value, Mapping) and isinstance(value.get("url"), str):
            text = value["url"][:budget]
        else:
            text = f"<{kind}>"
        texts.append(text)
        budget -= len(text)
    return "".join(texts)


def _json(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return ""


class PrefixMemory:
    """Bounded LRU: block hash -> the replicas that were sent a prompt with that prefix, in the
    order they first got it (the first is the prefix's *home*; later ones took it when the home
    was over the load bound). Keeping that order, rather than the most recent, keeps each prefix
    on as few replicas as the load allows, so the engines' few cache slots are not all spent on
    copies of the same hot prefix.

    A request's blocks are refreshed deepest first, so its shallow blocks (shared by the most
    requests) are the most recent and the last to be evicted."""

    def __init__(self, capacity: int = MEMORY_ENTRIES, holders: int = HOLDERS) -> None:
        if capacity < 1 or holders < 1:
            raise ValueError("capacity and holders must be >= 1")
        self.capacity = capacity
        self.holders = holders
        self._entries: OrderedDict[int, tuple[str, ...]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def depths(self, prefix: tuple[int, ...], candidates: Collection[str]) -> dict[str, int]:
        """For each candidate that was sent some leading part of ``prefix``: how many blocks,
        in order of preference (deepest match first, then the order the replicas got it).

        Hashes are chained, so the deepest block a replica holds gives its whole match; the scan
        goes from the deepest block up and stops once every candidate is placed."""
        found: dict[str, int] = {}
        entries = self._entries
        for depth in range(len(prefix), 0, -1):
            holders = entries.get(prefix[depth - 1])
            if holders is None:
                continue
            for replica in holders:
                if replica in candidates and replica not in found:
                    found[replica] = depth
            if len(found) == len(candidates):
                break
        return found

    def remember(self, prefix: tuple[int, ...], replica_id: str, alive: Collection[str] | None = None) -> None:
        """Record that ``replica_id`` was sent ``prefix``. Holders not in ``alive`` (replicas
        that are gone: scaled down, replaced by an update) are dropped on the way; when the list
        is full, the newest holder replaces the last one."""
        entries = self._entries
        seen: tuple[str, ...] | None = _UNSEEN  # a request's blocks mostly share one holder
        updated: tuple[str, ...] = ()  # list: work the new one out once
        for block in reversed(prefix):
            before = entries.get(block)
            if before != seen:
                seen, updated = before, self._updated(before or (), replica_id, alive)
            if before is None:
                entries[block] = updated
            else:
                if updated != before:
                    entries[block] = updated
                entries.move_to_end(block)
        while len(entries) > self.capacity:
            entries.popitem(last=False)

    def _updated(self, holders: tuple[str, ...], replica_id: str, alive: Collection[str] | None) -> tuple[str, ...]:
        if alive is not None and not all(r in alive for r in holders):
            holders = tuple(r for r in holders if r in alive)
        if replica_id in holders:
            return holders
        return (*holders[: self.holders - 1], replica_id)


def load_bound(total: int, replicas: int, factor: float) -> int:
    """Most outstanding requests a replica may already hold and still take a request for its
    prefix, when ``total`` are outstanding over ``replicas``: ``ceil(factor * (total + 1) / replicas)``.

    That is the capacity of consistent hashing with bounded loads (the new request counted in
    ``total + 1``) plus one request of slack: the paper's strict bound caps a replica *after*
    taking the request, which at small loads (2 replicas, 4 in flight: the home at 3 of 4) sends
    a family's request to a replica without its prefix, paying a whole prefill to save a short wait
    (measured: see docs/routing.md). For large totals the slack vanishes next to ``factor``."""
    return math.ceil(factor * (total + 1) / replicas)


def affine_choice(depths: Mapping[str, int], loads: Mapping[str, int], factor: float) -> str | None:
    """The first holder of the prefix, in ``depths``' order of preference (deepest match, then
    home before later holders; see :meth:`PrefixMemory.depths`), that holds no more than
    :func:`load_bound`; ``None`` if all hold more. ``loads`` has every candidate (it defines
    the fair share)."""
    limit = load_bound(sum(loads.values()), len(loads), factor)
    return next((replica for replica in depths if loads[replica] <= limit), None)


class PrefixRouter(Balancer):
    """Least-outstanding with prefix affinity under a load bound (see the module docstring).

    Without a prefix, :meth:`choose` is exactly :class:`Balancer`'s least-outstanding choice and
    remembers nothing, so callers that pass no prefix see no change."""

    def __init__(
        self,
        *,
        load_factor: float = LOAD_FACTOR,
        memory: PrefixMemory | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if not load_factor >= 1.0:
            raise ValueError(f"load_factor must be >= 1.0 (1.0: strict balance), got {load_factor}")
        super().__init__(clock=clock, rng=rng)
        self.load_factor = load_factor
        self.memory = memory if memory is not None else PrefixMemory()
        self.decisions: dict[str, int] = {"plain": 0, "affinity": 0, "spill": 0, "miss": 0}
        """How choices went: no prefix / prefix holder taken / holders over the bound / no holder."""

    def choose(self, upstreams: Iterable[Upstream], exclude: set[str], prefix: tuple[int, ...] = ()) -> Upstream | None:
        upstreams = tuple(upstreams)
        pool = self._pool(upstreams, exclude)
        if not pool:
            return None
        if not prefix:
            self.decisions["plain"] += 1
            return self._least(pool)
        by_id = {u.replica_id: u for u in pool}
        depths = self.memory.depths(prefix, by_id)
        chosen: Upstream | None = None
        if depths:
            loads = {rid: self.outstanding[rid] for rid in by_id}
            preferred = affine_choice(depths, loads, self.load_factor)
            chosen = by_id[preferred] if preferred is not None else None
        self.decisions["affinity" if chosen else "spill" if depths else "miss"] += 1
        if chosen is None:
            chosen = self._least(pool)
        self.memory.remember(prefix, chosen.replica_id, {u.replica_id for u in upstreams})
        return chosen


def make_balancer(mode: str, *, load_factor: float = LOAD_FACTOR) -> Balancer:
    """The balancer for a routing setting: ``prefix`` (default) or ``least-outstanding``."""
    if mode == "prefix":
        return PrefixRouter(load_factor=load_factor)
    if mode == "least-outstanding":
        return Balancer()
    raise ValueError(f"unknown gateway routing {mode!r}; allowed: {', '.join(MODES)}")
