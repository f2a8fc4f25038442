"""Readiness probes for replicas: one HTTP GET, 200 means ready, anything else means not yet.

Every failure (refused connection, timeout, 503 while llama-server loads, garbage) maps to
``False`` because the caller's only decision is "route traffic now or look again later";
the reason belongs in the replica's logs, not in the probe.
"""

from __future__ import annotations

import httpx

from inferd.engines.base import url_host


def health_url(host: str, port: int, path: str) -> str:
    """URL for a probe; wildcard binds (0.0.0.0, ::) are probed on loopback."""
    return f"http://{url_host(host)}:{port}/{path.lstrip('/')}"


async def is_ready(host: str, port: int, path: str, timeout: float = 1.0) -> bool:
    """True when ``GET path`` answers 200 within ``timeout`` seconds."""
    try:
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
            response = await client.get(health_url(host, port, path))
    except Exception:  # noqa: BLE001 - any failure just means "not ready"
        return False
    return response.status_code == 200


def is_ready_sync(host: str, port: int, path: str, timeout: float = 1.0) -> bool:
    """Blocking twin of :func:`is_ready`, for scripts, tests and threads."""
    try:
        with httpx.Client(timeout=timeout, trust_env=False) as client:
            response = client.get(health_url(host, port, path))
    except Exception:  # noqa: BLE001 - any failure just means "not ready"
        return False
    return response.status_code == 200
