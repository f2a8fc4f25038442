"""Per-token rate limits with ratelimit-* headers on every response, and 429 past them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import running_server
from tests.support.server import Server


@pytest.fixture
def limited(backend: str, tmp_path: Path) -> Iterator[Server]:
    with running_server(backend, tmp_path / "limited", INFERD_RATE_LIMIT_PER_MINUTE="5", INFERD_RATE_LIMIT_PER_HOUR="8") as srv:
        yield srv


def test_headers_on_every_response(server: Server) -> None:
    with server.client(server.admin_token) as client:
        for response in (client.get("/v2/dedicated-inferences"), client.get("/v2/dedicated-inferences/x"),
                         client.post("/v2/dedicated-inferences", json={})):
            assert int(response.headers["ratelimit-limit"]) == 5000
            assert 0 <= int(response.headers["ratelimit-remaining"]) < 5000
            assert int(response.headers["ratelimit-reset"]) > time.time()
            assert response.headers["x-request-id"]


def test_minute_then_hour_budget(limited: Server) -> None:
    token = limited.admin_token
    with limited.client(token) as client:
        remaining = [int(client.get("/v2/dedicated-inferences").headers["ratelimit-remaining"]) for _ in range(5)]
        assert remaining == [7, 6, 5, 4, 3]
        blocked = client.get("/v2/dedicated-inferences")
    assert blocked.status_code == 429
    assert blocked.json() == {"id": "too_many_requests", "message": "API rate limit exceeded.", "request_id": blocked.headers["x-request-id"]}
    assert blocked.headers["ratelimit-limit"] == "8"
    assert int(blocked.headers["retry-after"]) <= 61
    # another token has its own budget
    other = limited.token("default", "read")
    with limited.client(other) as client:
        assert client.get("/v2/dedicated-inferences").status_code == 200


def test_unauthenticated_requests_are_limited_per_client(limited: Server) -> None:
    with limited.client() as client:
        statuses = [client.get("/v2/dedicated-inferences").status_code for _ in range(7)]
    assert statuses[:5] == [401] * 5 and statuses[5:] == [429, 429]
