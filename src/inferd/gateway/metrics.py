"""Prometheus metrics of the data plane, per instance and model.

They name every tenant's instance ids and traffic, so they are served on an admin listener of
their own (``INFERD_METRICS_HOST``/``INFERD_METRICS_PORT``, optionally behind the bearer token
``INFERD_METRICS_TOKEN``), never on the public or private endpoints.
"""

from __future__ import annotations

import hmac
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_LABELS = ("instance", "model")
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

REQUESTS = Counter("inferd_gateway_requests_total", "Requests proxied, by upstream status code.", [*_LABELS, "code"])
ERRORS = Counter("inferd_gateway_errors_total", "Requests that ended in a 5xx.", _LABELS)
LATENCY = Histogram("inferd_gateway_request_seconds", "Time to the last byte.", _LABELS, buckets=_BUCKETS)
TTFT = Histogram("inferd_gateway_ttft_seconds", "Time to the first byte of the answer.", _LABELS, buckets=_BUCKETS)
_USAGE_LABELS = (*_LABELS, "token")
"""Usage is also per ``di_`` token (its id, never its value): who spent what."""
PROMPT_TOKENS = Counter(
    "inferd_gateway_prompt_tokens_total", "Prompt tokens, as the engine's usage reports them.", _USAGE_LABELS
)
COMPLETION_TOKENS = Counter(
    "inferd_gateway_completion_tokens_total", "Completion tokens, as the engine's usage reports them.", _USAGE_LABELS
)
UNCOUNTED = Counter(
    "inferd_gateway_requests_without_usage_total",
    "Answers that carried no usage (an engine that ignores stream_options, a broken stream).",
    _LABELS,
)
RATE_LIMITED = Counter(
    "inferd_gateway_rate_limited_total", "Requests refused with 429 by a di_ token's RPM/TPM limit.", _LABELS
)
ROUTE_REFRESHES = Counter(
    "inferd_gateway_route_refreshes_total",
    "Cycles of the route table (a poll of the store's change feed and a reload of what it reported, or a full reload), "
    "by result (ok, error).",
    ["result"],
)
ROUTE_RELOADS = Counter(
    "inferd_gateway_route_reloads_total",
    "Targeted reloads of one instance's routes on a miss, by result (ok, error, refused: over budget).",
    ["result"],
)
ROUTE_FULL_RELOADS = Counter(
    "inferd_gateway_route_full_reloads_total",
    "Reloads of every instance (at start, as the change feed's backstop, after losing track), by result (ok, error).",
    ["result"],
)
ROUTE_FEED_INSTANCES = Counter(
    "inferd_gateway_route_feed_instances_total", "Instances reloaded because the change feed reported them."
)


class Series:
    """The labelled children of one instance and model, looked up once: ``labels()`` takes a lock
    and builds a key on every call, and every request would pay for five of them."""

    def __init__(self, instance: str, model: str) -> None:
        self._labels = (instance, model)
        self.latency = LATENCY.labels(instance, model)
        self.ttft = TTFT.labels(instance, model)
        self.errors = ERRORS.labels(instance, model)
        self.uncounted = UNCOUNTED.labels(instance, model)
        self.rate_limited = RATE_LIMITED.labels(instance, model)
        self._requests: dict[str, Any] = {}
        self._tokens: dict[str, tuple[Any, Any]] = {}

    def requests(self, code: str) -> Any:
        child = self._requests.get(code)
        if child is None:
            child = self._requests[code] = REQUESTS.labels(*self._labels, code)
        return child

    def tokens(self, token_id: str) -> tuple[Any, Any]:
        """(prompt, completion) counters of one ``di_`` token."""
        pair = self._tokens.get(token_id)
        if pair is None:
            pair = self._tokens[token_id] = (
                PROMPT_TOKENS.labels(*self._labels, token_id), COMPLETION_TOKENS.labels(*self._labels, token_id)
            )
        return pair


_SERIES: dict[tuple[str, str], Series] = {}


def series(instance: str, model: str) -> Series:
    found = _SERIES.get((instance, model))
    if found is None:
        found = _SERIES[(instance, model)] = Series(instance, model)
    return found


def create_metrics_app(token: str | None = None) -> Starlette:
    """``GET /metrics`` (Prometheus text format); with ``token``, only for ``Bearer <token>``."""
    expected = f"Bearer {token}".encode() if token else None

    async def endpoint(request: Request) -> Response:
        if expected is not None:
            given = request.headers.get("authorization", "").encode("latin-1")
            if not hmac.compare_digest(given, expected):
                return JSONResponse(
                    {"id": "unauthorized", "message": "A valid metrics bearer token is required."},
                    status_code=401,
                    headers={"www-authenticate": "Bearer"},
                )
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/metrics", endpoint, methods=["GET"])])
