"""DigitalOcean error bodies ``{id, message, request_id}`` for every failure."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from inferd.domain.errors import Conflict, DomainError, InvalidInput, NotFound

log = logging.getLogger("inferd.api")

_IDS_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "request_entity_too_large",
    415: "unsupported_media_type",
    422: "unprocessable_entity",
    429: "too_many_requests",
    500: "server_error",
}

MESSAGES = {
    401: "Unable to authenticate you.",
    403: "You are not authorized to perform this operation.",
    404: "The resource you were accessing could not be found.",
    429: "API rate limit exceeded.",
    500: "Server was unable to give you a response.",
}


class ApiError(Exception):
    def __init__(self, status: int, message: str | None = None, error_id: str | None = None) -> None:
        super().__init__(message or MESSAGES.get(status, "error"))
        self.status = status
        self.message = message or MESSAGES.get(status, "error")
        self.error_id = error_id or _IDS_BY_STATUS.get(status, "error")


def error_body(status: int, message: str, request_id: str | None, error_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"id": error_id or _IDS_BY_STATUS.get(status, "error"), "message": message}
    if request_id:
        body["request_id"] = request_id
    return body


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def _respond(request: Request, status: int, message: str, error_id: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, _request_id(request), error_id), status_code=status)


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """``('body', 'spec', 'model_deployments', 0, 'name')`` → ``spec.model_deployments[0].name``."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in ("function-after", "function-before") or str(part).startswith(("function-", "literal[")):
            continue
        else:
            text += ("." if text else "") + str(part)
    return text or "body"


async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    # An unknown field explains a request better than the "missing" that often comes with it.
    errors = sorted(exc.errors(), key=lambda e: e.get("type") != "extra_forbidden")
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
        return _respond(request, 400, "request body is not valid JSON")
    where = field_path(first.get("loc", ()))
    if first.get("type") == "missing":
        message = f"{where}: field required"
    elif first.get("type") == "extra_forbidden":
        message = f"{where}: unknown field"
    else:
        message = f"{where}: {first.get('msg', 'invalid value')}"
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return _respond(request, 422, message + more)


async def on_model_error(request: Request, exc: Exception) -> JSONResponse:
    """A rule checked by re-validating merged input (e.g. a patched spec) is still bad input."""
    assert isinstance(exc, ValidationError)
    errors = exc.errors()
    where = field_path(("spec", *errors[0]["loc"])) if errors else "body"
    return _respond(request, 422, f"{where}: {errors[0]['msg'] if errors else 'invalid value'}")


async def on_domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    if isinstance(exc, NotFound):
        return _respond(request, 404, MESSAGES[404])
    if isinstance(exc, InvalidInput):
        return _respond(request, 422, exc.message)
    if isinstance(exc, Conflict):
        return _respond(request, 409, exc.message)
    return _respond(request, 400, exc.message)


async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return _respond(request, exc.status, exc.message, exc.error_id)


async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = MESSAGES.get(exc.status_code) or str(exc.detail)
    response = _respond(request, exc.status_code, message)
    if exc.status_code == 405:
        response.headers["allow"] = ", ".join(_allowed_methods(request))
    return response


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette names only the first route's)."""
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match is not Match.NONE and getattr(route, "methods", None):
            methods |= set(route.methods)
    return sorted(methods)
