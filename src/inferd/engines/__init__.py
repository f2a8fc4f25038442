"""How a model server starts: launch specs per engine, readiness probes, model artifacts.

The runtime asks ``engine_for(name).launch_spec(artifact, host=..., port=...)`` for argv/env,
starts it wherever it runs replicas, and polls ``is_ready`` on ``health_path``. Artifacts come
from ``artifacts.resolve(source, ...)``. Nothing here starts processes or knows about the store.
"""

from inferd.engines.artifacts import GatedModelError, HubError, ModelNotFound, resolve
from inferd.engines.base import (
    Engine,
    EngineUnavailable,
    LaunchSpec,
    ModelArtifact,
    engine_for,
)
from inferd.engines.llamacpp import LlamaCppEngine, find_llama_server
from inferd.engines.probe import is_ready, is_ready_sync
from inferd.engines.vllm import VllmEngine

__all__ = [
    "Engine",
    "EngineUnavailable",
    "GatedModelError",
    "HubError",
    "LaunchSpec",
    "LlamaCppEngine",
    "ModelArtifact",
    "ModelNotFound",
    "VllmEngine",
    "engine_for",
    "find_llama_server",
    "is_ready",
    "is_ready_sync",
    "resolve",
]
