"""The control-plane ASGI application."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from inferd import __version__
from inferd.api import console
from inferd.api.errors import (
    ApiError,
    on_api_error,
    on_domain_error,
    on_http_error,
    on_model_error,
    on_validation_error,
)
from inferd.api.instance_metrics import GatewayMetricsReader
from inferd.api.middleware import ControlPlaneMiddleware
from inferd.api.openapi import build_openapi
from inferd.api.routes import catalog, instances, metrics, tokens
from inferd.api.state import AppState
from inferd.domain.errors import DomainError


def create_app(state: AppState) -> FastAPI:
    app = FastAPI(
        title="inferd",
        version=__version__,
        openapi_url="/v2/openapi.json",
        docs_url="/v2/docs",
        redoc_url=None,
    )
    app.state.inferd = state
    app.state.gateway_metrics = GatewayMetricsReader(
        state.settings.resolved_gateway_metrics_urls(), state.settings.metrics_token
    )
    # /sizes and /gpu-model-config must be matched before /{dedicated_inference_id}.
    app.include_router(catalog.router)
    app.include_router(instances.router)
    app.include_router(tokens.router)
    app.include_router(console.router)  # the web console at /console (docs/console.md)
    app.include_router(metrics.router)
    app.add_exception_handler(RequestValidationError, on_validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(DomainError, on_domain_error)
    app.add_exception_handler(ValidationError, on_model_error)
    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_middleware(ControlPlaneMiddleware, state=state)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.openapi = lambda: build_openapi(app)  # type: ignore[method-assign]
    return app
