"""Pure parts behind the console: summing gateway metrics per instance, the CORS policy."""

from __future__ import annotations

from inferd.api.instance_metrics import traffic_by_instance
from inferd.gateway.cors import CorsPolicy

GATEWAY_A = """\
# TYPE inferd_gateway_requests_total counter
inferd_gateway_requests_total{instance="i1",model="m",code="200"} 3.0
inferd_gateway_requests_total{instance="i1",model="m",code="429"} 1.0
inferd_gateway_requests_total{instance="i2",model="m",code="200"} 7.0
# TYPE inferd_gateway_completion_tokens_total counter
inferd_gateway_completion_tokens_total{instance="i1",model="m",token="t1"} 10.0
inferd_gateway_completion_tokens_total{instance="i1",model="m",token="t2"} 5.0
# TYPE inferd_gateway_ttft_seconds histogram
inferd_gateway_ttft_seconds_bucket{instance="i1",model="m",le="0.1"} 1.0
inferd_gateway_ttft_seconds_bucket{instance="i1",model="m",le="+Inf"} 3.0
inferd_gateway_ttft_seconds_count{instance="i1",model="m"} 3.0
inferd_gateway_ttft_seconds_sum{instance="i1",model="m"} 0.9
# TYPE inferd_gateway_route_refreshes_total counter
inferd_gateway_route_refreshes_total{result="ok"} 99.0
"""
GATEWAY_B = """\
# TYPE inferd_gateway_requests_total counter
inferd_gateway_requests_total{instance="i1",model="m2",code="200"} 2.0
# TYPE inferd_gateway_errors_total counter
inferd_gateway_errors_total{instance="i1",model="m2"} 1.0
# TYPE inferd_gateway_ttft_seconds histogram
inferd_gateway_ttft_seconds_bucket{instance="i1",model="m2",le="0.1"} 2.0
inferd_gateway_ttft_seconds_bucket{instance="i1",model="m2",le="+Inf"} 2.0
inferd_gateway_ttft_seconds_count{instance="i1",model="m2"} 2.0
inferd_gateway_ttft_seconds_sum{instance="i1",model="m2"} 0.1
"""


def test_counters_are_summed_over_models_codes_tokens_and_gateways() -> None:
    traffic = traffic_by_instance([GATEWAY_A, GATEWAY_B])
    assert set(traffic) == {"i1", "i2"}  # the unlabelled route counters belong to no instance
    one = traffic["i1"].body()
    assert one["requests_total"] == 6 and one["errors_total"] == 1
    assert one["completion_tokens_total"] == 15 and one["prompt_tokens_total"] == 0
    assert one["ttft_seconds"]["count"] == 5 and abs(one["ttft_seconds"]["sum"] - 1.0) < 1e-9
    assert one["ttft_seconds"]["buckets"] == [{"le": 0.1, "count": 3.0}, {"le": "+Inf", "count": 5.0}]
    assert traffic["i2"].body()["requests_total"] == 7


def test_cors_any_origin_grants_star() -> None:
    policy = CorsPolicy(["*"])
    assert policy.enabled and policy.allowed(b"https://a.example") == [(b"access-control-allow-origin", b"*")]


def test_cors_listed_origins_are_echoed_and_others_refused() -> None:
    policy = CorsPolicy([" https://app.example/ ", "http://localhost:3000"])
    assert policy.allowed(b"https://app.example") == [
        (b"access-control-allow-origin", b"https://app.example"), (b"vary", b"origin"),
    ]
    assert policy.allowed(b"https://evil.example") is None
    assert policy.allowed(b"https://app.example.evil") is None


def test_cors_empty_setting_turns_it_off() -> None:
    assert not CorsPolicy([""]).enabled
