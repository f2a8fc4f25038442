"""Prometheus metrics of the data plane, per instance and model."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response

_LABELS = ("instance", "model")
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

REQUESTS = Counter("inferd_gateway_requests_total", "Requests proxied, by upstream status code.", [*_LABELS, "code"])
ERRORS = Counter("inferd_gateway_errors_total", "Requests that ended in a 5xx.", _LABELS)
LATENCY = Histogram("inferd_gateway_request_seconds", "Time to the last byte.", _LABELS, buckets=_BUCKETS)
TTFT = Histogram("inferd_gateway_ttft_seconds", "Time to the first byte of the answer.", _LABELS, buckets=_BUCKETS)
TOKENS = Counter(
    "inferd_gateway_tokens_generated_total",
    "Completion tokens: usage.completion_tokens, or one per streamed chunk.",
    _LABELS,
)


async def endpoint(_: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
