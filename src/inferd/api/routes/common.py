"""Shared route pieces: query parameters and documented error responses."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Request

from inferd.api.errors import ApiError
from inferd.api.state import AppState
from inferd.api.wire import ErrorBody
from inferd.domain.pagination import DEFAULT_PER_PAGE, MAX_PER_PAGE

PerPage = Annotated[int, Query(ge=1, le=MAX_PER_PAGE, description="Number of items returned per page")]
Page = Annotated[int, Query(ge=1, description="Which 'page' of paginated results to return.")]
DEFAULTS = {"per_page": DEFAULT_PER_PAGE, "page": 1}


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("Malformed request (e.g. invalid JSON)."),
    401: _error("Authentication failed."),
    403: _error("The token lacks the required scope."),
    404: _error("The resource was not found."),
    409: _error("Conflicts with the current state (duplicate name, instance being deleted)."),
    413: _error("Request body too large."),
    422: _error("Invalid input; the message names the field."),
    429: _error("The API rate limit has been exceeded."),
    500: _error("There was a server error."),
}


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.inferd
    return state


def known_region(state: AppState, region: str | None) -> str | None:
    if region is not None and region not in state.catalog.region_slugs():
        raise ApiError(422, f"region: unknown region {region!r}; known: {', '.join(state.catalog.region_slugs())}")
    return region
