"""The console's parts that need no browser: the page served without a build, and the console's
own JavaScript unit tests (rates from counters, TTFT quantiles, the SSE parser, polling), run
with node's test runner."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.server import REPO


def test_without_a_build_the_console_says_how_to_make_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from inferd.api import console

    monkeypatch.setattr(console, "ASSETS_DIR", tmp_path / "not-built")
    app = FastAPI()
    app.include_router(console.router)
    with TestClient(app) as http:
        answer = http.get("/console/instances/6b5c619c-359c-44ca-87e2-47e98170c01d")
        assert answer.status_code == 503 and "make console" in answer.text
        assert answer.headers["content-security-policy"] == console.CONTENT_SECURITY_POLICY
        assert http.get("/console/assets/main-AAAAAAAA.js").status_code == 404


def test_the_console_arithmetic_and_stream_parser() -> None:
    """console/test/*.test.js: rates from counters, TTFT quantiles, the SSE parser (node --test)."""
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):
            pytest.fail("node is not installed")
        pytest.skip("node is not installed")
    result = subprocess.run([node, "--test", "test/"], cwd=REPO / "console", capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
