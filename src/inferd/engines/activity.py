"""How busy a replica is, from its Prometheus metrics: used to drain before stopping it."""

from __future__ import annotations

import httpx

from inferd.engines.base import url_host

# Gauges that count requests a replica has accepted and not finished, per engine.
IN_FLIGHT_GAUGES = {
    "llama.cpp": ("llamacpp:requests_processing", "llamacpp:requests_deferred"),
    "vllm": ("vllm:num_requests_running", "vllm:num_requests_waiting"),
}


def parse_in_flight(metrics_text: str, gauges: tuple[str, ...]) -> int | None:
    """Sum of the gauges (over all label sets); None when none of them is present."""
    total, seen = 0.0, False
    for line in metrics_text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        if name.split("{", 1)[0] in gauges:
            try:
                total += float(value)
            except ValueError:
                continue
            seen = True
    return int(total) if seen else None


def in_flight(host: str, port: int, engine: str, timeout: float = 1.0) -> int | None:
    """Requests the replica is working on, or None if it cannot tell (then callers don't wait)."""
    gauges = IN_FLIGHT_GAUGES.get(engine)
    if gauges is None:
        return None
    try:
        response = httpx.get(f"http://{url_host(host)}:{port}/metrics", timeout=timeout, trust_env=False)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    return parse_in_flight(response.text, gauges)
