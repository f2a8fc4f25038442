"""The Grafana dashboard and Prometheus example of ``deploy/``, read as their tools would read
them: the queries of every panel, the checks a dashboard must pass, and a model of the example's
scrape (target labels, ``metric_relabel_configs``)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.promql import PromQLNames, promql_names, string_variables, variable_query_names

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "inferd-dashboard.json"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"

INFERD_METRIC = re.compile(r"inferd_[a-z0-9_]+")
SYNTHETIC = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling",
                       "scrape_series_added"})
"""Series that Prometheus writes itself for every target (they carry only the target's labels)."""
GRAFANA_VARIABLES = frozenset({"datasource", "instance", "model", "__rate_interval", "__range", "__interval"})

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
