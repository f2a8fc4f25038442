"""Request bodies from a spec file or from flags: pure functions, no I/O.

Values the user gives are sent as given, so that the API (not the CLI) judges them and its
422 names the field; only what was left out is filled in, from ``/sizes`` and
``/gpu-model-config``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

import yaml

PLACEHOLDER_VPC = "00000000-0000-4000-8000-000000000000"
"""inferd records a VPC but does not manage VPCs; a spec needs one, so flags default to this."""


class SpecError(ValueError):
    """A spec file or a combination of flags that cannot make a request body."""


@dataclass(frozen=True)
class SpecFlags:
    """The flags for the common case: one model on one kind of accelerator."""

    name: str | None = None
    model: str | None = None
    accelerator: str | None = None
    scale: int | None = None
    region: str | None = None
    public: bool | None = None
    vpc: str | None = None

    def touches_deployment(self) -> bool:
        return any(v is not None for v in (self.model, self.accelerator, self.scale))

    def any_given(self) -> bool:
        return any(v is not None for v in vars(self).values())


class _Loader(yaml.SafeLoader):
    """YAML whose values are all JSON values: a date is kept as the text written."""


def _as_written(loader: _Loader, node: yaml.Node) -> str:
    return str(loader.construct_scalar(node))  # type: ignore[arg-type]  # a timestamp is a scalar


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _as_written)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error as one line: where (line, column) and what."""
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
    if mark is None or not problem:
        return " ".join(str(exc).split())
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def parse_document(text: str, source: str = "spec") -> dict[str, Any]:
    """JSON, else YAML, into a mapping (JSON first: YAML 1.1 reads some JSON differently, e.g. tabs)."""
    try:
        document = json.loads(text)
    except ValueError:
        try:
            document = yaml.load(text, Loader=_Loader)  # a SafeLoader: plain data only
        except yaml.YAMLError as exc:
            raise SpecError(f"{source} is neither JSON nor YAML: {yaml_problem(exc)}") from exc
    if not isinstance(document, dict):
        raise SpecError(f"{source} must hold a mapping: the request body {{\"spec\": …}} or the spec itself")
    return document


def as_body(document: dict[str, Any]) -> dict[str, Any]:
    """A file may hold the whole request body (``spec`` and maybe ``access_tokens``) or just a spec."""
    if "spec" in document or "access_tokens" in document:
        return copy.deepcopy(document)
    return {"spec": copy.deepcopy(document)}


def first_model(models: list[dict[str, Any]], sizes: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first model that some available size can run (what ``quickstart`` deploys)."""
    offered = {s.get("gpu_slug") for s in sizes}
    return next((m for m in models if offered & set(m.get("gpu_slugs") or [])), models[0] if models else None)


def pick_size(model: dict[str, Any] | None, sizes: list[dict[str, Any]], accelerator: str | None,
              region: str | None) -> dict[str, Any] | None:
    """The first size that matches what was given and that the model runs on."""
    runs_on = set(model.get("gpu_slugs") or []) if model else None
    for size in sizes:
        if accelerator is not None and size.get("gpu_slug") != accelerator:
            continue
        if region is not None and size.get("region") != region:
            continue
        if runs_on is not None and accelerator is None and size.get("gpu_slug") not in runs_on:
            continue
        return size
    return None


def create_body(flags: SpecFlags, models: list[dict[str, Any]], sizes_doc: dict[str, Any]) -> dict[str, Any]:
    """A create request body for one model deployment; defaults from the catalog the API reports."""
    if not flags.name:
        raise SpecError("--name is required (or give the whole spec with --spec FILE)")
    sizes = list(sizes_doc.get("sizes") or [])
    fitting = [s for s in sizes if flags.accelerator in (None, s.get("gpu_slug")) and flags.region in (None, s.get("region"))]
    model = next((m for m in models if m.get("model_slug") == flags.model), None) if flags.model else first_model(models, fitting)
    model_slug = flags.model or (model or {}).get("model_slug")
    if not model_slug:
        raise SpecError("this installation offers no model; give --model")
    size = pick_size(model, sizes, flags.accelerator, flags.region)
    accelerator = flags.accelerator or (size or {}).get("gpu_slug") or next(iter((model or {}).get("gpu_slugs") or []), None)
    if not accelerator:
        raise SpecError(f"no accelerator is available for {model_slug}; give --accelerator")
    enabled = list(sizes_doc.get("enabled_regions") or [])
    region = flags.region or (size or {}).get("region") or (enabled[0] if enabled else None)
    if not region:
        raise SpecError("no region is enabled; give --region")
    return {"spec": {
        "version": 1,
        "name": flags.name,
        "region": region,
        "vpc": {"uuid": flags.vpc or PLACEHOLDER_VPC},
        "enable_public_endpoint": True if flags.public is None else flags.public,
        "model_deployments": [{
            "model_slug": model_slug,
            "model_provider": "hugging_face",
            "workload_config": {},
            "accelerators": [{"scale": 1 if flags.scale is None else flags.scale, "type": "prefill_decode",
                              "accelerator_slug": accelerator}],
        }],
    }}


def desired_spec(instance: dict[str, Any]) -> dict[str, Any]:
    """The spec being rolled out if there is one, else the live one: what a change applies to."""
    return dict(instance.get("pending_deployment_spec") or instance.get("spec") or {})


def desired_scale(spec: dict[str, Any]) -> int:
    """Replicas a spec asks for: the sum of its accelerators' ``scale``."""
    return sum(int(a.get("scale") or 0) for d in spec.get("model_deployments") or [] for a in d.get("accelerators") or [])


def patch_body(flags: SpecFlags, instance: dict[str, Any] | None) -> dict[str, Any]:
    """A PATCH body that changes only what the flags give; deployments are re-sent whole, so
    ``instance`` (the current one) is needed when ``flags.touches_deployment()``."""
    if flags.region is not None:
        raise SpecError("--region cannot change: an instance stays in its region")
    spec: dict[str, Any] = {}
    if flags.name is not None:
        spec["name"] = flags.name
    if flags.public is not None:
        spec["enable_public_endpoint"] = flags.public
    if flags.touches_deployment():
        if instance is None:
            raise ValueError("patch_body needs the current instance to change its deployments")
        spec["model_deployments"] = _changed_deployments(flags, desired_spec(instance))
    if not spec:
        raise SpecError("nothing to change: give --spec FILE or a flag such as --scale, --name or --model")
    return {"spec": spec}


def _changed_deployments(flags: SpecFlags, current: dict[str, Any]) -> list[dict[str, Any]]:
    deployments = copy.deepcopy(list(current.get("model_deployments") or []))
    if len(deployments) != 1:
        raise SpecError(f"the instance has {len(deployments)} model deployments; change them with --spec FILE")
    deployment = deployments[0]
    accelerators = list(deployment.get("accelerators") or [])
    if len(accelerators) != 1 and (flags.accelerator is not None or flags.scale is not None):
        raise SpecError(f"the deployment has {len(accelerators)} accelerator entries; change them with --spec FILE")
    for accelerator in accelerators:
        accelerator.pop("status", None)
        if flags.accelerator is not None:
            accelerator["accelerator_slug"] = flags.accelerator
        if flags.scale is not None:
            accelerator["scale"] = flags.scale
    if flags.model is not None and flags.model != deployment.get("model_slug"):
        deployment["model_slug"] = flags.model
        deployment.pop("model_id", None)  # another model is a new deployment, not this one changed
    return [{k: v for k, v in deployment.items() if k in _DEPLOYMENT_FIELDS} | {"accelerators": accelerators}]


_DEPLOYMENT_FIELDS = ("model_id", "model_slug", "model_provider", "workload_config", "accelerators")


def is_gated(models: list[dict[str, Any]], body: dict[str, Any]) -> bool:
    """Whether any model the body deploys needs a Hugging Face token."""
    gated = {m.get("model_slug") for m in models if m.get("is_gated_model")}
    spec = body.get("spec")
    deployments = spec.get("model_deployments") if isinstance(spec, dict) else None
    return isinstance(deployments, list) and any(isinstance(d, dict) and d.get("model_slug") in gated for d in deployments)
