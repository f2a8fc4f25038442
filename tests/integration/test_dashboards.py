"""The Grafana dashboard and the Prometheus example in ``deploy/`` against what ``/metrics`` exports.

Every PromQL expression of the dashboard is read for the metric names and labels it uses; a real
``inferd serve`` (controller and gateway, SQLite) then serves real chat completions, its real
``/metrics`` is scraped as the Prometheus example would scrape it (bearer token, target labels,
``metric_relabel_configs``), and every name and label the dashboard uses must be on the series
Prometheus would store. Renaming a metric or a label without the dashboard fails here.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import running_server
from tests.support import specs
from tests.support.dashboards import (
    INFERD_METRIC,
    PROMETHEUS,
    SYNTHETIC,
    Sample,
    dashboard_metrics,
    dashboard_queries,
    inferd_job,
    labels_by_metric,
    load_dashboard,
    load_prometheus,
    panels,
    parse_samples,
    relabel,
    stored_series,
    target_labels,
    validate_dashboard,
)
from tests.support.instances import create_active
from tests.support.server import Server
from tests.support.waiting import wait_for


# -- static checks --------------------------------------------------------------------------------
def test_the_dashboard_is_valid() -> None:
    dashboard = load_dashboard()
    assert validate_dashboard(dashboard) == []
    used = dashboard_metrics(dashboard)
    assert used, "no metric found in the dashboard"
    strange = {m for m in used if not INFERD_METRIC.fullmatch(m) and m not in SYNTHETIC}
    assert not strange, f"metrics neither inferd's nor Prometheus's own: {sorted(strange)}"
    ranges = {r for p in panels(dashboard) for t in p.get("targets", []) for r in re.findall(r"\[([^\]]*)\]", t["expr"])}
    assert ranges <= {"$__rate_interval", "$__range"}, "fixed ranges do not follow the scrape interval or the time range"


def test_the_dashboard_charts_what_the_issue_asks_for() -> None:
    used = " ".join(t["expr"] for p in panels(load_dashboard()) for t in p.get("targets", []))
    for wanted in ("sum by (code) (rate(inferd_gateway_requests_total", "histogram_quantile(0.95, sum by (le) (rate(inferd_gateway_ttft_seconds_bucket",
                   "histogram_quantile(0.5, sum by (le) (rate(inferd_gateway_request_seconds_bucket", "by (instance, token)",
                   "inferd_gateway_requests_without_usage_total", "inferd_gateway_rate_limited_total",
                   "inferd_gateway_route_refreshes_total", "inferd_gateway_route_reloads_total"):
        assert wanted in used, wanted


def test_the_prometheus_example_scrapes_inferd_with_a_token_file() -> None:
    job = inferd_job(load_prometheus())
    assert job["authorization"]["type"] == "Bearer" and job["authorization"]["credentials_file"]
    assert "credentials" not in job["authorization"], "a token in the config file: use credentials_file"
    assert job.get("honor_labels", False) is False
    assert all(":" in t for group in job["static_configs"] for t in group["targets"])
    assert "must not" in PROMETHEUS.read_text().lower() or "never expose" in PROMETHEUS.read_text().lower()
    # every job="…" the dashboard matches on is this job
    for where, names in dashboard_queries(load_dashboard()):
        for _, label, _, value in names.matchers:
            if label == "job":
                assert value == job["job_name"], where


# -- against a real server ------------------------------------------------------------------------
@dataclass
class Scrape:
    server: Server
    token: str
    instance_id: str


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scrape]:
    """A real ``inferd serve`` with a metrics token, one instance and real traffic through it."""
    token = secrets.token_urlsafe(24)
    with running_server(
        "sqlite", tmp_path_factory.mktemp("dashboards") / "inferd", controller=True, gateway=True,
        INFERD_METRICS_TOKEN=token,
    ) as server:
        instance, created_token = create_active(server, "dashboards")
        instance_id, endpoint = instance["id"], instance["endpoints"]["public_endpoint_fqdn"]
        headers = {"Authorization": f"Bearer {created_token['value']}"}
        body = {"model": specs.MODEL, "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 8}
        with httpx.Client(base_url=endpoint + "/v1", timeout=60) as client:
            answer = client.post("/chat/completions", json=body, headers=headers)
            assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] > 0, answer.text
            with client.stream("POST", "/chat/completions", json={**body, "stream": True}, headers=headers) as streamed:
                assert streamed.status_code == 200
                events = [line for line in streamed.iter_lines() if line.startswith("data: ")]
            assert events[-1] == "data: [DONE]" and len(events) >= 2
            # a di_ token the gateway does not know: it asks the store (a targeted route reload)
            unknown = client.get("/models", headers={"Authorization": "Bearer di_" + "0" * 48})
            assert unknown.status_code == 401
        yield Scrape(server, token, instance_id)


def scrape(live: Scrape, job: Mapping[str, Any], *, token_file: Path | None = None) -> httpx.Response:
    """GET the metrics listener as the example job does (scheme, path, bearer token from a file)."""
    headers = {}
    if token_file is not None:
        headers["Authorization"] = f"{job['authorization']['type']} {token_file.read_text().strip()}"
    url = f"{job.get('scheme', 'http')}://127.0.0.1:{live.server.metrics_port}{job.get('metrics_path', '/metrics')}"
    return httpx.get(url, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def exported(live: Scrape, tmp_path_factory: pytest.TempPathFactory) -> list[Sample]:
    """The samples of the real ``/metrics`` once the traffic above is counted (every name the
    dashboard uses is there and both completions are counted), or what there is after 20 s: the
    tests then say what is missing."""
    job = inferd_job(load_prometheus())
    token_file = tmp_path_factory.mktemp("secrets") / "inferd-metrics-token"  # the example's credentials_file
    token_file.write_text(live.token + "\n")
    first = scrape(live, job, token_file=token_file)
    assert first.status_code == 200, first.text
    wanted = {m for m in dashboard_metrics(load_dashboard()) if m not in SYNTHETIC}
    last: list[Sample] = []

    def complete() -> list[Sample] | None:
        last[:] = parse_samples(scrape(live, job, token_file=token_file).text)
        answered = sum(s.value for s in last if s.name == "inferd_gateway_request_seconds_count" and s.labels.get("instance") == live.instance_id)
        return list(last) if wanted <= {s.name for s in last} and answered >= 2 else None

    try:
        return wait_for(complete, timeout=20, what="every metric of the dashboard in /metrics")
    except AssertionError:
        return last


def test_the_metrics_listener_wants_the_token(live: Scrape) -> None:
    job = inferd_job(load_prometheus())
    assert scrape(live, job).status_code == 401
    assert httpx.get(f"http://127.0.0.1:{live.server.metrics_port}/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_every_metric_of_the_dashboard_is_exported(exported: list[Sample]) -> None:
    names = {s.name for s in exported}
    problems = [f"{where} uses {metric}, which /metrics does not export"
                for where, used in dashboard_queries(load_dashboard()) for metric in sorted(used.metrics - SYNTHETIC - names)]
    assert problems == []


def test_every_label_of_the_dashboard_is_on_its_series(live: Scrape, exported: list[Sample]) -> None:
    """As Prometheus stores them through the example's scrape config: inferd's ``instance`` (the
    Dedicated Inference id) survives the clash with the target's, and ``gateway`` is added."""
    job = inferd_job(load_prometheus())
    target = target_labels(job, f"127.0.0.1:{live.server.metrics_port}")
    stored = labels_by_metric(stored_series(job, target, exported))
    for name in SYNTHETIC:
        stored[name] = set(target)
    problems = []
    for where, used in dashboard_queries(load_dashboard()):
        for metric in sorted(used.metrics):
            if metric not in stored:
                problems.append(f"{where}: no series {metric} (not exported, or dropped by metric_relabel_configs)")
                continue
            missing = (used.labels_of(metric) | used.grouping) - stored[metric]
            if missing:
                problems.append(f"{where}: {metric} has no label {sorted(missing)} (it has {sorted(stored[metric])})")
    assert problems == []
    # the labels the dashboard is about carry what it expects of them
    requests = [labels for name, labels in stored_series(job, target, exported) if name == "inferd_gateway_requests_total"]
    assert {labels["instance"] for labels in requests} == {live.instance_id}
    assert {labels["code"] for labels in requests} == {"200"}
    assert {labels["gateway"] for labels in requests} == {target["gateway"]}


def test_the_examples_relabelling_drops_only_unused_series(live: Scrape, exported: list[Sample]) -> None:
    job = inferd_job(load_prometheus())
    target = target_labels(job, f"127.0.0.1:{live.server.metrics_port}")
    kept = {name for name, _ in stored_series(job, target, exported)}
    dropped = {s.name for s in exported} - kept
    for rule in job.get("metric_relabel_configs", []):
        if rule.get("action") == "drop":  # each drop rule drops something real (not a stale name)
            assert any(relabel({"__name__": name}, [rule]) is None for name in dropped), rule
    assert dropped and all(name.endswith("_created") for name in dropped), sorted(dropped)
    assert dashboard_metrics(load_dashboard()) - SYNTHETIC <= kept


def test_both_completions_were_counted_with_their_usage(live: Scrape, exported: list[Sample]) -> None:
    """The traffic reached the series the panels read, not only their names: two answers (one
    streamed), their tokens per di_ token id, none without usage."""
    ours = [s for s in exported if s.labels.get("instance") == live.instance_id]
    assert sum(s.value for s in ours if s.name == "inferd_gateway_requests_total" and s.labels["code"] == "200") == 2
    for counter in ("inferd_gateway_prompt_tokens_total", "inferd_gateway_completion_tokens_total"):
        (usage,) = [s for s in ours if s.name == counter]
        assert usage.value > 0 and usage.labels["token"], usage
    assert sum(s.value for s in ours if s.name == "inferd_gateway_requests_without_usage_total") == 0
