"""Data-plane access tokens (``di_…``) of an instance."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Request, Response

from inferd.api.auth import Principal, require
from inferd.api.pagination import paged
from inferd.api.presenters import token_body
from inferd.api.routes.common import ERRORS, Page, PerPage, app_state
from inferd.api.service import InstanceService
from inferd.api.state import AppState
from inferd.api.wire import TokenCreateRequest, TokenEnvelope, TokenList
from inferd.domain.pagination import offset_of
from inferd.domain.scopes import Scope
from inferd.store import instances as repo

router = APIRouter(prefix="/v2/dedicated-inferences", tags=["Dedicated Inference"], responses=ERRORS)
State = Annotated[AppState, Depends(app_state)]


@router.get(
    "/{dedicated_inference_id:uuid}/tokens", response_model=TokenList, response_model_exclude_none=True,
    operation_id="dedicatedInferences_list_tokens",
)
def list_tokens(
    request: Request, dedicated_inference_id: UUID, who: Annotated[Principal, Depends(require(Scope.READ))],
    state: State, per_page: PerPage = 20, page: Page = 1,
) -> dict[str, Any]:
    """Token ids, names and creation times; values are never listed."""
    with state.database.session() as session:
        instance = repo.get_instance(session, who.team_id, str(dedicated_inference_id))
        rows, total = repo.list_instance_tokens(session, instance, offset=offset_of(page, per_page), limit=per_page)
        items = [token_body(row) for row in rows]
    return {"tokens": items, **paged(request, state.settings.public_url, page, per_page, total)}


@router.post(
    "/{dedicated_inference_id:uuid}/tokens", status_code=202, response_model=TokenEnvelope,
    operation_id="dedicatedInferences_create_tokens",
)
def create_token(
    dedicated_inference_id: UUID, body: TokenCreateRequest,
    who: Annotated[Principal, Depends(require(Scope.CREATE))], state: State,
) -> dict[str, Any]:
    """A new token; its value is returned only in this response."""
    issued = InstanceService(state).create_token(who.team_id, str(dedicated_inference_id), body.name)
    return {"token": token_body(issued.row, issued.value)}


@router.delete(
    "/{dedicated_inference_id:uuid}/tokens/{token_id:uuid}", status_code=204, response_class=Response,
    responses={204: {"description": "Token revoked."}}, operation_id="dedicatedInferences_delete_tokens",
)
def revoke_token(
    dedicated_inference_id: UUID, token_id: UUID,
    who: Annotated[Principal, Depends(require(Scope.DELETE))], state: State,
) -> Response:
    with state.database.session() as session:
        instance = repo.get_instance(session, who.team_id, str(dedicated_inference_id))
        repo.delete_instance_token(session, instance, str(token_id))
    return Response(status_code=204)
