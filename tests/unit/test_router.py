"""Prefix-cache-aware routing: prompt hashing, affinity, load bound, cool-off, LRU, modes."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from inferd.gateway.balancer import COOL_OFF_SECONDS, Balancer
from inferd.gateway.router import (
    BLOCK_BYTES,
    MAX_BLOCKS,
    PrefixMemory,
    PrefixRouter,
    affine_choice,
    load_bound,
    make_balancer,
    prefix_blocks,
)
from inferd.gateway.routes import Upstream

SEED = "instance-1" + "model-a"
A, B, C = (Upstream(f"r-{name}", f"http://127.0.0.1:{port}") for name, port in (("a", 9001), ("b", 9002), ("c", 9003)))
ALL = (A, B, C)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def chat(system: str, user: str = "hi") -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]}


def text(seed: int, size: int = 3000) -> str:
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "kappa", "omega", "sigma", "theta", "zeta", "rho"]
    out = ""
    while len(out) < size:
        out += rng.choice(words) + " "
    return out[:size]


def router(**kwargs: object) -> PrefixRouter:
    return PrefixRouter(rng=random.Random(7), **kwargs)  # type: ignore[arg-type]


# -- prefix_blocks ----------------------------------------------------------------------------


def test_blocks_are_deterministic_whole_and_capped() -> None:
    payload = chat(text(1))
    blocks = prefix_blocks(payload, SEED)
    assert blocks == prefix_blocks(payload, SEED)
    assert len(blocks) == (len(text(1)) + len("system") + len("user") + len("hi") + 4) // BLOCK_BYTES
    assert len(set(blocks)) == len(blocks)
    assert len(prefix_blocks(chat(text(1, 100_000)), SEED)) == MAX_BLOCKS
    assert prefix_blocks(chat("short"), SEED) == ()  # less than one whole block


def test_shared_system_prompt_shares_leading_blocks_only() -> None:
    system = text(2, 2000)
    one = prefix_blocks(chat(system, "what is the weather like today, and tomorrow?"), SEED)
    two = prefix_blocks(chat(system, "write me a poem"), SEED)
    shared = len(system) // BLOCK_BYTES
    assert one[:shared] == two[:shared]
    other = prefix_blocks(chat(text(3, 2000), "write me a poem"), SEED)
    assert not set(other) & set(one)


def test_seed_role_and_order_change_the_hashes() -> None:
    payload = chat(text(4))
    assert not set(prefix_blocks(payload, "other-instance" + "model-a")) & set(prefix_blocks(payload, SEED))
    as_user = {"messages": [{"role": "user", "content": text(4)}, {"role": "user", "content": "hi"}]}
    assert prefix_blocks(as_user, SEED)[0] != prefix_blocks(payload, SEED)[0]
    with_tools = {**payload, "tools": [{"type": "function", "function": {"name": "f"}}]}
    assert prefix_blocks(with_tools, SEED)[0] != prefix_blocks(payload, SEED)[0]


def test_content_parts_and_completion_prompts() -> None:
    body = text(5)
    as_parts = {"messages": [{"role": "system", "content": [{"type": "text", "text": body[:1000]}, {"type": "text", "text": body[1000:]}]},
                             {"role": "user", "content": "hi"}]}
    assert prefix_blocks(as_parts, SEED) == prefix_blocks(chat(body), SEED)
    image = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:," + "x" * 10**6}}]}]}
    assert len(prefix_blocks(image, SEED)) == MAX_BLOCKS
    assert prefix_blocks({"prompt": body}, SEED) == prefix_blocks({"prompt": [body, "another"]}, SEED)
    assert len(prefix_blocks({"prompt": list(range(2000))}, SEED)) > 10
    assert prefix_blocks({"prompt": body}, SEED) != prefix_blocks(chat(body), SEED)


@pytest.mark.parametrize("payload", [
    {}, {"messages": "nope"}, {"messages": [1, 2]}, {"messages": [{"role": None, "content": {"a": 1}}]},
    {"prompt": 5}, {"prompt": []}, {"prompt": [[1, 2, 3]]}, {"messages": [], "tools": {1, 2}},
    {"messages": [{"role": "user", "content": [None, {"type": 3}, {"type": "input_audio", "input_audio": {}}]}]},
])
def test_odd_bodies_never_raise(payload: dict[str, object]) -> None:
    assert isinstance(prefix_blocks(payload, SEED), tuple)


# -- choosing ---------------------------------------------------------------------------------


def test_without_prefix_it_is_exactly_least_outstanding() -> None:
    plain, prefixed = Balancer(rng=random.Random(3)), PrefixRouter(rng=random.Random(3))
    moves = random.Random(9)
    held: list[Upstream] = []
    for _ in range(300):
        first, second = plain.choose(ALL, set()), prefixed.choose(ALL, set())
        assert first == second and first is not None
        for balancer in (plain, prefixed):
            balancer.acquire(first)
        held.append(first)
        if moves.random() < 0.5:
            done = held.pop(moves.randrange(len(held)))
            plain.release(done)
            prefixed.release(done)
    assert len(prefixed.memory) == 0
    assert prefixed.choose(ALL, {"r-a", "r-b", "r-c"}) is None


def test_shared_prefix_sticks_to_one_replica() -> None:
    r = router()
    system = text(10)
    chosen = {r.choose(ALL, set(), prefix_blocks(chat(system, f"question {i}"), SEED)) for i in range(50)}
    assert len(chosen) == 1
    assert r.decisions == {"plain": 0, "affinity": 49, "spill": 0, "miss": 1}


def test_deepest_match_wins() -> None:
    r = router()
    base = text(11, 4000)
    r.memory.remember(prefix_blocks(chat(base[:1000] + text(12, 3000)), SEED), "r-a")  # shares ~3 blocks
    r.memory.remember(prefix_blocks(chat(base), SEED), "r-b")  # shares all of them
    for u in (A, B, B, B, C, C):
        r.acquire(u)  # B busier than A, still within the bound: 3 <= ceil(1.25 * 7 / 3) = 3
    assert r.choose(ALL, set(), prefix_blocks(chat(base, "next"), SEED)) == B
    r.acquire(B)
    r.acquire(B)  # B holds 5 > ceil(1.25 * 9 / 3) = 4: the shallower holder
    assert r.choose(ALL, set(), prefix_blocks(chat(base, "next"), SEED)) == A


def test_preferred_replica_over_the_bound_falls_back_to_least_loaded() -> None:
    r = router()
    prefix = prefix_blocks(chat(text(13)), SEED)
    r.memory.remember(prefix, "r-a")
    for _ in range(4):
        r.acquire(A)
    r.acquire(C)
    # total 5, n 3: bound ceil(1.25 * 6 / 3) = 3, and A holds 4
    assert r.choose(ALL, set(), prefix) == B
    assert r.decisions["spill"] == 1
    assert r.memory.depths(prefix, {"r-a", "r-b", "r-c"}) == {"r-a": len(prefix), "r-b": len(prefix)}
    r.acquire(B)
    r.acquire(B)  # A 4, B 2, C 1: A within again (4 <= ceil(1.25 * 8 / 3) = 4): the home first
    assert r.choose(ALL, set(), prefix) == A
    r.acquire(A)  # A 5, B 2, C 1: A over (bound ceil(1.25 * 9 / 3) = 4), B within: the other holder
    assert r.choose(ALL, set(), prefix) == B


def test_failed_and_excluded_replicas_are_avoided() -> None:
    clock = FakeClock()
    r = PrefixRouter(clock=clock, rng=random.Random(1))
    prefix = prefix_blocks(chat(text(14)), SEED)
    r.memory.remember(prefix, "r-a")
    assert r.choose(ALL, set(), prefix) == A
    assert r.choose(ALL, {"r-a"}, prefix) in (B, C)  # a retry excludes what it tried
    r.failed(A)
    assert all(r.choose(ALL, set(), prefix) != A for _ in range(50))
    clock.now += COOL_OFF_SECONDS + 0.1
    for _ in range(4):
        r.acquire(B)
        r.acquire(C)
    assert r.choose(ALL, set(), prefix) == A  # back after the cool-off
    for u in ALL:
        r.failed(u)
    assert r.choose(ALL, set(), prefix) is not None  # all cooling off: still try one


def test_all_different_prompts_spread_evenly() -> None:
    """1,000 unrelated prompts, up to 12 in flight, finishing in random order: each replica gets
    its share, and loads never differ by more than one (no prefix ever matches)."""
    r = router()
    moves = random.Random(5)
    in_flight: list[Upstream] = []
    counts: Counter[str] = Counter()
    for i in range(1000):
        if len(in_flight) == 12 or (in_flight and moves.random() < 0.3):
            r.release(in_flight.pop(moves.randrange(len(in_flight))))
        chosen = r.choose(ALL, set(), prefix_blocks(chat(text(1000 + i, 600)), SEED))
        assert chosen is not None
        r.acquire(chosen)
        in_flight.append(chosen)
        counts[chosen.replica_id] += 1
        loads = [r.outstanding[u.replica_id] for u in ALL]
        assert max(loads) - min(loads) <= 1
    assert all(300 <= counts[u.replica_id] <= 367 for u in ALL), counts
    assert r.decisions["affinity"] == 0


def test_families_keep_affinity_and_never_exceed_the_bound() -> None:
    """6 prompt families, 9 in flight over 3 replicas: most requests go to a replica that was
    sent their prefix before, mostly the family's home, and whenever one does, that replica
    held at most ceil(1.25 * (total + 1) / 3) before."""
    r = router()
    moves = random.Random(6)
    families = [text(200 + f, 2500) for f in range(6)]
    in_flight: list[Upstream] = []
    where: dict[int, Counter[str]] = {f: Counter() for f in range(6)}
    for i in range(1200):
        if len(in_flight) == 9:
            r.release(in_flight.pop(moves.randrange(len(in_flight))))
        family = moves.randrange(6)
        total = sum(r.outstanding[u.replica_id] for u in ALL)
        before = dict(r.decisions)
        chosen = r.choose(ALL, set(), prefix_blocks(chat(families[family], f"turn {i}"), SEED))
        assert chosen is not None
        if r.decisions["affinity"] > before["affinity"]:
            assert r.outstanding[chosen.replica_id] <= load_bound(total, 3, 1.25)
        r.acquire(chosen)
        in_flight.append(chosen)
        where[family][chosen.replica_id] += 1
    home = sum(max(c.values()) for c in where.values()) / 1200
    assert home > 0.6, where
    assert r.decisions["affinity"] > 1100, r.decisions


# -- pieces -----------------------------------------------------------------------------------


def test_load_bound_and_affine_choice() -> None:
    assert load_bound(0, 3, 1.25) == 1
    assert load_bound(4, 3, 1.25) == 3
    assert load_bound(7, 2, 1.25) == 5
    assert load_bound(8, 4, 1.0) == 3
    loads = {"a": 3, "b": 1, "c": 0}  # bound ceil(1.25 * 5 / 3) = 3: a holds 3, within
    assert affine_choice({"a": 3, "b": 3, "c": 1}, loads, 1.25) == "a"
    loads = {"a": 4, "b": 1, "c": 0}  # bound ceil(1.25 * 6 / 3) = 3: a over
    assert affine_choice({"a": 3, "b": 3, "c": 1}, loads, 1.25) == "b"
    assert affine_choice({"c": 1, "b": 1}, loads, 1.25) == "c"  # the order given is the preference
    assert affine_choice({"a": 3}, loads, 1.25) is None
    assert affine_choice({"a": 3}, loads, 2.0) == "a"  # bound ceil(2 * 6 / 3) = 4
    assert affine_choice({}, loads, 1.25) is None


def test_memory_is_a_bounded_lru_keeping_shallow_blocks_longest() -> None:
    memory = PrefixMemory(capacity=10, holders=2)
    for i in range(20):
        memory.remember((100 + i, 200 + i), f"r{i}")
        assert len(memory) <= 10
    assert memory.depths((119, 219), {"r19"}) == {"r19": 2}
    assert memory.depths((100, 200), {"r0"}) == {}  # evicted
    memory.remember((1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12), "x")  # more blocks than capacity
    assert len(memory) == 10
    assert memory.depths((1, 2, 3), {"x"}) == {"x": 3}  # the shallow ones survived
    assert memory.depths((1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12), {"x"}) == {"x": 10}
    for rid in ("p", "q", "s"):
        memory.remember((500,), rid)
    assert list(memory.depths((500,), {"p", "q", "s"}).items()) == [("p", 1), ("s", 1)]  # home kept, newest last
    memory.remember((500,), "s", alive={"s", "t"})  # p is gone
    memory.remember((500,), "t")
    assert list(memory.depths((500,), {"p", "s", "t"})) == ["s", "t"]
    with pytest.raises(ValueError):
        PrefixMemory(capacity=0)


def test_router_memory_stays_bounded() -> None:
    r = PrefixRouter(memory=PrefixMemory(capacity=500), rng=random.Random(2))
    for i in range(200):
        r.choose(ALL, set(), prefix_blocks(chat(text(i, 3000)), SEED))
    assert len(r.memory) == 500


def test_make_balancer() -> None:
    assert isinstance(make_balancer("prefix"), PrefixRouter)
    plain = make_balancer("least-outstanding")
    assert type(plain) is Balancer
    assert plain.choose(ALL, set(), (1, 2, 3)) in ALL  # accepts and ignores a prefix
    with pytest.raises(ValueError, match="'round-robin'.*prefix, least-outstanding"):
        make_balancer("round-robin")
    with pytest.raises(ValueError, match="load_factor"):
        make_balancer("prefix", load_factor=0.9)
