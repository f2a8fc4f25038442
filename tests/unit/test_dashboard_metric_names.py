"""The helpers that check deploy/'s dashboard: the PromQL name extractor, Prometheus's relabelling
as the test models it, and the dashboard's structure checks, on tricky inputs."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.support.dashboards import (
    Sample,
    inferd_job,
    load_dashboard,
    load_prometheus,
    relabel,
    stored_series,
    target_labels,
    validate_dashboard,
)
from tests.support.promql import promql_names, string_variables, variable_query_names

R = "inferd_gateway_requests_total"

# (expression, metrics, {metric: matcher labels}, grouping labels)
CASES: list[tuple[str, set[str], dict[str, set[str]], set[str]]] = [
    (f'sum by (code) (rate({R}{{instance=~"$instance", model=~"$model"}}[$__rate_interval]))',
     {R}, {R: {"instance", "model"}}, {"code"}),
    ("histogram_quantile(0.95, sum(rate(inferd_gateway_ttft_seconds_bucket[5m])) by (le))",  # trailing by, a quantile
     {"inferd_gateway_ttft_seconds_bucket"}, {}, {"le"}),
    ('label_replace(inferd_gateway_errors_total, "dst", "inferd_gateway_fake_total", "instance", "(.*)")',  # names in strings
     {"inferd_gateway_errors_total"}, {}, set()),
    ('{__name__="inferd_gateway_route_reloads_total", result="refused"}',  # a name as a matcher
     {"inferd_gateway_route_reloads_total"}, {"inferd_gateway_route_reloads_total": {"result"}}, set()),
    ("inferd_gateway_errors_total # inferd_gateway_commented_total {code=\"5\"}\n + 0",  # a comment
     {"inferd_gateway_errors_total"}, {}, set()),
    ("rate(a_total[5m]) / ignoring(code) group_left(model) b_total offset 1h and on(instance) up == bool 1",
     {"a_total", "b_total", "up"}, {}, {"code", "model", "instance"}),
    (f"max_over_time(rate({R}[1m])[30m:1m] @ end())", {R}, {}, set()),  # a subquery, @ end()
    (f"my_{R} + {R}_extra", {f"my_{R}", f"{R}_extra"}, {}, set()),  # whole identifiers only
    ("inferd_gateway_requests:rate5m", {"inferd_gateway_requests:rate5m"}, {}, set()),  # a recording rule's name
    ("1e-3 * inferd_gateway_request_seconds_sum + 0x1F - .5 - Inf + NaN > 2.5e+2",  # numbers and their letters
     {"inferd_gateway_request_seconds_sum"}, {}, set()),
    ('topk($top, sum without (token) (inferd_gateway_prompt_tokens_total{model=~"${model:regex}"}))',
     {"inferd_gateway_prompt_tokens_total"}, {"inferd_gateway_prompt_tokens_total": {"model"}}, {"token"}),
    (f'count by(model)({R}{{code="5\\"x", instance!~`a"b`}})',  # no spaces, escaped and raw strings
     {R}, {R: {"code", "instance"}}, {"model"}),
    (f"sum(increase({R}[$__range])) without(token, code)", {R}, {}, {"token", "code"}),
    (f"group_left and {R}", {R}, {}, set()),  # group_left without a label list is a keyword
    ("sum by (le) (rate(inferd_gateway_request_seconds_bucket{instance=~\"[[instance]]\"}[[[interval]]]))",  # legacy variables
     {"inferd_gateway_request_seconds_bucket"}, {"inferd_gateway_request_seconds_bucket": {"instance"}}, {"le"}),
]


@pytest.mark.parametrize(("expr", "metrics", "labels", "grouping"), CASES, ids=[c[0][:48] for c in CASES])
def test_promql_names(expr: str, metrics: set[str], labels: dict[str, set[str]], grouping: set[str]) -> None:
    found = promql_names(expr)
    assert found.metrics == metrics
    assert {m: found.labels_of(m) for m in metrics if found.labels_of(m)} == labels
    assert found.grouping == grouping


@pytest.mark.parametrize("expr", [
    '{__name__=~"inferd_.*"}',  # which names? cannot be checked
    'inferd_gateway_errors_total{instance="unterminated}',
    "inferd_gateway_errors_total{instance}",
    "inferd_gateway_errors_total{instance=5}",
    "inferd_gateway_errors_total{instance=\"a\"",
])
def test_promql_names_refuses_what_it_cannot_check(expr: str) -> None:
    with pytest.raises(ValueError):
        promql_names(expr)


def test_grafana_variables_in_and_out_of_strings() -> None:
    expr = 'topk($top, x{model=~"${model:regex}", instance=~"[[instance]]"}[$__rate_interval])'
    assert promql_names(expr).variables == {"top", "__rate_interval"}  # those inside strings are matcher values
    assert string_variables(expr) == {"top", "model", "instance", "__rate_interval"}


def test_variable_queries() -> None:
    found = variable_query_names(f'label_values({R}{{instance=~"$instance", code=~"2.."}}, model)')
    assert found.metrics == {R} and found.labels_of(R) == {"instance", "code", "model"}
    assert variable_query_names("label_values(model)").matchers == [(None, "model", "label_values", "")]
    assert variable_query_names(f"sum by (model) ({R})").grouping == {"model"}  # a plain PromQL query


# -- relabelling -----------------------------------------------------------------------------------
def _stored(name: str, labels: dict[str, str]) -> list[tuple[str, dict[str, str]]]:
    job = inferd_job(load_prometheus())
    return stored_series(job, target_labels(job, "gw-1:9464"), [Sample(name, labels, 1.0)])


def test_the_examples_relabelling_keeps_inferds_instance_label() -> None:
    (stored,) = _stored(R, {"instance": "4f0c", "model": "m", "code": "200"})
    assert stored == (R, {"instance": "4f0c", "model": "m", "code": "200", "job": "inferd-gateway", "gateway": "gw-1:9464"})


def test_series_without_an_inferd_instance_keep_the_target() -> None:
    (stored,) = _stored("inferd_gateway_route_refreshes_total", {"result": "ok"})
    assert stored[1] == {"result": "ok", "instance": "gw-1:9464", "gateway": "gw-1:9464", "job": "inferd-gateway"}


def test_created_series_are_dropped() -> None:
    assert _stored("inferd_gateway_requests_created", {"instance": "4f0c", "model": "m", "code": "200"}) == []
    assert _stored("inferd_gateway_ttft_seconds_created", {"instance": "4f0c", "model": "m"}) == []
    assert _stored("inferd_gateway_ttft_seconds_count", {"instance": "4f0c", "model": "m"}) != []


def test_relabel_actions() -> None:
    labels = {"__name__": "x_total", "a": "1", "b": "2"}
    assert relabel(labels, [{"source_labels": ["a", "b"], "regex": "1;(.*)", "target_label": "c", "replacement": "v${1}"}]) == {**labels, "c": "v2"}
    assert relabel(labels, [{"source_labels": ["a"], "regex": "1", "target_label": "b", "replacement": ""}]) == {"__name__": "x_total", "a": "1"}
    assert relabel(labels, [{"source_labels": ["a"], "regex": "(.*)", "target_label": "b"}]) == {**labels, "b": "1"}
    assert relabel(labels, [{"source_labels": ["a"], "regex": "2", "target_label": "b"}]) == labels  # no match: unchanged
    assert relabel(labels, [{"source_labels": ["__name__"], "regex": "x_", "action": "drop"}]) == labels  # anchored
    assert relabel(labels, [{"source_labels": ["__name__"], "regex": "x_.*", "action": "drop"}]) is None
    assert relabel(labels, [{"source_labels": ["a"], "regex": "2", "action": "keep"}]) is None
    assert relabel(labels, [{"regex": "__name__|a", "action": "labelkeep"}]) == {"__name__": "x_total", "a": "1"}
    assert relabel(labels, [{"regex": "a|b", "action": "labeldrop"}]) == {"__name__": "x_total"}
    with pytest.raises(NotImplementedError):
        relabel(labels, [{"action": "hashmod", "source_labels": ["a"], "modulus": 2, "target_label": "s"}])


def test_honor_labels_true_would_let_the_scraped_instance_win() -> None:
    job: dict[str, Any] = {"job_name": "j", "honor_labels": True}
    (stored,) = stored_series(job, target_labels(job, "gw:1"), [Sample(R, {"instance": "4f0c"}, 1.0)])
    assert stored[1] == {"instance": "4f0c", "job": "j"}


# -- the dashboard's structure checks ----------------------------------------------------------------
def test_the_structure_checks_catch_mistakes() -> None:
    broken = copy.deepcopy(load_dashboard())
    charts = [p for p in broken["panels"] if p["type"] != "row"]
    charts[1]["id"] = charts[0]["id"]
    charts[2]["gridPos"] = dict(charts[0]["gridPos"])
    del charts[3]["datasource"]
    charts[4]["targets"] = []
    charts[5]["targets"][0]["expr"] += " + $nowhere"
    charts[6]["targets"][0]["legendFormat"] = "{{token}}"
    charts[7]["gridPos"]["w"] = 25
    del charts[8]["fieldConfig"]["defaults"]["unit"]
    problems = "\n".join(validate_dashboard(broken))
    for expected in ("ids not unique", "overlaps", "datasource None", "no target", "unknown variables ['nowhere']",
                     "legend labels ['token']", "gridPos", "no unit"):
        assert expected in problems, expected
