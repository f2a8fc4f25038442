"""The OpenAPI document served at ``/v2/openapi.json``.

FastAPI derives it from the routes; this adds bearer auth with each operation's scope and
drops FastAPI's own validation-error schema, since every error here is ``{id, message}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from inferd.domain.catalog import Catalog

_INSTANCE_ID = {"dedicated_inference_id": "$response.body#/dedicated_inference/id"}
# Operations reachable with the id that create returns (lets fuzzers go past 404s).
_LINKED_OPERATIONS = [
    "dedicatedInferences_get",
    "dedicatedInferences_patch",
    "dedicatedInferences_delete",
    "dedicatedInferences_get_ca",
    "dedicatedInferences_list_tokens",
    "dedicatedInferences_create_tokens",
    "dedicatedInferences_list_accelerators",
]


def _scope_of(route: APIRoute) -> str | None:
    for dependency in route.dependant.dependencies:
        scope = getattr(dependency.call, "required_scope", None)
        if scope is not None:
            return str(scope.value)
    return None


def _describe_catalog(document: dict[str, Any], catalog: Catalog) -> None:
    """Enumerate what this installation accepts, so the document says what the server checks."""
    schemas = document["components"]["schemas"]
    regions = catalog.region_slugs()
    slugs = sorted(catalog.accelerator_slugs())
    models = [m.slug for m in catalog.models]
    for name in ("DeploymentSpec", "SpecPatch"):
        _set_enum(schemas[name]["properties"]["region"], regions)
    for name in ("ModelDeployment-Input", "ModelDeployment"):
        if name in schemas:
            _set_enum(schemas[name]["properties"]["model_slug"], models)
            _set_enum(schemas[name]["properties"]["accelerator_slug"], slugs)
    for name in ("AcceleratorConfig-Input", "AcceleratorConfig"):
        if name in schemas:
            _set_enum(schemas[name]["properties"]["accelerator_slug"], slugs)
    for path in document["paths"].values():
        for operation in path.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query" and parameter["name"] == "region":
                    _set_enum(parameter["schema"], regions)
                if parameter["in"] == "query" and parameter["name"] == "slug":
                    _set_enum(parameter["schema"], slugs)
                if parameter["in"] == "path":
                    parameter["schema"]["format"] = "uuid"


def _set_enum(schema: dict[str, Any], values: list[str]) -> None:
    """Put an enum on a (possibly nullable) string schema."""
    for option in schema.get("anyOf", [schema]):
        if option.get("type") == "string":
            option["enum"] = values


def _add_links(document: dict[str, Any]) -> None:
    create = document["paths"]["/v2/dedicated-inferences"]["post"]
    create["responses"]["202"]["links"] = {
        op.removeprefix("dedicatedInferences_"): {"operationId": op, "parameters": _INSTANCE_ID}
        for op in _LINKED_OPERATIONS
    }


def build_openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    document = get_openapi(
        title="inferd Dedicated Inference API",
        version=app.version,
        description=(
            "Wire-compatible implementation of DigitalOcean's /v2/dedicated-inferences API. "
            "Every response carries x-request-id and ratelimit-limit/-remaining/-reset headers."
        ),
        routes=app.routes,
    )
    document.setdefault("components", {})["securitySchemes"] = {
        "bearer_auth": {"type": "http", "scheme": "bearer", "description": "dop_v1_… token of a team"}
    }
    schemas = document["components"].get("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    for route in app.routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        scope = _scope_of(route)
        if scope is None:
            continue
        for method in route.methods or ():
            operation = document["paths"][route.path_format][method.lower()]
            operation["security"] = [{"bearer_auth": [scope]}]
    _describe_catalog(document, app.state.inferd.catalog)
    _add_links(document)
    app.openapi_schema = document
    return document
