"""llama.cpp's ``llama-server``: the default CPU engine.

Chosen over ``llama_cpp.server`` (llama-cpp-python) because it batches concurrent requests
across ``-np`` slots (measured 116 vs 44 tok/s with 4 concurrent clients on 2 cores), is ready
in well under a second, and exposes ``/health`` and Prometheus ``/metrics``. The binary is
built by ``scripts/build-llama-server.sh`` and cached outside the repository.
"""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from inferd.domain.workload import DEFAULT_OPTIONS, EngineOptions
from inferd.engines.base import (
    EngineUnavailable,
    LaunchSpec,
    ModelArtifact,
    check_common,
    engine_cache_dir,
)

LLAMA_SERVER_VERSION = "0.3.36"
"""The llama-cpp-python release whose vendored llama.cpp the build script compiles."""

CTX_PER_SLOT = 2048
"""Tokens of context each slot gets. llama-server splits ``-c`` evenly across ``-np`` slots
when the KV cache is not unified (the default once ``-np`` is explicit), so ``-c`` is
``slots * CTX_PER_SLOT``."""

BUILD_SCRIPT = "scripts/build-llama-server.sh"
ENV_BINARY = "INFERD_LLAMA_SERVER"


def cached_binary_path() -> Path:
    """Where ``scripts/build-llama-server.sh`` installs the binary."""
    return engine_cache_dir() / "llama-server" / LLAMA_SERVER_VERSION / "llama-server"


def find_llama_server() -> Path:
    """Locate llama-server: ``$INFERD_LLAMA_SERVER``, else the build script's cache.

    An explicit env var that points nowhere is an error rather than a silent fallback, since
    the operator clearly meant a specific build.
    """
    configured = os.environ.get(ENV_BINARY)
    if configured:
        path = Path(configured).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise EngineUnavailable(
                f"{ENV_BINARY}={configured} is not an executable file; unset it to use the "
                f"cached build from {BUILD_SCRIPT}"
            )
        return path.resolve()
    cached = cached_binary_path()
    if cached.is_file() and os.access(cached, os.X_OK):
        return cached
    raise EngineUnavailable(
        f"llama-server not found at {cached}; build it with `{BUILD_SCRIPT}` "
        f"(about 6 minutes on 2 cores, cached afterwards) or set {ENV_BINARY} to your own build"
    )


@functools.lru_cache(maxsize=16)
def _help_text(binary: str, mtime_ns: int) -> str:
    """``llama-server --help`` output, cached per binary file version (mtime in the key)."""
    del mtime_ns  # only part of the cache key
    try:
        done = subprocess.run(
            [binary, "--help"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout + done.stderr


def supports_flag(binary: Path, flag: str) -> bool:
    """Whether this llama-server build accepts ``flag``.

    llama-server exits on unknown flags, and options come and go between releases; asking the
    binary keeps ``INFERD_LLAMA_SERVER`` pointing at an older or newer build working.
    """
    try:
        mtime = binary.stat().st_mtime_ns
    except OSError:
        return False
    text = _help_text(str(binary), mtime)
    return any(token.strip(",") == flag for token in text.split())


class LlamaCppEngine:
    """Launch specs for ``llama-server`` serving one GGUF file."""

    name = "llama.cpp"

    def __init__(self, binary: Path | None = None) -> None:
        self.binary = Path(binary) if binary is not None else find_llama_server()

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
    ) -> LaunchSpec:
        """argv for one replica; ``hf_token`` is unused because the file is already local.

        A deployment's options override the catalog's ``slots`` (``max_concurrent_sequences``)
        and the context per slot (``context_length``); ``extra_args`` (the catalog's
        ``engine_args``) come before the options' flags, so the tenant's value wins.
        """
        del hf_token
        slots = options.max_concurrent_sequences or slots
        check_common(port=port, slots=slots, threads=threads, gpu_count=gpu_count)
        if artifact.format != "gguf":
            raise ValueError(
                f"llama.cpp serves GGUF files only; {artifact.slug!r} is {artifact.format} "
                "(use the vllm engine, or convert the model to GGUF)"
            )
        argv = [
            str(self.binary),
            "-m", str(artifact.path),
            "--host", host,
            "--port", str(port),
            "-np", str(slots),
            "-c", str(slots * (options.context_length or CTX_PER_SLOT)),
            "--alias", artifact.slug,
            "--metrics",
        ]
        if supports_flag(self.binary, "--no-webui"):
            argv.append("--no-webui")
        if threads is not None:
            argv += ["-t", str(threads)]
        if gpu_count > 0:
            # Harmless on a CPU build (it warns); offloads everything on a GPU build.
            argv += ["-ngl", "999"]
        argv += self._role_args(options)
        argv += list(extra_args)
        if options.embeds:
            # An input is embedded in one micro-batch (llama-server lowers -b to -ub otherwise and
            # refuses longer inputs): let it be as long as a slot's context, or the tenant's bound.
            batch = str(options.max_batched_tokens or options.context_length or CTX_PER_SLOT)
            argv += ["-b", batch, "-ub", batch]
        elif options.max_batched_tokens is not None:
            argv += ["-b", str(options.max_batched_tokens)]
        return LaunchSpec(
            argv=argv,
            env={},
            host=host,
            port=port,
            health_path="/health",
            served_model_name=artifact.slug,
        )

    def _role_args(self, options: EngineOptions) -> list[str]:
        """Chat or embeddings: what the server answers, before the operator's ``engine_args``
        (so an operator's ``--no-jinja`` or ``--pooling`` still wins).

        A chat model always gets ``--jinja`` where the build knows it, whatever the build's default
        (the vendored 0.3.36 build enables it; older ones did not): the model's own template then
        renders ``tools`` and llama-server constrains and parses the calls, so a request's tools
        never depend on which build an operator points ``INFERD_LLAMA_SERVER`` at. The catalog's
        ``chat_template`` replaces the GGUF's own (SmolLM2's cannot render tools: llama-server would
        drop them silently).
        An embedder gets ``--embeddings`` (llama-server then serves ``/v1/embeddings``) and the
        catalog's pooling, if any; a chat template has nothing to do there.
        """
        if options.embeds:
            return ["--embeddings"] + (["--pooling", options.pooling] if options.pooling else [])
        if not supports_flag(self.binary, "--jinja"):
            return []  # such a build would refuse a custom template at start: serve the model's own
        # After --jinja: before it, llama-server accepts only the templates it knows by name.
        return ["--jinja"] + (["--chat-template", options.chat_template] if options.chat_template else [])
