"""Issue 10: requests and tokens per minute per di_ token (the pure limiter, on a fake clock)."""

from __future__ import annotations

import pytest

from inferd.gateway.tokenlimits import (
    DEFAULT_COMPLETION_TOKENS,
    TokenLimiter,
    TokenLimits,
    effective_limits,
    estimate_tokens,
    format_duration,
)


class Clock:
    def __init__(self) -> None:
        self.now = 5_000.0

    def __call__(self) -> float:
        return self.now


RPM3 = TokenLimits(requests_per_minute=3, tokens_per_minute=None)


def test_rpm_refusal_headers_and_openai_error_body() -> None:
    clock = Clock()
    limiter = TokenLimiter(clock=clock)
    first = limiter.admit("k", RPM3, 10)
    assert first.allowed and first.error is None
    assert first.headers == {
        "x-ratelimit-limit-requests": "3",
        "x-ratelimit-remaining-requests": "2",
        "x-ratelimit-reset-requests": "20s",
    }
    assert limiter.admit("k", RPM3, 10).allowed and limiter.admit("k", RPM3, 10).allowed
    refused = limiter.admit("k", RPM3, 10)
    assert not refused.allowed
    assert refused.headers == {
        "x-ratelimit-limit-requests": "3",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1m0s",
        "retry-after": "20",
    }
    assert refused.error == {
        "error": {
            "message": "Rate limit reached for this token on requests per min (RPM): Limit 3, Used 3, Requested 1. "
            "Please try again in 20s.",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    assert limiter.admit("other", RPM3, 10).allowed  # budgets are per key
    clock.now += 19.9
    assert not limiter.admit("k", RPM3, 10).allowed  # refusals are free: still one short
    clock.now += 0.1
    again = limiter.admit("k", RPM3, 10)
    assert again.allowed and again.headers["x-ratelimit-remaining-requests"] == "0"


def test_replenishes_continuously() -> None:
    clock = Clock()
    limiter = TokenLimiter(clock=clock)
    limits = TokenLimits(requests_per_minute=60, tokens_per_minute=None)
    assert all(limiter.admit("k", limits, 1).allowed for _ in range(60))
    assert not limiter.admit("k", limits, 1).allowed
    clock.now += 1.0  # one request per second comes back
    assert limiter.admit("k", limits, 1).allowed
    assert not limiter.admit("k", limits, 1).allowed
    clock.now += 30.0
    decision = limiter.admit("k", limits, 1)
    assert decision.headers["x-ratelimit-remaining-requests"] == "29"
    assert decision.headers["x-ratelimit-reset-requests"] == "31s"
    clock.now += 3600  # never more than the whole budget
    assert limiter.admit("k", limits, 1).headers["x-ratelimit-remaining-requests"] == "59"


def test_tpm_refusal_names_tokens_and_waits_for_the_estimate() -> None:
    clock = Clock()
    limiter = TokenLimiter(clock=clock)
    limits = TokenLimits(requests_per_minute=None, tokens_per_minute=600)  # 10 tokens a second
    ok = limiter.admit("k", limits, 500)
    assert ok.allowed
    assert ok.headers == {
        "x-ratelimit-limit-tokens": "600",
        "x-ratelimit-remaining-tokens": "100",
        "x-ratelimit-reset-tokens": "50s",
    }
    refused = limiter.admit("k", limits, 115)
    assert not refused.allowed and refused.error is not None
    error = refused.error["error"]
    assert isinstance(error, dict) and error["type"] == "tokens" and error["code"] == "rate_limit_exceeded"
    assert error["message"] == (
        "Rate limit reached for this token on tokens per min (TPM): Limit 600, Used 500, Requested 115. "
        "Please try again in 1.5s."
    )
    assert refused.headers["retry-after"] == "2"  # whole seconds, rounded up


def test_settle_refunds_and_charges_the_difference() -> None:
    clock = Clock()
    limiter = TokenLimiter(clock=clock)
    limits = TokenLimits(requests_per_minute=None, tokens_per_minute=1000)
    assert limiter.admit("k", limits, 900).allowed
    assert not limiter.admit("k", limits, 200).allowed
    limiter.settle("k", limits, estimated_tokens=900, actual_tokens=100)  # refund 800
    decision = limiter.admit("k", limits, 200)
    assert decision.allowed and decision.headers["x-ratelimit-remaining-tokens"] == "700"
    limiter.settle("k", limits, estimated_tokens=200, actual_tokens=1500)  # charge 1300: overdrawn
    refused = limiter.admit("k", limits, 1)
    assert not refused.allowed
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    assert refused.headers["x-ratelimit-reset-tokens"] == "1m36s"  # 1600 used at 1000/min
    clock.now += 36.0  # 600 drained: 1000 used, so one more token waits 60 ms
    assert not limiter.admit("k", limits, 1).allowed
    clock.now += 0.061
    assert limiter.admit("k", limits, 1).allowed


def test_settle_for_a_forgotten_key_charges_only() -> None:
    limiter = TokenLimiter(clock=Clock())
    limits = TokenLimits(requests_per_minute=None, tokens_per_minute=100)
    limiter.settle("new", limits, estimated_tokens=50, actual_tokens=10)
    assert len(limiter) == 0
    limiter.settle("new", limits, estimated_tokens=0, actual_tokens=100)
    assert not limiter.admit("new", limits, 1).allowed
    limiter.settle("x", TokenLimits(5, None), estimated_tokens=0, actual_tokens=100)  # no TPM: nothing to settle
    assert len(limiter) == 1


def test_request_larger_than_the_whole_budget_can_never_pass() -> None:
    limiter = TokenLimiter(clock=Clock())
    limits = TokenLimits(requests_per_minute=10, tokens_per_minute=100)
    refused = limiter.admit("k", limits, 101)
    assert not refused.allowed and refused.error is not None
    error = refused.error["error"]
    assert isinstance(error, dict) and error["type"] == "tokens" and error["code"] == "rate_limit_exceeded"
    assert str(error["message"]).startswith(
        "Request too large for this token on tokens per min (TPM): Limit 100, Requested 101. "
        "The input or output tokens must be reduced"
    )
    assert "retry-after" not in refused.headers  # no wait helps
    assert refused.headers["x-ratelimit-remaining-requests"] == "10"  # and it cost nothing
    assert limiter.admit("k", limits, 100).allowed


def test_both_limits_report_the_longer_wait() -> None:
    limiter = TokenLimiter(clock=Clock())
    limits = TokenLimits(requests_per_minute=1, tokens_per_minute=6000)
    ok = limiter.admit("k", limits, 10)
    assert ok.allowed and set(ok.headers) == {
        "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
        "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens",
    }
    refused = limiter.admit("k", limits, 10)
    assert refused.error is not None and refused.headers["retry-after"] == "60"
    error = refused.error["error"]
    assert isinstance(error, dict) and error["type"] == "requests"
    # Tokens bind when their wait is the longer one.
    tight = TokenLimits(requests_per_minute=100, tokens_per_minute=60)
    assert limiter.admit("t", tight, 60).allowed
    refused = limiter.admit("t", tight, 30)
    assert refused.error is not None and refused.headers["retry-after"] == "30"
    error = refused.error["error"]
    assert isinstance(error, dict) and error["type"] == "tokens"


@pytest.mark.parametrize("limits", [TokenLimits(None, None), TokenLimits(0, 0), TokenLimits(None, 0)])
def test_unlimited_passes_without_headers_or_memory(limits: TokenLimits) -> None:
    limiter = TokenLimiter(clock=Clock())
    for _ in range(1000):
        decision = limiter.admit("k", limits, 10**9)
        assert decision.allowed and decision.headers == {} and decision.error is None
    limiter.settle("k", limits, 1, 10**9)
    assert len(limiter) == 0


def test_only_the_limits_that_apply_have_headers() -> None:
    decision = TokenLimiter(clock=Clock()).admit("k", TokenLimits(requests_per_minute=0, tokens_per_minute=50), 5)
    assert set(decision.headers) == {"x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"}


def test_a_lowered_limit_applies_at_once() -> None:
    limiter = TokenLimiter(clock=Clock())
    assert all(limiter.admit("k", TokenLimits(10, None), 1).allowed for _ in range(5))
    refused = limiter.admit("k", TokenLimits(5, None), 1)
    assert not refused.allowed and refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert limiter.admit("k", TokenLimits(6, None), 1).allowed


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.0001, "1ms"),
        (0.02, "20ms"),
        (0.999, "999ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (1.146, "1.146s"),
        (20, "20s"),
        (60, "1m0s"),
        (90.5, "1m30.5s"),
        (360, "6m0s"),
        (3600, "1h0m0s"),
        (3725.25, "1h2m5.25s"),
        (-1, "0s"),
    ],
)
def test_reset_durations_in_openai_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_effective_limits_instance_wins_and_zero_means_unlimited() -> None:
    assert effective_limits(60, 1000, None, None) == TokenLimits(60, 1000)
    assert effective_limits(60, 1000, 5, None) == TokenLimits(5, 1000)
    assert effective_limits(60, 1000, None, 5000) == TokenLimits(60, 5000)
    assert effective_limits(60, 1000, 0, 0) == TokenLimits(None, None)  # the instance lifts the global limit
    assert effective_limits(None, 0, 10, None) == TokenLimits(10, None)
    assert effective_limits(0, None, None, None) == TokenLimits(None, None)


def test_memory_is_bounded_by_max_keys() -> None:
    limiter = TokenLimiter(clock=Clock(), max_keys=3)
    for key in "abcd":
        assert limiter.admit(key, RPM3, 1).allowed
    assert len(limiter) == 3
    # "a", the least recently used, was forgotten: it has a whole budget again.
    assert limiter.admit("a", RPM3, 1).headers["x-ratelimit-remaining-requests"] == "2"
    with pytest.raises(ValueError):
        TokenLimiter(max_keys=0)


def test_idle_keys_are_forgotten() -> None:
    clock = Clock()
    limiter = TokenLimiter(clock=clock)
    for n in range(100):
        limiter.admit(f"k{n}", TokenLimits(60, 600), 30)
    busy = TokenLimits(requests_per_minute=1, tokens_per_minute=None)
    limiter.admit("busy", busy, 1)
    clock.now += 59.0
    limiter.admit("busy", busy, 1)  # refused, kept; the others are not swept before a minute
    assert len(limiter) == 101
    clock.now += 1.0  # the others drained 30 tokens at 10/s and their request at 1/s long ago
    limiter.admit("busy", busy, 1)
    assert len(limiter) == 1


def test_estimate_chat() -> None:
    payload = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "x" * 40},
            {"role": "user", "content": [{"type": "text", "text": "y" * 20}, {"type": "image_url", "image_url": {"url": "z" * 999}}]},
            {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "ab", "arguments": "{}"}}]},
        ],
        "max_tokens": 100,
    }
    # (40 + 20 + "ab" + "{}" + keys "name" "arguments") chars: 77 -> 20 tokens, 3 messages x 4, 100 out.
    assert estimate_tokens(payload) == 20 + 12 + 100
    assert estimate_tokens({**payload, "max_completion_tokens": 10}) == 20 + 12 + 10  # wins over max_tokens
    assert estimate_tokens({**payload, "n": 3}) == 20 + 12 + 300


def test_estimate_prompt_forms_and_defaults() -> None:
    assert estimate_tokens({"prompt": "abcdefgh"}) == 2 + DEFAULT_COMPLETION_TOKENS
    assert estimate_tokens({"prompt": ["abcd", "efgh"], "max_tokens": 0}) == 2
    assert estimate_tokens({"prompt": [1, 2, 3], "max_tokens": 1}) == 4
    assert estimate_tokens({"prompt": [[1, 2], [3]], "max_tokens": 1}) == 4
    assert estimate_tokens({"prompt": "", "max_tokens": 0}) == 1  # never free
    assert estimate_tokens({"prompt": "abcd"}, default_completion_tokens=16) == 17
    # Nonsense the engine will refuse is not believed.
    assert estimate_tokens({"prompt": "abcd", "max_tokens": -5, "n": 10**6}) == 1 + DEFAULT_COMPLETION_TOKENS * 128
    assert estimate_tokens({"prompt": "abcd", "max_tokens": True}) == 1 + DEFAULT_COMPLETION_TOKENS
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    # "type" "function" "function" "name" "f" "parameters" "type" "object": 45 chars -> 12 tokens.
    assert estimate_tokens({"messages": [], "tools": tools, "max_tokens": 0}) == 12


def test_estimate_embeddings_counts_input_and_no_completion() -> None:
    assert estimate_tokens({"model": "e", "input": "abcdefgh"}) == 2
    assert estimate_tokens({"model": "e", "input": ["abcd", "efgh", "i"]}) == 3
    assert estimate_tokens({"model": "e", "input": [[1, 2, 3], [4]]}) == 4
    assert estimate_tokens({"model": "e", "input": [7, 8], "max_tokens": 100}) == 2  # nothing is generated
    assert estimate_tokens({"model": "e", "input": ""}) == 1
