"""Per-instance traffic counters for the console's charts, read from the gateways' ``/metrics``.

The gateway is the one place that sees an instance's traffic, and it may run in other
processes (or on other machines) than the API, so the API reads what the gateways already
export to Prometheus rather than keeping numbers of its own. The answer holds *counters*; the
browser turns two readings into rates. One reading of every gateway serves every console
request for :data:`FRESH_FOR` seconds, however many pages poll.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

FRESH_FOR = 1.0
"""Seconds one reading of the gateways is reused."""
_TIMEOUT = 3.0
_COUNTERS = {
    "inferd_gateway_requests_total": "requests_total",
    "inferd_gateway_errors_total": "errors_total",
    "inferd_gateway_rate_limited_total": "rate_limited_total",
    "inferd_gateway_prompt_tokens_total": "prompt_tokens_total",
    "inferd_gateway_completion_tokens_total": "completion_tokens_total",
}
_TTFT = "inferd_gateway_ttft_seconds"


@dataclass
class InstanceTraffic:
    """What the gateways counted for one instance since they started (all models, codes, tokens)."""

    counters: dict[str, float] = field(default_factory=lambda: dict.fromkeys(_COUNTERS.values(), 0.0))
    ttft_count: float = 0.0
    ttft_sum: float = 0.0
    ttft_buckets: dict[float, float] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        buckets = [{"le": "+Inf" if math.isinf(le) else le, "count": n} for le, n in sorted(self.ttft_buckets.items())]
        return {**self.counters, "ttft_seconds": {"count": self.ttft_count, "sum": self.ttft_sum, "buckets": buckets}}


def traffic_by_instance(texts: list[str]) -> dict[str, InstanceTraffic]:
    """Sum the Prometheus texts of several gateways per ``instance`` label (pure)."""
    found: dict[str, InstanceTraffic] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                instance = sample.labels.get("instance")
                if instance is None:
                    continue
                traffic = found.setdefault(instance, InstanceTraffic())
                key = _COUNTERS.get(sample.name)
                if key is not None:
                    traffic.counters[key] += sample.value
                elif sample.name == f"{_TTFT}_count":
                    traffic.ttft_count += sample.value
                elif sample.name == f"{_TTFT}_sum":
                    traffic.ttft_sum += sample.value
                elif sample.name == f"{_TTFT}_bucket":
                    le = float(sample.labels["le"])
                    traffic.ttft_buckets[le] = traffic.ttft_buckets.get(le, 0.0) + sample.value
    return found


@dataclass
class Reading:
    sampled_at: float
    """Wall-clock time of the reading (the browser divides by its differences)."""
    traffic: dict[str, InstanceTraffic]
    failures: list[str]
    """``url: why`` for each gateway that could not be read."""
    read_at: float = field(default_factory=time.monotonic)


class GatewayMetricsReader:
    """Reads the gateways' ``/metrics`` at most once per :data:`FRESH_FOR` seconds."""

    def __init__(self, urls: list[str], token: str | None) -> None:
        self.urls = urls
        self._headers = {"authorization": f"Bearer {token}"} if token else {}
        self._last: Reading | None = None
        self._lock = asyncio.Lock()

    async def reading(self) -> Reading:
        async with self._lock:
            if self._last is None or time.monotonic() - self._last.read_at > FRESH_FOR:
                self._last = await self._read()
            return self._last

    async def _read(self) -> Reading:
        async with httpx.AsyncClient(timeout=_TIMEOUT, headers=self._headers) as client:
            answers = await asyncio.gather(*(client.get(url) for url in self.urls), return_exceptions=True)
        texts, failures = [], []
        for url, answer in zip(self.urls, answers, strict=True):
            if isinstance(answer, httpx.Response) and answer.status_code == 200:
                texts.append(answer.text)
            else:
                why = f"HTTP {answer.status_code}" if isinstance(answer, httpx.Response) else type(answer).__name__
                failures.append(f"{url}: {why}")
        try:
            traffic = traffic_by_instance(texts)
        except ValueError as exc:  # not Prometheus text: a wrong URL in the settings
            return Reading(time.time(), {}, [*failures, f"unreadable metrics: {exc}"])
        return Reading(time.time(), traffic, failures)
