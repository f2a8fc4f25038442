"""What every engine has in common: the model it serves and the process it asks to be started.

An engine never starts anything itself. It turns *what to serve* (a ``ModelArtifact``) and
*where* (host, port, slots, accelerators) into a ``LaunchSpec``: argv, extra environment and a
health URL. The runtime decides how to run that (a local process, a Kubernetes pod, a Ray
actor), so engines stay pure and cheap to unit-test.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from inferd.domain.workload import DEFAULT_OPTIONS, EngineOptions

ENV_CACHE = "INFERD_ENGINE_CACHE"


def engine_cache_dir() -> Path:
    """Root of the engine cache; shared with the install scripts, so keep them in sync."""
    configured = os.environ.get(ENV_CACHE)
    return Path(configured) if configured else Path.home() / ".cache" / "inferd"


class EngineUnavailable(RuntimeError):
    """The engine's executable is not installed here; the message says how to get it."""


@dataclass(frozen=True)
class ModelArtifact:
    """Model weights available to an engine.

    ``path`` is a ``.gguf`` file or a directory holding ``config.json`` + ``*.safetensors``.
    ``repo_id``/``revision`` are set when the artifact came from a Hugging Face repo, so an
    engine that can download by itself (vLLM on a GPU node) may be handed the repo instead of
    a local copy.
    """

    slug: str
    path: Path
    format: str
    repo_id: str | None = field(default=None, compare=False)
    revision: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.format not in ("gguf", "safetensors"):
            raise ValueError(f"unknown model format {self.format!r} (expected 'gguf' or 'safetensors')")


@dataclass(frozen=True)
class LaunchSpec:
    """Everything a runtime needs to start one replica and know when it serves."""

    argv: list[str]
    env: dict[str, str]
    host: str
    port: int
    health_path: str
    served_model_name: str

    @property
    def base_url(self) -> str:
        """The replica's OpenAI-compatible root (``…/v1`` is appended by callers)."""
        return f"http://{url_host(self.host)}:{self.port}"

    def __repr__(self) -> str:
        # env may carry an HF token: keep it out of logs and tracebacks.
        return (
            f"LaunchSpec(argv={self.argv!r}, env=<{len(self.env)} vars: {sorted(self.env)}>, "
            f"host={self.host!r}, port={self.port}, health_path={self.health_path!r}, "
            f"served_model_name={self.served_model_name!r})"
        )

    __str__ = __repr__


def url_host(host: str) -> str:
    """Bracket IPv6 literals and map wildcard binds to loopback, so the URL is connectable."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


@runtime_checkable
class Engine(Protocol):
    """Builds the launch spec of one model-server replica."""

    name: str

    def launch_spec(
        self,
        artifact: ModelArtifact,
        *,
        host: str,
        port: int,
        slots: int = 4,
        threads: int | None = None,
        gpu_count: int = 0,
        hf_token: str | None = None,
        extra_args: Sequence[str] = (),
        options: EngineOptions = DEFAULT_OPTIONS,
    ) -> LaunchSpec: ...


def check_common(*, port: int, slots: int, threads: int | None, gpu_count: int) -> None:
    """Reject impossible numbers early, where the error names the argument, not in a child process."""
    if not 0 < port < 65536:
        raise ValueError(f"port must be in 1..65535, got {port}")
    if slots < 1:
        raise ValueError(f"slots must be >= 1, got {slots}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if gpu_count < 0:
        raise ValueError(f"gpu_count must be >= 0, got {gpu_count}")


def engine_for(name: str, **options: Any) -> Engine:
    """The engine registered under ``name``; options go to its constructor.

    Imported lazily so that choosing vLLM never requires a llama-server build and vice versa.
    """
    key = name.strip().lower()
    if key in ("llama.cpp", "llamacpp", "llama-cpp"):
        from inferd.engines.llamacpp import LlamaCppEngine

        return LlamaCppEngine(**options)
    if key == "vllm":
        from inferd.engines.vllm import VllmEngine

        return VllmEngine(**options)
    raise ValueError(f"unknown engine {name!r}; known engines: 'llama.cpp', 'vllm'")
