"""The Grafana dashboard and the Prometheus example in ``deploy/`` against what ``/metrics`` exports.

Every PromQL expression of the dashboard is read for the metric names and labels it uses; a real
``inferd serve`` (controller and gateway, SQLite) then serves real chat completions, its real
``/metrics`` is scraped as the Prometheus example would scrape it (bearer token, target labels,
``metric_relabel_configs``), and every name and label the dashboard uses must be on the series
Prometheus would store. Renaming a metric or a label without the dashboard fails here.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import running_server
from tests.support import specs
from tests.support.server import Server
from tests.support.waiting import wait_for

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "inferd-dashboard.json"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"

INFERD_METRIC = re.compile(r"inferd_[a-z0-9_]+")
SYNTHETIC = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling",
                       "scrape_series_added"})
"""Series that Prometheus writes itself for every target (they carry only the target's labels)."""
GRAFANA_VARIABLES = frozenset({"datasource", "instance", "model", "__rate_interval", "__range", "__interval"})


# -- PromQL: the names an expression uses ---------------------------------------------------------
@dataclass
class PromQLNames:
    """What one PromQL expression refers to: metric names, label matchers and grouping labels."""

    metrics: set[str] = field(default_factory=set)
    matchers: list[tuple[str | None, str, str, str]] = field(default_factory=list)
    """(metric or None, label, operator, value) of every ``{…}`` matcher but ``__name__``."""
    grouping: set[str] = field(default_factory=set)
    """Labels of ``by``/``without``/``on``/``ignoring``/``group_left``/``group_right``."""
    variables: set[str] = field(default_factory=set)
    """Grafana variables (``$x``, ``${x}``, ``[[x]]``) outside string literals."""

    def labels_of(self, metric: str) -> set[str]:
        return {label for name, label, _, _ in self.matchers if name == metric}


_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_NUMBER = re.compile(r"(?:0[xX][0-9a-fA-F]+|[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)[A-Za-z0-9_]*")
_VARIABLE = re.compile(r"\$\{([A-Za-z0-9_]+)(?::[^}]*)?\}|\$([A-Za-z0-9_]+)|\[\[([A-Za-z0-9_]+)(?::[^\]]*)?\]\]")
_OPERATORS = ("=~", "!~", "!=", "=")
_GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"})


def _skip_space(text: str, i: int) -> int:
    while i < len(text):
        if text[i].isspace():
            i += 1
        elif text[i] == "#":  # a comment, to the end of the line
            end = text.find("\n", i)
            i = len(text) if end < 0 else end + 1
        else:
            break
    return i


def _string(text: str, i: int) -> tuple[str, int]:
    """The literal starting at ``text[i]`` (a quote) and the index after it (escapes kept raw)."""
    quote, j = text[i], i + 1
    while j < len(text) and text[j] != quote:
        j += 2 if text[j] == "\\" and quote != "`" else 1
    if j >= len(text):
        raise ValueError(f"unterminated string at {i} in {text!r}")
    return text[i + 1:j], j + 1


def _matchers(text: str, i: int, metric: str | None, found: PromQLNames) -> int:
    """Read ``{label op "value", …}`` from ``text[i] == "{"``; the index after the ``}``."""
    i += 1
    named: list[str] = []
    local: list[tuple[str, str, str]] = []
    while True:
        i = _skip_space(text, i)
        if i < len(text) and text[i] == ",":
            i += 1
            continue
        if i >= len(text):
            raise ValueError(f"unterminated matchers in {text!r}")
        if text[i] == "}":
            break
        label = _IDENT.match(text, i)
        if label is None:
            raise ValueError(f"expected a label name at {i} in {text!r}")
        i = _skip_space(text, label.end())
        operator = next((op for op in _OPERATORS if text.startswith(op, i)), None)
        if operator is None:
            raise ValueError(f"expected a matcher operator at {i} in {text!r}")
        i = _skip_space(text, i + len(operator))
        if i >= len(text) or text[i] not in "\"'`":
            raise ValueError(f"expected a quoted value at {i} in {text!r}")
        value, i = _string(text, i)
        if label.group() != "__name__":
            local.append((label.group(), operator, value))
        elif operator == "=":
            named.append(value)
        else:
            raise ValueError(f"metric names chosen by {operator} cannot be checked: {text!r}")
    found.metrics.update(named)
    owners: list[str | None] = [*named] or [metric]
    for owner in owners:  # {__name__="x", a="b"}: the matchers belong to x
        found.matchers.extend((owner, label, op, value) for label, op, value in local)
    return i + 1


def promql_names(expr: str) -> PromQLNames:
    """The metric names, matchers and grouping labels of a PromQL expression (with Grafana variables).

    Not a full parser: it reads what a dashboard needs checked, skips string literals, comments,
    numbers, durations, ``[…]`` ranges and Grafana variables, and tells a metric name (an
    identifier not followed by ``(``, not a keyword) from a function or aggregation.
    """
    found = PromQLNames()
    for match in _VARIABLE.finditer(_without_strings(expr)):
        found.variables.add(next(g for g in match.groups() if g))
    i = 0
    while True:
        i = _skip_space(expr, i)
        if i >= len(expr):
            return found
        char = expr[i]
        if char in "\"'`":
            _, i = _string(expr, i)
        elif char == "$":
            variable = _VARIABLE.match(expr, i)
            i = variable.end() if variable else i + 1
        elif char == "[":  # a range, a subquery's step or a [[variable]]
            depth = 0
            while i < len(expr):
                depth += {"[": 1, "]": -1}.get(expr[i], 0)
                i += 1
                if depth == 0:
                    break
        elif char == "{":
            i = _matchers(expr, i, None, found)
        elif char.isdigit() or (char == "." and expr[i + 1:i + 2].isdigit()):
            number = _NUMBER.match(expr, i)
            i = number.end() if number else i + 1
        elif (ident := _IDENT.match(expr, i)) is not None:
            name, i = ident.group(), ident.end()
            after = _skip_space(expr, i)
            following = expr[after] if after < len(expr) else ""
            if name.lower() in _GROUPING:
                if following == "(":
                    close = expr.index(")", after)
                    found.grouping.update(part.strip() for part in expr[after + 1:close].split(",") if part.strip())
                    i = close + 1
            elif name.lower() in _KEYWORDS or following == "(" or _starts_grouping(expr, after):
                pass  # a keyword, a function or an aggregation (`sum by (x) (…)` too)
            else:
                found.metrics.add(name)
                if following == "{":
                    i = _matchers(expr, after, name, found)
        else:
            i += 1


def _starts_grouping(expr: str, i: int) -> bool:
    """Whether ``by (`` or ``without (`` starts at ``i``: what follows an aggregation's name."""
    word = _IDENT.match(expr, i)
    return word is not None and word.group().lower() in ("by", "without") and expr[_skip_space(expr, word.end()):].startswith("(")


def _without_strings(expr: str) -> str:
    """``expr`` with its string literals emptied (variables inside them are matcher values)."""
    out, i = [], 0
    while i < len(expr):
        if expr[i] in "\"'`":
            _, end = _string(expr, i)
            out.append('""')
            i = end
        else:
            out.append(expr[i])
            i += 1
    return "".join(out)


def string_variables(expr: str) -> set[str]:
    """Grafana variables anywhere in ``expr``, string literals included."""
    return {next(g for g in m.groups() if g) for m in _VARIABLE.finditer(expr)}


_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<selector>.+?)\s*,\s*)?(?P<label>[A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$", re.S)


def variable_query_names(query: str) -> PromQLNames:
    """The names a Grafana Prometheus variable query uses (``label_values(selector, label)`` or PromQL)."""
    values = _LABEL_VALUES.match(query)
    if values is None:
        return promql_names(query)
    found = promql_names(values["selector"] or "")
    label = values["label"]
    owners: list[str | None] = [*sorted(found.metrics)] or [None]
    found.matchers.extend((metric, label, "label_values", "") for metric in owners)
    return found


# -- the dashboard --------------------------------------------------------------------------------
def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries(dashboard: Mapping[str, Any]) -> list[tuple[str, PromQLNames]]:
    """(where, names) of every target's expression and every query variable."""
    queries: list[tuple[str, PromQLNames]] = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            queries.append((f"panel {panel['id']} {panel['title']!r} {target['refId']}", promql_names(target["expr"])))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"] if isinstance(variable["query"], str) else variable["query"]["query"]
            queries.append((f"variable {variable['name']}", variable_query_names(query)))
    return queries


def validate_dashboard(dashboard: Mapping[str, Any]) -> list[str]:
    """What is wrong with the dashboard's structure (empty: nothing)."""
    problems: list[str] = []
    if not 36 <= dashboard.get("schemaVersion", 0) <= 41:
        problems.append(f"schemaVersion {dashboard.get('schemaVersion')} is not a Grafana 10/11 one")
    for key in ("title", "uid", "panels", "templating", "time"):
        if key not in dashboard:
            problems.append(f"no {key}")
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    if variables.get("datasource", {}).get("type") != "datasource" or variables["datasource"].get("query") != "prometheus":
        problems.append("no Prometheus data source variable")
    for name in ("instance", "model"):
        if variables.get(name, {}).get("type") != "query":
            problems.append(f"no query variable {name}")
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    ids = [panel.get("id") for panel in panels(dashboard)]
    if len(ids) != len(set(ids)) or None in ids:
        problems.append(f"panel ids not unique: {ids}")
    occupied: dict[tuple[int, int], str] = {}
    for panel in panels(dashboard):
        where = f"panel {panel.get('id')} {panel.get('title')!r}"
        grid = panel.get("gridPos", {})
        if not all(isinstance(grid.get(k), int) for k in "hwxy") or grid["x"] < 0 or grid["w"] < 1 or grid["x"] + grid["w"] > 24:
            problems.append(f"{where}: gridPos {grid}")
            continue
        cells = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])}
        overlapped = {occupied[cell] for cell in cells if cell in occupied}
        if overlapped:
            problems.append(f"{where} overlaps {sorted(overlapped)}")
        occupied.update(dict.fromkeys(cells, where))
        if panel.get("type") == "row":
            continue
        if panel.get("datasource") != datasource:
            problems.append(f"{where}: datasource {panel.get('datasource')}")
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{where}: no target")
        if len({t.get("refId") for t in targets}) != len(targets):
            problems.append(f"{where}: refIds not unique")
        for target in targets:
            if target.get("datasource", datasource) != datasource or not target.get("expr", "").strip():
                problems.append(f"{where} {target.get('refId')}: datasource or expression missing")
            else:
                unknown = string_variables(target["expr"]) - GRAFANA_VARIABLES
                if unknown:
                    problems.append(f"{where} {target.get('refId')}: unknown variables {sorted(unknown)}")
                legend = set(re.findall(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", target.get("legendFormat", "")))
                if legend - promql_names(target["expr"]).grouping:
                    problems.append(f"{where} {target.get('refId')}: legend labels {sorted(legend)} not all grouped by")
        if not panel.get("fieldConfig", {}).get("defaults", {}).get("unit"):
            problems.append(f"{where}: no unit")
    return problems


# -- the Prometheus example -----------------------------------------------------------------------
def load_prometheus(path: Path = PROMETHEUS) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


def inferd_job(config: Mapping[str, Any]) -> dict[str, Any]:
    (job,) = config["scrape_configs"]
    return dict(job)


def relabel(labels: Mapping[str, str], rules: Iterable[Mapping[str, Any]]) -> dict[str, str] | None:
    """Prometheus's relabelling (the actions the example uses): the labels after ``rules``, or
    None when a rule drops the series. Regexes are anchored, as Prometheus anchors them."""
    result = dict(labels)
    for rule in rules:
        action = rule.get("action", "replace")
        regex = re.compile(f"^(?:{rule.get('regex', '(.*)')})$")
        if action in ("replace", "keep", "drop"):
            value = rule.get("separator", ";").join(result.get(name, "") for name in rule.get("source_labels", []))
            match = regex.match(value)
            if action == "keep" and match is None or action == "drop" and match is not None:
                return None
            if action == "replace" and match is not None:
                template = re.sub(r"\$\{?([A-Za-z0-9_]+)\}?", r"\\g<\1>", str(rule.get("replacement", "$1")))
                replaced = match.expand(template)
                if replaced:
                    result[rule["target_label"]] = replaced
                else:
                    result.pop(rule["target_label"], None)
        elif action in ("labeldrop", "labelkeep"):
            result = {k: v for k, v in result.items() if (regex.match(k) is None) == (action == "labeldrop")}
        else:
            raise NotImplementedError(f"relabel action {action!r}: teach this test what Prometheus does with it")
    return result


def target_labels(job: Mapping[str, Any], address: str) -> dict[str, str]:
    """The labels Prometheus gives a target of ``job`` at ``address`` (after ``relabel_configs``)."""
    labels = {"__address__": address, "__scheme__": job.get("scheme", "http"),
              "__metrics_path__": job.get("metrics_path", "/metrics"), "job": job["job_name"]}
    for group in job.get("static_configs", []):
        labels.update(group.get("labels", {}))
    relabelled = relabel(labels, job.get("relabel_configs", []))
    assert relabelled is not None, "the example's relabel_configs drop its own targets"
    relabelled.setdefault("instance", relabelled["__address__"])
    return {k: v for k, v in relabelled.items() if not k.startswith("__")}


def stored_series(job: Mapping[str, Any], target: Mapping[str, str],
                  samples: Iterable[Sample]) -> list[tuple[str, dict[str, str]]]:
    """The series Prometheus keeps of scraped ``samples`` (name, labels): target labels attached
    (``honor_labels`` false: a clash renames the scraped label ``exported_<name>``), then
    ``metric_relabel_configs``."""
    stored: list[tuple[str, dict[str, str]]] = []
    for name, scraped, _ in samples:
        labels = dict(scraped)
        for key, value in target.items():
            if key in labels and not job.get("honor_labels", False):
                labels[f"exported_{key}"] = labels.pop(key)
            if key not in labels:
                labels[key] = value
        kept = relabel({"__name__": name, **labels}, job.get("metric_relabel_configs", []))
        if kept is not None:
            stored.append((kept.pop("__name__"), kept))
    return stored


def labels_by_metric(series: Iterable[tuple[str, Mapping[str, str]]]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for name, labels in series:
        found.setdefault(name, set()).update(k for k, v in labels.items() if v)
    return found


class Sample(NamedTuple):
    name: str
    labels: dict[str, str]
    value: float


def parse_samples(text: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition, by its own name (``_bucket``, ``_total``…)."""
    return [Sample(s.name, dict(s.labels), s.value) for family in text_string_to_metric_families(text) for s in family.samples]


def dashboard_metrics(dashboard: Mapping[str, Any]) -> set[str]:
    return {m for _, names in dashboard_queries(dashboard) for m in names.metrics}


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
        with server.client(server.admin_token) as api:
            created = api.post("/v2/dedicated-inferences", json=specs.create_body("dashboards")).json()
            instance_id = created["dedicated_inference"]["id"]
            wait_for(lambda: api.get(f"/v2/dedicated-inferences/{instance_id}").json()["dedicated_inference"]["status"] == "active",
                     timeout=90, what="the instance active")
            endpoint = api.get(f"/v2/dedicated-inferences/{instance_id}").json()["dedicated_inference"]["endpoints"]["public_endpoint_fqdn"]
        headers = {"Authorization": f"Bearer {created['token']['value']}"}
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
