from __future__ import annotations

from inferd.engines.activity import IN_FLIGHT_GAUGES, parse_in_flight

LLAMA = """# HELP llamacpp:requests_processing Number of requests processing
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 2
llamacpp:requests_deferred 1
llamacpp:n_busy_slots_per_decode 1
"""
VLLM = """vllm:num_requests_running{model_name="m"} 1.0
vllm:num_requests_running{model_name="n"} 0.0
vllm:num_requests_waiting{model_name="m"} 3.0
"""


def test_parse_in_flight() -> None:
    assert parse_in_flight(LLAMA, IN_FLIGHT_GAUGES["llama.cpp"]) == 3
    assert parse_in_flight(VLLM, IN_FLIGHT_GAUGES["vllm"]) == 4
    assert parse_in_flight("other_metric 5\n", IN_FLIGHT_GAUGES["llama.cpp"]) is None
    assert parse_in_flight("llamacpp:requests_processing 0\n", IN_FLIGHT_GAUGES["llama.cpp"]) == 0
