"""The OpenAPI document served at ``/v2/openapi.json``.

FastAPI derives it from the routes; this adds bearer auth with each operation's scope and
drops FastAPI's own validation-error schema, since every error here is ``{id, message}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute


def _scope_of(route: APIRoute) -> str | None:
    for dependency in route.dependant.dependencies:
        scope = getattr(dependency.call, "required_scope", None)
        if scope is not None:
            return str(scope.value)
    return None


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
        for method in route.methods:
            operation = document["paths"][route.path_format][method.lower()]
            operation["security"] = [{"bearer_auth": [scope]}]
    app.openapi_schema = document
    return document
