"""The deployment spec: its shape, its normalization and its rules against the catalog.

Field names are DigitalOcean's, since they are also the domain's vocabulary; HTTP concerns
(bodies, status codes) stay in the API layer.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from inferd.domain.catalog import Catalog
from inferd.domain.errors import InvalidInput
from inferd.domain.workload import parse_workload_config

NAME_PATTERN = r"^[a-zA-Z0-9_-]+$"
ROLE_PREFILL_DECODE: Literal["prefill_decode"] = "prefill_decode"
MAX_SCALE = 1000
MAX_MODEL_DEPLOYMENTS = 16
MAX_WORKLOAD_CONFIG_BYTES = 16 * 1024
"""``workload_config`` is stored with every spec version and read by controller and gateway:
a bound keeps one tenant's specs from slowing everyone's route refresh."""
MAX_WORKLOAD_CONFIG_DEPTH = 8


def _depth(value: Any, level: int = 1) -> int:
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level)
    return level - 1


def _whole_number(value: Any) -> Any:
    """JSON has one number type: accept ``2.0`` where an integer is due, never ``"2"`` or true."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


WholeNumber = Annotated[StrictInt, BeforeValidator(_whole_number)]


def _uuid_string(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError as exc:
        raise ValueError("must be a UUID") from exc


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AcceleratorConfig(_Strict):
    accelerator_slug: StrictStr = Field(min_length=1, max_length=64)
    scale: WholeNumber = Field(ge=1, le=MAX_SCALE)
    type: Literal["prefill_decode"]
    status: StrictStr | None = Field(default=None, exclude=True)
    """Read-only in the reference; accepted on input and ignored."""


class ModelDeployment(_Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"required": ["accelerators"], "properties": {"accelerators": {"minItems": 1}}},
                {"required": ["accelerator_slug"], "properties": {"accelerator_slug": {"type": "string"}}},
            ]
        },
    )
    model_id: StrictStr | None = Field(
        default=None,
        json_schema_extra={
            "anyOf": [
                {"type": "string", "format": "uuid"},
                {"type": "string", "maxLength": 0},
                {"type": "null"},
            ]
        },
    )
    """Empty for a new deployment; on update, names the existing deployment it replaces."""
    model_slug: StrictStr = Field(min_length=1, max_length=255)
    model_provider: Literal["hugging_face"] = "hugging_face"
    workload_config: dict[str, Any] = Field(default_factory=dict)
    accelerators: list[AcceleratorConfig] = Field(default_factory=list, max_length=8)
    # Shorthand that the reference's PATCH example uses: one accelerator kind and a count.
    accelerator_slug: StrictStr | None = Field(default=None, exclude=True, min_length=1, max_length=64)
    node_count: WholeNumber | None = Field(default=None, exclude=True, ge=1, le=MAX_SCALE)

    @field_validator("model_id")
    @classmethod
    def _model_id(cls, value: str | None) -> str | None:
        return _uuid_string(value) if value else None

    @field_validator("workload_config")
    @classmethod
    def _bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        depth = _depth(value)
        if depth > MAX_WORKLOAD_CONFIG_DEPTH:
            raise ValueError(f"nested {depth} levels deep; at most {MAX_WORKLOAD_CONFIG_DEPTH} allowed")
        size = len(json.dumps(value, separators=(",", ":")).encode())
        if size > MAX_WORKLOAD_CONFIG_BYTES:
            raise ValueError(f"{size} bytes as JSON; at most {MAX_WORKLOAD_CONFIG_BYTES} allowed")
        return value

    @model_validator(mode="after")
    def _expand_shorthand(self) -> ModelDeployment:
        if self.accelerator_slug is not None:
            if self.accelerators:
                raise ValueError("give either accelerators or accelerator_slug/node_count, not both")
            self.accelerators = [
                AcceleratorConfig(
                    accelerator_slug=self.accelerator_slug,
                    scale=self.node_count or 1,
                    type=ROLE_PREFILL_DECODE,
                )
            ]
            self.accelerator_slug = None
            self.node_count = None
        elif self.node_count is not None:
            raise ValueError("node_count needs accelerator_slug")
        if not self.accelerators:
            raise ValueError("at least one accelerator is required")
        return self


class Vpc(_Strict):
    uuid: StrictStr = Field(json_schema_extra={"format": "uuid"})

    @field_validator("uuid")
    @classmethod
    def _uuid(cls, value: str) -> str:
        return _uuid_string(value)


class DeploymentSpec(_Strict):
    """A complete spec, as created or as stored (then ``model_id`` values are set)."""

    version: WholeNumber = Field(ge=1)
    name: StrictStr = Field(min_length=1, max_length=255, pattern=NAME_PATTERN)
    region: StrictStr = Field(min_length=1, max_length=32)
    vpc: Vpc
    enable_public_endpoint: StrictBool
    model_deployments: list[ModelDeployment] = Field(min_length=1, max_length=MAX_MODEL_DEPLOYMENTS)


class SpecPatch(_Strict):
    """A partial spec for PATCH: fields present replace the current ones."""

    version: WholeNumber | None = Field(default=None, ge=1)
    name: StrictStr | None = Field(default=None, min_length=1, max_length=255, pattern=NAME_PATTERN)
    region: StrictStr | None = Field(default=None, min_length=1, max_length=32)
    vpc: Vpc | None = None
    enable_public_endpoint: StrictBool | None = None
    model_deployments: list[ModelDeployment] | None = Field(
        default=None, min_length=1, max_length=MAX_MODEL_DEPLOYMENTS
    )


def _deployments_field(index: int, rest: str = "") -> str:
    return f"spec.model_deployments[{index}]" + (f".{rest}" if rest else "")


def prepare_new_spec(spec: DeploymentSpec) -> DeploymentSpec:
    """Normalize a spec for creation: version 1 and a fresh ``model_id`` per deployment."""
    for index, deployment in enumerate(spec.model_deployments):
        if deployment.model_id:
            raise InvalidInput(
                _deployments_field(index, "model_id"),
                "must be empty when creating; model ids are assigned by the server",
            )
    return _with_ids(spec.model_copy(update={"version": 1}), existing=set())


def apply_patch(current: DeploymentSpec, patch: SpecPatch) -> DeploymentSpec:
    """The next spec version: ``current`` with the patch's fields, version + 1.

    Region and VPC are fixed for an instance's life; a patch may repeat them but not change
    them. Deployments that carry a ``model_id`` must name one of the current deployments.
    """
    # An explicit null means "leave as is", like an absent field.
    changes = patch.model_dump(exclude_unset=True, exclude_none=True, exclude={"version"})
    if patch.region is not None and patch.region != current.region:
        raise InvalidInput("spec.region", f"cannot change region of an instance (is {current.region})")
    if patch.vpc is not None and patch.vpc.uuid != current.vpc.uuid:
        raise InvalidInput("spec.vpc.uuid", "cannot change the VPC of an instance")
    merged = current.model_dump() | changes
    if patch.model_deployments is not None:
        merged["model_deployments"] = patch.model_deployments
    merged["version"] = current.version + 1
    spec = DeploymentSpec.model_validate(merged)
    existing = {d.model_id for d in current.model_deployments if d.model_id}
    for index, deployment in enumerate(spec.model_deployments):
        if deployment.model_id and deployment.model_id not in existing:
            raise InvalidInput(
                _deployments_field(index, "model_id"),
                f"{deployment.model_id} is not a model deployment of this instance",
            )
    return _with_ids(spec, existing)


def _with_ids(spec: DeploymentSpec, existing: set[str]) -> DeploymentSpec:
    seen: set[str] = set()
    for index, deployment in enumerate(spec.model_deployments):
        if deployment.model_id in seen:
            raise InvalidInput(_deployments_field(index, "model_id"), "appears twice")
        if not deployment.model_id:
            deployment.model_id = str(uuid.uuid4())
        seen.add(deployment.model_id)
    return spec


def check_against_catalog(spec: DeploymentSpec, catalog: Catalog, *, has_hf_token: bool) -> None:
    """Reject what this installation cannot run, naming the field; the first problem wins."""
    if spec.region not in catalog.region_slugs():
        enabled = ", ".join(catalog.enabled_regions()) or "none"
        raise InvalidInput("spec.region", f"unknown region {spec.region!r}; enabled regions: {enabled}")
    slugs = Counter(d.model_slug for d in spec.model_deployments)
    demand: Counter[str] = Counter()
    for index, deployment in enumerate(spec.model_deployments):
        model = catalog.model(deployment.model_slug)
        if model is None:
            known = ", ".join(m.slug for m in catalog.models) or "none"
            raise InvalidInput(
                _deployments_field(index, "model_slug"),
                f"unknown model {deployment.model_slug!r}; available: {known}",
            )
        if slugs[deployment.model_slug] > 1:
            raise InvalidInput(
                _deployments_field(index, "model_slug"),
                f"model {deployment.model_slug!r} is deployed twice in one instance",
            )
        if deployment.model_provider != model.provider:
            raise InvalidInput(
                _deployments_field(index, "model_provider"),
                f"model {model.slug!r} comes from {model.provider!r}",
            )
        if model.gated and not has_hf_token:
            raise InvalidInput(
                "access_tokens.hugging_face_token",
                f"model {model.slug!r} is gated: a Hugging Face token is required",
            )
        for acc_index, acc in enumerate(deployment.accelerators):
            field = _deployments_field(index, f"accelerators[{acc_index}].accelerator_slug")
            if acc.accelerator_slug not in catalog.accelerator_slugs():
                raise InvalidInput(field, f"unknown accelerator slug {acc.accelerator_slug!r}")
            if acc.accelerator_slug not in model.accelerator_slugs:
                allowed = ", ".join(model.accelerator_slugs)
                raise InvalidInput(
                    field, f"model {model.slug!r} cannot run on {acc.accelerator_slug!r}; supported: {allowed}"
                )
            if catalog.accelerator(acc.accelerator_slug, spec.region) is None:
                raise InvalidInput(field, f"{acc.accelerator_slug!r} is not offered in region {spec.region!r}")
            demand[acc.accelerator_slug] += acc.scale
            capacity = catalog.capacity(acc.accelerator_slug, spec.region)
            if demand[acc.accelerator_slug] > capacity:
                raise InvalidInput(
                    _deployments_field(index, f"accelerators[{acc_index}].scale"),
                    f"needs {demand[acc.accelerator_slug]} units of {acc.accelerator_slug!r} "
                    f"but region {spec.region!r} has {capacity}",
                )
        engines = {kind.engine for acc in deployment.accelerators if (kind := catalog.accelerator(acc.accelerator_slug, spec.region))}
        parse_workload_config(
            deployment.workload_config, engines=engines, field=_deployments_field(index, "workload_config"),
            max_context_length=model.max_context_length,
        )
