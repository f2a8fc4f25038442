"""A deployment's ``workload_config``: the documented keys a tenant may set, and what they mean.

DigitalOcean leaves ``workload_config`` open ("workload-specific configuration"). inferd gives it
a small allow-list of engine-neutral keys, checked at create and update so that a typo or an
out-of-range value is a 422 naming the key, never a model server that fails to start minutes
later. The engines translate the normalized ``EngineOptions`` into their own flags
(``engines.vllm``, ``engines.llamacpp``); the operator's own flags per accelerator kind stay in
the catalog (``engine_args``), out of tenants' reach.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from inferd.domain.errors import InvalidInput

MAX_CONTEXT_LENGTH = 1_048_576
"""Upper bound of ``context_length`` when the catalog gives none for the model."""


@dataclass(frozen=True)
class EngineOptions:
    """What a deployment asks of its model server (None: the engine's or the catalog's default)."""

    context_length: int | None = None
    """Tokens of context per sequence (vLLM ``--max-model-len``; llama.cpp: per slot)."""
    max_concurrent_sequences: int | None = None
    """Sequences decoded together (vLLM ``--max-num-seqs``; llama.cpp ``-np`` slots)."""
    max_batched_tokens: int | None = None
    """Tokens processed in one engine step (vLLM ``--max-num-batched-tokens``; llama.cpp ``-b``)."""
    dtype: str | None = None
    """Weights' and activations' type (vLLM ``--dtype``; a GGUF file fixes its own)."""
    enable_prefix_caching: bool | None = None
    """Reuse the KV cache of shared prompt prefixes (vLLM)."""
    tool_call_parser: str | None = None
    """From the catalog's model, not the tenant: enables tool calling (vLLM's parser name)."""
    chat_template: str | None = None
    """From the catalog's model: a Jinja chat template replacing the model's own (llama.cpp)."""
    embeds: bool = False
    """From the catalog's model: start the server as an embedder (``/v1/embeddings``, no chat)."""
    pooling: str | None = None
    """From the catalog's model: an embedder's pooling (``mean``, ``cls``, ``last``); None: the model's."""


DEFAULT_OPTIONS = EngineOptions()
"""Nothing asked: every engine default applies."""


@dataclass(frozen=True)
class WorkloadKey:
    """One allowed key: its type, range and the engines that honour it."""

    name: str
    kind: type
    engines: frozenset[str]
    low: int | None = None
    high: int | None = None
    choices: tuple[str, ...] = ()
    help: str = ""

    def describe(self, high: int | None = None) -> str:
        if self.kind is bool:
            return "must be true or false"
        if self.choices:
            return "must be one of " + ", ".join(self.choices)
        return f"must be an integer from {self.low} to {high if high is not None else self.high}"


BOTH = frozenset({"llama.cpp", "vllm"})
KEYS: dict[str, WorkloadKey] = {
    key.name: key
    for key in (
        WorkloadKey("context_length", int, BOTH, 128, MAX_CONTEXT_LENGTH,
                    help="tokens of context per request (prompt + completion)"),
        WorkloadKey("max_concurrent_sequences", int, BOTH, 1, 256,
                    help="requests one replica decodes at the same time"),
        WorkloadKey("max_batched_tokens", int, BOTH, 16, 1_048_576,
                    help="tokens one replica processes in one step (prefill chunk size)"),
        WorkloadKey("dtype", str, frozenset({"vllm"}), choices=("auto", "bfloat16", "float16", "float32"),
                    help="type of weights and activations"),
        WorkloadKey("enable_prefix_caching", bool, frozenset({"vllm"}),
                    help="reuse the KV cache of prompts that share a prefix"),
    )
}


def _value(key: WorkloadKey, raw: Any, field: str, high: int | None) -> Any:
    if key.kind is bool:
        if not isinstance(raw, bool):
            raise InvalidInput(field, key.describe())
        return raw
    if key.kind is int:
        if isinstance(raw, float) and raw.is_integer():
            raw = int(raw)
        low, limit = key.low or 0, high if high is not None else key.high
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < low or (limit is not None and raw > limit):
            raise InvalidInput(field, key.describe(limit))
        return raw
    if not isinstance(raw, str) or raw not in key.choices:
        raise InvalidInput(field, key.describe())
    return raw


def parse_workload_config(
    config: Mapping[str, Any],
    *,
    engines: Iterable[str],
    field: str = "workload_config",
    max_context_length: int | None = None,
) -> EngineOptions:
    """The options ``config`` asks for, on accelerators running ``engines``; ``InvalidInput``
    names ``field.key`` for an unknown key, a wrong type, a value out of range, or a key the
    engine cannot honour."""
    engine_names = sorted(set(engines))
    values: dict[str, Any] = {}
    for name, raw in config.items():
        key = KEYS.get(name)
        where = f"{field}.{name}"
        if key is None:
            raise InvalidInput(where, f"unknown key; allowed keys: {', '.join(sorted(KEYS))}")
        unsupported = [engine for engine in engine_names if engine not in key.engines]
        if unsupported:
            raise InvalidInput(where, f"not supported by the {unsupported[0]} engine of this deployment's accelerator")
        high = max_context_length if name == "context_length" else None
        values[name] = _value(key, raw, where, high)
    return EngineOptions(**values)


def options_of(
    config: Mapping[str, Any],
    *,
    tool_call_parser: str | None = None,
    chat_template: str | None = None,
    embeds: bool = False,
    pooling: str | None = None,
) -> EngineOptions:
    """Options of a stored, already validated ``workload_config``. What no longer passes (a key
    withdrawn since the spec was written) is left out rather than keeping the replica from starting."""
    values: dict[str, Any] = {}
    for name, raw in config.items():
        key = KEYS.get(name)
        if key is not None:
            with contextlib.suppress(InvalidInput):
                values[name] = _value(key, raw, name, None)
    return EngineOptions(
        **values, tool_call_parser=tool_call_parser, chat_template=chat_template, embeds=embeds, pooling=pooling
    )
