"""links.pages and meta.total for lists, with DigitalOcean's page arithmetic."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

from tests.support import specs
from tests.support.server import Server


def _query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlparse(url).query)


def test_45_instances_in_pages_of_20(fresh_server: Server) -> None:
    token = fresh_server.admin_token
    with fresh_server.client(token) as client:
        created = [
            client.post("/v2/dedicated-inferences", json=specs.create_body(f"page-{i:02d}")).json()["dedicated_inference"]["id"]
            for i in range(45)
        ]
        pages = [client.get(f"/v2/dedicated-inferences?per_page=20&page={n}").json() for n in (1, 2, 3)]
        beyond = client.get("/v2/dedicated-inferences?per_page=20&page=9").json()
        filtered = client.get("/v2/dedicated-inferences?per_page=200&region=atl1").json()
    assert [len(p["dedicated_inferences"]) for p in pages] == [20, 20, 5]
    assert [i["id"] for p in pages for i in p["dedicated_inferences"]] == created  # oldest first, no overlap
    assert all(p["meta"]["total"] == 45 for p in pages)
    first, second, third = (p["links"]["pages"] for p in pages)
    assert set(first) == {"first", "next", "last"}
    assert set(second) == {"first", "prev", "next", "last"}
    assert set(third) == {"first", "prev", "last"}
    assert _query(first["next"]) == {"page": ["2"], "per_page": ["20"]}
    assert _query(first["last"]) == {"page": ["3"], "per_page": ["20"]}
    assert _query(second["prev"])["page"] == ["1"] and _query(second["next"])["page"] == ["3"]
    assert _query(third["prev"])["page"] == ["2"]
    assert first["first"].startswith(fresh_server.url + "/v2/dedicated-inferences?")
    assert beyond["dedicated_inferences"] == [] and _query(beyond["links"]["pages"]["prev"])["page"] == ["3"]
    assert len(filtered["dedicated_inferences"]) == 45
    assert _query(filtered["links"]["pages"]["last"]) == {"page": ["1"], "per_page": ["200"], "region": ["atl1"]}


def test_token_pages(server: Server) -> None:
    with server.client(server.admin_token) as client:
        instance_id = client.post("/v2/dedicated-inferences", json=specs.create_body("token-pages")).json()["dedicated_inference"]["id"]
        for i in range(4):
            assert client.post(f"/v2/dedicated-inferences/{instance_id}/tokens", json={"name": f"t{i}"}).status_code == 202
        page = client.get(f"/v2/dedicated-inferences/{instance_id}/tokens?per_page=2&page=2").json()
        empty = client.get(f"/v2/dedicated-inferences/{instance_id}/accelerators").json()
    assert page["meta"]["total"] == 5 and [t["name"] for t in page["tokens"]] == ["t1", "t2"]
    assert set(page["links"]["pages"]) == {"first", "prev", "next", "last"}
    assert empty == {"accelerators": [], "links": {"pages": {
        "first": f"{server.url}/v2/dedicated-inferences/{instance_id}/accelerators?page=1&per_page=20",
        "last": f"{server.url}/v2/dedicated-inferences/{instance_id}/accelerators?page=1&per_page=20"}},
        "meta": {"total": 0}}
