"""Requests and tokens per minute per ``di_`` token, answered the way OpenAI answers them.

Why a token bucket and not fixed windows (as the control plane's ``inferd.api.ratelimit``):
OpenAI describes its limits as continuously replenished, and its clients read
``x-ratelimit-reset-*`` as "time until the budget is whole again". Each limited dimension of a
key keeps how much of its budget is *used*; that drains at ``limit / 60`` per second, so a
full budget comes back after at most a minute and a request needs ``used + cost <= limit``.
Keeping *used* rather than *what is left* makes a limit that changes (the admin sets a new one)
apply at once, with the key's history kept.

Tokens are charged twice: an estimate before the request runs (:func:`estimate_tokens`,
prompt plus the most it may generate), corrected by :meth:`TokenLimiter.settle` once the
engine's ``usage`` is known. Refused requests cost nothing.

Pure and single-threaded: the gateway calls it from its event loop, so there are no locks.
Memory is bounded: keys whose budgets are whole again are dropped (checked about once a
minute), and past ``max_keys`` the least recently used key is forgotten (that token then starts
from a whole budget: a bound on memory is worth more than exactness for a flood of tokens).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

DEFAULT_COMPLETION_TOKENS = 256
"""Completion tokens a request is assumed to ask for when it names neither ``max_tokens`` nor
``max_completion_tokens``; :meth:`TokenLimiter.settle` corrects the guess afterwards."""
_MESSAGE_OVERHEAD = 4
"""Tokens a chat message costs besides its text (role, separators), as OpenAI counts them."""
_MAX_CHOICES = 128
"""OpenAI's upper bound for ``n``: a larger value is not believed (the engine refuses it)."""
_EPSILON = 1e-9
_SWEEP_SECONDS = 60.0


@dataclass(frozen=True)
class TokenLimits:
    """The limits of one ``di_`` token; ``None`` or ``0``: that dimension is unlimited."""

    requests_per_minute: int | None
    tokens_per_minute: int | None


@dataclass(frozen=True)
class Admission:
    """The answer to one request: let it through, or 429 with ``error`` as the JSON body."""

    allowed: bool
    headers: dict[str, str]
    """``x-ratelimit-*`` of the limits that apply (none when unlimited); ``retry-after`` too
    when a wait helps (not for a request larger than the whole token budget)."""
    error: dict[str, object] | None


def effective_limits(
    global_rpm: int | None, global_tpm: int | None, instance_rpm: int | None, instance_tpm: int | None
) -> TokenLimits:
    """The limits of an instance's tokens: its own value where set (not ``None``), else the
    global setting. ``0`` means unlimited at either level, so an instance's ``0`` lifts a global
    limit for that instance; the result carries ``None`` for every unlimited dimension."""
    rpm = instance_rpm if instance_rpm is not None else global_rpm
    tpm = instance_tpm if instance_tpm is not None else global_tpm
    return TokenLimits(requests_per_minute=rpm or None, tokens_per_minute=tpm or None)


def format_duration(seconds: float) -> str:
    """A duration as OpenAI writes ``x-ratelimit-reset-*`` (Go's ``time.Duration`` style):
    ``20ms``, ``1s``, ``1.5s``, ``6m0s``, ``1m30.5s``, ``1h0m0s``; rounded up to the millisecond
    so a client that waits that long is never early."""
    millis = max(0, math.ceil(seconds * 1000 - 1e-6))
    if millis == 0:
        return "0s"
    if millis < 1000:
        return f"{millis}ms"
    whole, frac = divmod(millis, 1000)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = str(secs) + (f".{frac:03d}".rstrip("0") if frac else "") + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    if minutes:
        return f"{minutes}m{text}"
    return text


def estimate_tokens(payload: Mapping[str, object], default_completion_tokens: int = DEFAULT_COMPLETION_TOKENS) -> int:
    """What a chat, completions or embeddings request may cost before it runs; at least 1.

    The rule: prompt tokens are the characters of its text divided by 4, rounded up (OpenAI's
    rule of thumb for English) — the ``content`` of each message (a string, or the ``text`` of
    its parts; images and audio are not counted), its ``name`` and the ``arguments`` of its
    tool calls, every string of ``tools`` / ``functions`` (their schemas go into the prompt), and
    ``prompt`` or an embeddings ``input`` (a string, strings, or token ids counted one each) —
    plus 4 per message. Then the most the engine may generate: ``max_completion_tokens``, else
    ``max_tokens``, else ``default_completion_tokens``, times ``n`` (1 to 128); nothing for an
    embeddings request (``input`` without ``messages`` or ``prompt``)."""
    chars = 0
    token_ids = 0
    messages = payload.get("messages")
    message_count = 0
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, Mapping):
                message_count += 1
                chars += _message_chars(message)
    for key in ("tools", "functions"):
        chars += _all_strings_chars(payload.get(key))
    embeds = "input" in payload and "messages" not in payload and "prompt" not in payload
    prompt = payload.get("input" if embeds else "prompt")
    items = prompt if isinstance(prompt, list) else [prompt]
    for item in items:
        if isinstance(item, str):
            chars += len(item)
        elif _is_int(item):
            token_ids += 1
        elif isinstance(item, list):
            token_ids += sum(1 for t in item if _is_int(t))
    prompt_tokens = math.ceil(chars / 4) + token_ids + _MESSAGE_OVERHEAD * message_count
    if embeds:
        return max(1, prompt_tokens)
    completion = _whole(payload.get("max_completion_tokens"))
    if completion is None:
        completion = _whole(payload.get("max_tokens"))
    if completion is None:
        completion = default_completion_tokens
    choices = _whole(payload.get("n"))
    choices = min(max(choices or 1, 1), _MAX_CHOICES)
    return max(1, prompt_tokens + completion * choices)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _whole(value: object) -> int | None:
    """A non-negative integer field, or None when absent or not one (the engine judges it)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _message_chars(message: Mapping[str, object]) -> int:
    chars = 0
    content = message.get("content")
    if isinstance(content, str):
        chars += len(content)
    elif isinstance(content, list):
        for part in content:
            text = part.get("text") if isinstance(part, Mapping) else None
            chars += len(text) if isinstance(text, str) else 0
    name = message.get("name")
    chars += len(name) if isinstance(name, str) else 0
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else []:
        function = call.get("function") if isinstance(call, Mapping) else None
        chars += _all_strings_chars(function)
    return chars


def _all_strings_chars(value: object) -> int:
    """Characters of every string (keys included) nested in ``value``, without recursion."""
    chars = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            chars += len(item)
        elif isinstance(item, Mapping):
            for key, inner in item.items():
                chars += len(key) if isinstance(key, str) else 0
                stack.append(inner)
        elif isinstance(item, list):
            stack.extend(item)
    return chars


@dataclass
class _Usage:
    """What one key has used of each budget, as of ``at`` (clock seconds), under ``limits``
    (those of its last request: what the sweep drains it by)."""

    at: float
    limits: TokenLimits
    requests: float = 0.0
    tokens: float = 0.0

    def drain(self, limits: TokenLimits, now: float) -> None:
        """Bring the budgets to ``now`` at the rates of ``limits`` (the limits of this call:
        a changed limit applies to the time since the key was last seen)."""
        elapsed = max(0.0, now - self.at)
        self.at, self.limits = now, limits
        rpm, tpm = limits.requests_per_minute or 0, limits.tokens_per_minute or 0
        self.requests = max(0.0, self.requests - elapsed * rpm / 60) if rpm else 0.0
        self.tokens = max(0.0, self.tokens - elapsed * tpm / 60) if tpm else 0.0

    def idle(self) -> bool:
        return self.requests <= _EPSILON and self.tokens <= _EPSILON


def _wait(used: float, cost: float, limit: int) -> float:
    """Seconds until ``cost`` more fits under ``limit`` (0: it fits now)."""
    over = used + cost - limit
    return over * 60 / limit if over > _EPSILON else 0.0


def _whole_used(used: float) -> int:
    """Used budget as clients see it: a started unit counts (so remaining = limit - used)."""
    return math.ceil(used - _EPSILON)


class TokenLimiter:
    """Budgets per key (the SHA-256 of a ``di_`` token, say) under limits given per call."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be 1 or more")
        self._clock = clock
        self._max_keys = max_keys
        self._keys: dict[str, _Usage] = {}
        """Least recently used first (a key is moved to the end when used)."""
        self._swept = clock()

    def __len__(self) -> int:
        return len(self._keys)

    def admit(self, key: str, limits: TokenLimits, estimated_tokens: int) -> Admission:
        """Charge one request and ``estimated_tokens`` to ``key`` if both fit, else refuse."""
        rpm, tpm = limits.requests_per_minute or 0, limits.tokens_per_minute or 0
        if not rpm and not tpm:
            return Admission(True, {}, None)
        now = self._clock()
        self._sweep(now)
        usage = self._keys.pop(key, None) or _Usage(at=now, limits=limits)
        usage.drain(limits, now)
        estimate = max(0, estimated_tokens)
        if tpm and estimate > tpm:
            self._keep(key, usage)
            message = (
                f"Request too large for this token on tokens per min (TPM): Limit {tpm}, Requested {estimate}. "
                "The input or output tokens must be reduced in order to run successfully "
                "(the estimate counts the prompt and max_tokens or max_completion_tokens)."
            )
            return Admission(False, _headers(usage, limits), _error(message, "tokens"))
        wait_requests = _wait(usage.requests, 1, rpm) if rpm else 0.0
        wait_tokens = _wait(usage.tokens, estimate, tpm) if tpm else 0.0
        if wait_requests or wait_tokens:
            self._keep(key, usage)
            headers = _headers(usage, limits)
            wait = max(wait_requests, wait_tokens)
            headers["retry-after"] = str(max(1, math.ceil(wait - _EPSILON)))
            # The message names the limit that binds longest, the one retry-after waits for.
            if wait_requests >= wait_tokens:
                kind, what, limit, used, asked = "requests", "requests per min (RPM)", rpm, usage.requests, 1
            else:
                kind, what, limit, used, asked = "tokens", "tokens per min (TPM)", tpm, usage.tokens, estimate
            message = (
                f"Rate limit reached for this token on {what}: Limit {limit}, Used {_whole_used(used)}, "
                f"Requested {asked}. Please try again in {format_duration(wait)}."
            )
            return Admission(False, headers, _error(message, kind))
        usage.requests += 1 if rpm else 0
        usage.tokens += estimate if tpm else 0
        self._keep(key, usage)
        return Admission(True, _headers(usage, limits), None)

    def settle(self, key: str, limits: TokenLimits, estimated_tokens: int, actual_tokens: int) -> None:
        """Correct ``key``'s token budget once the engine's usage (prompt plus completion
        tokens) is known: refund what the estimate took beyond it, or charge what it did not
        cover (then the budget may stay overdrawn until it drains). An admitted request that
        produced nothing may be settled with ``actual_tokens=0``."""
        if not limits.tokens_per_minute:
            return
        difference = max(0, actual_tokens) - max(0, estimated_tokens)
        now = self._clock()
        usage = self._keys.pop(key, None)
        if usage is None:
            if difference <= 0:
                return
            usage = _Usage(at=now, limits=limits)
        usage.drain(limits, now)
        usage.tokens = max(0.0, usage.tokens + difference)
        self._keep(key, usage)

    def _keep(self, key: str, usage: _Usage) -> None:
        """Store ``key`` as the most recently used, unless it owes nothing."""
        if usage.idle():
            return
        while len(self._keys) >= self._max_keys:
            del self._keys[next(iter(self._keys))]
        self._keys[key] = usage

    def _sweep(self, now: float) -> None:
        """Drop the keys whose budgets are whole again (drained at the rates of their last
        limits), at most once a minute: O(keys) a minute, nothing per request."""
        if now - self._swept < _SWEEP_SECONDS:
            return
        self._swept = now
        idle = []
        for key, usage in self._keys.items():
            usage.drain(usage.limits, now)
            if usage.idle():
                idle.append(key)
        for key in idle:
            del self._keys[key]


def _headers(usage: _Usage, limits: TokenLimits) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, limit, used in (
        ("requests", limits.requests_per_minute, usage.requests),
        ("tokens", limits.tokens_per_minute, usage.tokens),
    ):
        if limit:
            headers[f"x-ratelimit-limit-{name}"] = str(limit)
            headers[f"x-ratelimit-remaining-{name}"] = str(max(0, limit - _whole_used(used)))
            headers[f"x-ratelimit-reset-{name}"] = format_duration(used * 60 / limit)
    return headers


def _error(message: str, kind: str) -> dict[str, object]:
    return {"error": {"message": message, "type": kind, "param": None, "code": "rate_limit_exceeded"}}
