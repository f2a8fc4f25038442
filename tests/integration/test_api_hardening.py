"""API hardening (issue 8): forwarded headers count only from trusted proxies (item 8), no body
is read before the token is checked ("Also"), and per-team quotas (item 10).

Rate limits and body reading live in the API process, not the database: those tests run on
SQLite only. Quotas are enforced in database transactions: those run on both backends.
"""

from __future__ import annotations

import socket
import ssl
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import running_server
from tests.support import specs
from tests.support.server import Server

LIST = "/v2/dedicated-inferences"
SLUG = specs.SLUG


def _statuses(server: Server, headers_of: Any, count: int) -> list[int]:
    with server.client() as client:
        return [client.get(LIST, headers=headers_of(i)).status_code for i in range(count)]


# -- item 8: X-Forwarded-For / Forwarded only from trusted proxies ------------------------------
@pytest.fixture
def untrusting(tmp_path: Path) -> Iterator[Server]:
    """Default INFERD_TRUSTED_PROXIES (none); 20 requests a minute per client."""
    with running_server("sqlite", tmp_path / "untrusting", INFERD_RATE_LIMIT_PER_MINUTE="20") as srv:
        yield srv


@pytest.fixture
def behind_proxy(tmp_path: Path) -> Iterator[Server]:
    """127.0.0.1 and 10.0.0.0/8 are trusted proxies; 5 requests a minute per client."""
    with running_server(
        "sqlite", tmp_path / "proxied", INFERD_RATE_LIMIT_PER_MINUTE="5", INFERD_TRUSTED_PROXIES="127.0.0.1, 10.0.0.0/8"
    ) as srv:
        yield srv


def test_forwarded_headers_from_an_untrusted_peer_are_ignored(untrusting: Server) -> None:
    # 300 unauthenticated requests, each claiming another client address: they all come from
    # 127.0.0.1, which is not a trusted proxy, so they share 127.0.0.1's budget of 20.
    def rotating(i: int) -> dict[str, str]:
        address = f"198.51.{i // 250}.{i % 250}"
        return {"X-Forwarded-For": address} if i % 3 else {"Forwarded": f"for={address}", "X-Forwarded-For": address}

    statuses = _statuses(untrusting, rotating, 300)
    assert statuses[:20] == [401] * 20
    assert Counter(statuses[20:]) == {429: 280}


def test_trusted_proxy_clients_are_counted_apart(behind_proxy: Server) -> None:
    # Each forwarded client has a budget of its own (5); the proxy itself is not charged.
    for headers in (
        {"X-Forwarded-For": "203.0.113.1"},
        {"X-Forwarded-For": "203.0.113.2"},
        {"Forwarded": 'for="[2001:db8::7]:4711";proto=https'},
        {"Forwarded": "for=203.0.113.3:1234, for=10.9.9.9"},  # 10.9.9.9 is a trusted hop
    ):
        assert _statuses(behind_proxy, lambda _, headers=headers: headers, 6) == [401] * 5 + [429], headers
    # Only the part of the chain that trusted proxies wrote counts: what a client put left of
    # it changes nothing, so 203.0.113.9 cannot escape its budget by inventing predecessors.
    spoofed = _statuses(behind_proxy, lambda i: {"X-Forwarded-For": f"192.0.2.{i}, 203.0.113.9, 10.1.2.3"}, 6)
    assert spoofed == [401] * 5 + [429]
    # and the proxy's own address (no header) still has its untouched budget
    assert _statuses(behind_proxy, lambda _: {}, 1) == [401]


# -- "Also": nothing buffered before the token is checked ---------------------------------------
@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server("sqlite", tmp_path_factory.mktemp("plain")) as srv:
        yield srv


@pytest.mark.parametrize("method", ["POST", "PATCH"])
@pytest.mark.parametrize("authorization", [None, "Bearer dop_v1_" + "0" * 64], ids=["no token", "unknown token"])
def test_unauthenticated_body_is_not_read(plain: Server, method: str, authorization: str | None) -> None:
    # Headers announce 1 MiB (the largest body accepted) and only a few bytes follow: the 401
    # must come back while the rest of the body has not even been sent.
    path = LIST if method == "POST" else f"{LIST}/{uuid.uuid4()}"
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{plain.port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {1024 * 1024}\r\n"
        + (f"Authorization: {authorization}\r\n" if authorization else "")
        + "\r\n"
    )
    with socket.create_connection(("127.0.0.1", plain.port), timeout=10) as raw, \
            plain.ssl_context().wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(head.encode() + b'{"spec": {"name": "')
        answer = b""
        try:
            while b"\r\n\r\n" not in answer:
                chunk = tls.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except (TimeoutError, ssl.SSLError) as exc:
            pytest.fail(f"no answer within 10 s while the body was incomplete: the server waits for it ({exc!r})")
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]


# -- item 10: per-team quotas --------------------------------------------------------------------
QUOTA_DEFAULTS = {"INFERD_TEAM_MAX_INSTANCES": "3", "INFERD_TEAM_MAX_UNITS": f'{{"{SLUG}": 3}}'}


@pytest.fixture(scope="module")
def quota_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """At most 3 instances and 3 units of the CPU slot per team (the inventory has 4)."""
    directory = tmp_path_factory.mktemp(f"quota-{backend}")
    with running_server(
        backend, directory,
        INFERD_TEAM_MAX_INSTANCES=QUOTA_DEFAULTS["INFERD_TEAM_MAX_INSTANCES"],
        INFERD_TEAM_MAX_UNITS=QUOTA_DEFAULTS["INFERD_TEAM_MAX_UNITS"],
    ) as srv:
        yield srv


def _create(client: httpx.Client, name: str, scale: int = 1) -> httpx.Response:
    return client.post(LIST, json=specs.create_body(name, scale=scale))


def _scale(client: httpx.Client, instance_id: str, scale: int) -> httpx.Response:
    accelerators = [{"accelerator_slug": SLUG, "scale": scale, "type": "prefill_decode"}]
    current = client.get(f"{LIST}/{instance_id}").json()["dedicated_inference"]["spec"]["model_deployments"][0]
    body = {"spec": {"model_deployments": [{**current, "accelerators": accelerators}]}}
    return client.patch(f"{LIST}/{instance_id}", json=body)


def _assert_quota_error(response: httpx.Response, message: str) -> None:
    assert response.status_code == 422, response.text
    assert response.json() == {
        "id": "unprocessable_entity", "message": message, "request_id": response.headers["x-request-id"],
    }


def test_instance_quota_holds_under_concurrent_creates(quota_server: Server) -> None:
    token = quota_server.new_team(f"count-{uuid.uuid4().hex[:8]}")
    responses: list[httpx.Response] = []

    def create(i: int) -> None:
        with quota_server.client(token) as client:
            responses.append(_create(client, f"racer-{i}"))

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.status_code for r in responses) == [202] * 3 + [422] * 5, [r.text for r in responses]
    for refused in (r for r in responses if r.status_code == 422):
        _assert_quota_error(refused, "team quota allows 3 instances and the team has 3; "
                                     "delete one, or ask an operator to raise the quota")
    with quota_server.client(token) as client:
        assert client.get(LIST).json()["meta"]["total"] == 3
        # an instance being deleted no longer counts
        victim = next(r for r in responses if r.status_code == 202).json()["dedicated_inference"]["id"]
        assert client.delete(f"{LIST}/{victim}").status_code == 202
        assert _create(client, "after-delete").status_code == 202
        assert _create(client, "one-too-many").status_code == 422


def test_unit_quota_per_accelerator_kind(quota_server: Server) -> None:
    token = quota_server.new_team(f"units-{uuid.uuid4().hex[:8]}")
    field = "spec.model_deployments[0].accelerators[0].scale"
    with quota_server.client(token) as client:
        # 4 units fit the inventory but not the team's quota of 3
        _assert_quota_error(_create(client, "big", scale=4), f"{field}: team quota allows 3 units of {SLUG}; this spec asks for 4")
        first = _create(client, "first", scale=2)
        assert first.status_code == 202, first.text
        first_id = first.json()["dedicated_inference"]["id"]
        _assert_quota_error(
            _create(client, "second", scale=2),
            f"{field}: team quota allows 3 units of {SLUG}; this spec asks for 2 and the team's other instances hold 2",
        )
        second = _create(client, "second", scale=1)
        assert second.status_code == 202, second.text
        second_id = second.json()["dedicated_inference"]["id"]
        # PATCH: the pending (desired) spec counts, not what runs
        _assert_quota_error(
            _scale(client, first_id, 3),
            f"{field}: team quota allows 3 units of {SLUG}; this spec asks for 3 and the team's other instances hold 1",
        )
        assert _scale(client, first_id, 1).status_code == 202
        assert _scale(client, second_id, 2).status_code == 202
        assert _create(client, "third", scale=1).status_code == 422
        # a deleting instance holds nothing any more
        assert client.delete(f"{LIST}/{second_id}").status_code == 202
        assert _create(client, "third", scale=2).status_code == 202
    # another team has a quota of its own
    other = quota_server.new_team(f"other-{uuid.uuid4().hex[:8]}")
    with quota_server.client(other) as client:
        assert _create(client, "first", scale=3).status_code == 202


def test_team_quota_set_by_an_operator(quota_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    # this server's defaults: 3 instances and 3 units of the CPU slot per team; the operator's
    # CLI has the same settings (it shows the defaults next to the team's own limits)
    for name, value in QUOTA_DEFAULTS.items():
        monkeypatch.setenv(name, value)
    team = f"capped-{uuid.uuid4().hex[:8]}"
    token = quota_server.new_team(team)
    shown = quota_server.cli("admin", "team", "set-quota", team, "--instances", "1", "--units", f"{SLUG}=2")
    assert shown.splitlines() == ["instances\t0\t1\tteam", f"units:{SLUG}\t0\t2\tteam"]
    field = "spec.model_deployments[0].accelerators[0].scale"
    with quota_server.client(token) as client:
        _assert_quota_error(_create(client, "wide", scale=3), f"{field}: team quota allows 2 units of {SLUG}; this spec asks for 3")
        created = _create(client, "only", scale=2)
        assert created.status_code == 202, created.text
        instance_id = created.json()["dedicated_inference"]["id"]
        _assert_quota_error(_create(client, "second"), "team quota allows 1 instance and the team has 1; "
                                                       "delete one, or ask an operator to raise the quota")
    # a quota lowered below what the team holds keeps what it has and refuses only growth
    quota_server.cli("admin", "team", "set-quota", team, "--units", f"{SLUG}=1")
    with quota_server.client(token) as client:
        response = client.patch(f"{LIST}/{instance_id}", json={"spec": {"enable_public_endpoint": False}})
        assert response.status_code == 202, response.text
        assert _scale(client, instance_id, 3).status_code == 422
    assert quota_server.cli("admin", "team", "quota", team).splitlines() == [
        "instances\t1\t1\tteam", f"units:{SLUG}\t2\t1\tteam",
    ]
    # a team's own quota may also be above the defaults
    quota_server.cli("admin", "team", "set-quota", team, "--instances", "5", "--units", f"{SLUG}=4")
    with quota_server.client(token) as client:
        assert _scale(client, instance_id, 4).status_code == 202
        _assert_quota_error(
            _create(client, "second"),
            f"{field}: team quota allows 4 units of {SLUG}; this spec asks for 1 and the team's other instances hold 4",
        )
    # other teams keep the defaults
    other = quota_server.new_team(f"plain-{uuid.uuid4().hex[:8]}")
    with quota_server.client(other) as client:
        assert _create(client, "wide", scale=4).status_code == 422
        assert _create(client, "wide", scale=3).status_code == 202
    # back to the defaults, which the team is now over: it keeps its instance, grows no more
    assert quota_server.cli("admin", "team", "set-quota", team, "--reset").splitlines() == [
        "instances\t1\t3\tdefault", f"units:{SLUG}\t4\t3\tdefault",
    ]
    with quota_server.client(token) as client:
        assert _create(client, "second").status_code == 422
        response = client.patch(f"{LIST}/{instance_id}", json={"spec": {"enable_public_endpoint": True}})
        assert response.status_code == 202, response.text
        assert _scale(client, instance_id, 2).status_code == 202
        assert _create(client, "second").status_code == 202
