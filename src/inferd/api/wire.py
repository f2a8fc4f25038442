"""Request and response bodies with DigitalOcean's exact field names.

Request specs reuse the domain's spec models (same vocabulary); responses are declared here
so that the OpenAPI document describes exactly what goes over the wire.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from inferd.domain.spec import NAME_PATTERN, DeploymentSpec, SpecPatch


class _Forbid(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- requests -------------------------------------------------------------------------------
class CreateRequest(_Forbid):
    spec: DeploymentSpec
    access_tokens: dict[str, StrictStr] | None = Field(
        default=None,
        max_length=16,
        description="Provider tokens, e.g. hugging_face_token for gated models. Stored encrypted, never returned.",
    )


class UpdateAccessTokens(_Forbid):
    hugging_face_token: StrictStr = Field(min_length=1, max_length=4096)


class UpdateRequest(_Forbid):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})
    spec: SpecPatch | None = None
    access_tokens: UpdateAccessTokens | None = None


class TokenCreateRequest(_Forbid):
    name: StrictStr = Field(min_length=1, max_length=255, pattern=NAME_PATTERN)


# -- responses ------------------------------------------------------------------------------
class ErrorBody(BaseModel):
    id: str
    message: str
    request_id: str | None = None


class VpcOut(BaseModel):
    uuid: str


class AcceleratorConfigOut(BaseModel):
    accelerator_slug: str
    scale: int
    type: str
    status: str | None = None


class ModelDeploymentOut(BaseModel):
    model_id: str
    model_slug: str
    model_provider: str
    workload_config: dict[str, Any]
    accelerators: list[AcceleratorConfigOut]


class SpecOut(BaseModel):
    version: int
    name: str
    region: str
    vpc: VpcOut
    enable_public_endpoint: bool
    model_deployments: list[ModelDeploymentOut]


class PendingDeploymentSpecOut(BaseModel):
    id: str
    version: int
    name: str
    vpc: VpcOut
    enable_public_endpoint: bool
    model_deployments: list[ModelDeploymentOut]
    status: str
    created_at: str
    updated_at: str


class EndpointsOut(BaseModel):
    public_endpoint_fqdn: str | None = None
    private_endpoint_fqdn: str


class DedicatedInferenceOut(BaseModel):
    id: str
    region: str
    status: str
    status_reason: str | None = Field(
        default=None, description="Why the status is error, or what provisioning is doing (inferd extension)."
    )
    vpc_uuid: str
    spec: SpecOut
    pending_deployment_spec: PendingDeploymentSpecOut | None = None
    endpoints: EndpointsOut
    created_at: str
    updated_at: str


class TokenOut(BaseModel):
    id: str
    name: str
    created_at: str
    value: str | None = Field(default=None, description="Only in the create response.")


class AcceleratorOut(BaseModel):
    id: str
    name: str
    role: str
    slug: str
    status: str
    created_at: str


class Pages(BaseModel):
    first: str | None = None
    prev: str | None = None
    next: str | None = None
    last: str | None = None


class Links(BaseModel):
    pages: Pages


class Meta(BaseModel):
    total: int


class DedicatedInferenceEnvelope(BaseModel):
    dedicated_inference: DedicatedInferenceOut


class CreatedEnvelope(BaseModel):
    dedicated_inference: DedicatedInferenceOut
    token: TokenOut


class DedicatedInferenceList(BaseModel):
    dedicated_inferences: list[DedicatedInferenceOut]
    links: Links
    meta: Meta


class AcceleratorList(BaseModel):
    accelerators: list[AcceleratorOut]
    links: Links
    meta: Meta


class TokenEnvelope(BaseModel):
    token: TokenOut


class TokenList(BaseModel):
    tokens: list[TokenOut]
    links: Links
    meta: Meta


class SizeOut(BaseModel):
    gpu_slug: str
    region: str
    price_per_hour: str
    currency: str


class SizesOut(BaseModel):
    enabled_regions: list[str]
    sizes: list[SizeOut]


class GpuModelConfigOut(BaseModel):
    model_slug: str
    model_name: str
    gpu_slugs: list[str]
    is_gated_model: bool


class GpuModelConfigsOut(BaseModel):
    gpu_model_configs: list[GpuModelConfigOut]


class CertificateOut(BaseModel):
    cert: str = Field(description="The instance CA certificate, PEM, base64-encoded.")
