"""Skip engine tests on a developer machine without the llama-server build; never in CI."""

from __future__ import annotations

import os

import pytest


def llama_server_available() -> bool:
    from inferd.engines.base import EngineUnavailable
    from inferd.engines.llamacpp import find_llama_server

    try:
        find_llama_server()
    except EngineUnavailable:
        return False
    return True


requires_llama_server = pytest.mark.skipif(
    not llama_server_available() and not os.environ.get("CI"),
    reason="llama-server not built: run scripts/build-llama-server.sh (make test does)",
)
