from __future__ import annotations

from inferd.api.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_minute_and_hour_windows() -> None:
    clock = Clock()
    limiter = RateLimiter(per_hour=5, per_minute=3, clock=clock)
    decisions = [limiter.hit("a") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [4, 3, 2, 2]
    assert decisions[0].reset == 1_000_000 + 3600
    assert decisions[3].reset == 1_000_000 + 61  # the minute window is what blocks
    assert limiter.hit("b").allowed  # budgets are per key
    clock.now += 60
    assert [limiter.hit("a").allowed for _ in range(3)] == [True, True, False]  # hour budget spent
    clock.now += 3600
    assert limiter.hit("a").allowed and limiter.hit("a").remaining == 3


def test_headers() -> None:
    decision = RateLimiter(per_hour=10, per_minute=10, clock=Clock()).hit("k")
    assert dict(decision.headers()) == {"ratelimit-limit": "10", "ratelimit-remaining": "9", "ratelimit-reset": str(1_000_000 + 3600)}
