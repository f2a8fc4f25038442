"""Instances: list, create, get, update, delete, plus their accelerators and CA."""

from __future__ import annotations

import base64
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response

from inferd.api.auth import Principal, require
from inferd.api.errors import ApiError
from inferd.api.pagination import paged
from inferd.api.presenters import accelerator_body, instance_body, token_body
from inferd.api.routes.common import ERRORS, Page, PerPage, app_state, known_region
from inferd.api.service import InstanceService, view_of, views_of
from inferd.api.state import AppState
from inferd.api.wire import (
    AcceleratorList,
    AcceleratorOut,
    CertificateOut,
    CreatedEnvelope,
    CreateRequest,
    DedicatedInferenceEnvelope,
    DedicatedInferenceList,
    UpdateRequest,
)
from inferd.domain.pagination import offset_of
from inferd.domain.scopes import Scope
from inferd.store import instances as repo

router = APIRouter(prefix="/v2/dedicated-inferences", tags=["Dedicated Inference"], responses=ERRORS)
State = Annotated[AppState, Depends(app_state)]
Reader = Annotated[Principal, Depends(require(Scope.READ))]
Creator = Annotated[Principal, Depends(require(Scope.CREATE))]
Updater = Annotated[Principal, Depends(require(Scope.UPDATE))]
Deleter = Annotated[Principal, Depends(require(Scope.DELETE))]
Region = Annotated[str | None, Query(max_length=32, description="Filter by region.")]
Slug = Annotated[str | None, Query(max_length=64, description="Filter accelerators by GPU slug.")]


@router.get(
    "", response_model=DedicatedInferenceList, response_model_exclude_none=True, operation_id="dedicatedInferences_list"
)
def list_instances(
    request: Request, who: Reader, state: State, per_page: PerPage = 20, page: Page = 1, region: Region = None
) -> dict[str, Any]:
    """List the team's Dedicated Inference instances, oldest first."""
    known_region(state, region)
    with state.database.session() as session:
        rows, total = repo.list_instances(
            session, who.team_id, region=region, offset=offset_of(page, per_page), limit=per_page
        )
        items = [instance_body(v, state.settings) for v in views_of(session, rows)]
    return {
        "dedicated_inferences": items,
        **paged(request, state.settings.public_url, page, per_page, total, {"region": region}),
    }


@router.post(
    "", status_code=202, response_model=CreatedEnvelope, response_model_exclude_none=True,
    operation_id="dedicatedInferences_create",
)
def create_instance(body: CreateRequest, who: Creator, state: State) -> dict[str, Any]:
    """Accept a new instance; the controller provisions it. The token value is shown only here."""
    view, token = InstanceService(state).create(who.team_id, body.spec, body.access_tokens)
    return {"dedicated_inference": instance_body(view, state.settings), "token": token_body(token.row, token.value)}


@router.get(
    "/{dedicated_inference_id:uuid}", response_model=DedicatedInferenceEnvelope, response_model_exclude_none=True,
    operation_id="dedicatedInferences_get",
)
def get_instance(dedicated_inference_id: UUID, who: Reader, state: State) -> dict[str, Any]:
    with state.database.session() as session:
        instance = repo.get_instance(session, who.team_id, str(dedicated_inference_id))
        return {"dedicated_inference": instance_body(view_of(session, instance), state.settings)}


@router.patch(
    "/{dedicated_inference_id:uuid}", status_code=202, response_model=DedicatedInferenceEnvelope,
    response_model_exclude_none=True, operation_id="dedicatedInferences_patch",
)
def update_instance(dedicated_inference_id: UUID, body: UpdateRequest, who: Updater, state: State) -> dict[str, Any]:
    """Accept a new spec version (or a new Hugging Face token); the instance goes ``updating``."""
    hf_token = body.access_tokens.hugging_face_token if body.access_tokens else None
    view = InstanceService(state).update(who.team_id, str(dedicated_inference_id), body.spec, hf_token)
    return {"dedicated_inference": instance_body(view, state.settings)}


@router.delete(
    "/{dedicated_inference_id:uuid}", status_code=202, response_class=Response,
    responses={202: {"description": "Deletion accepted."}}, operation_id="dedicatedInferences_delete",
)
def delete_instance(dedicated_inference_id: UUID, who: Deleter, state: State) -> Response:
    InstanceService(state).delete(who.team_id, str(dedicated_inference_id))
    return Response(status_code=202)


@router.get(
    "/{dedicated_inference_id:uuid}/accelerators", response_model=AcceleratorList, response_model_exclude_none=True,
    operation_id="dedicatedInferences_list_accelerators",
)
def list_accelerators(
    request: Request, dedicated_inference_id: UUID, who: Reader, state: State,
    per_page: PerPage = 20, page: Page = 1, slug: Slug = None,
) -> dict[str, Any]:
    if slug is not None and slug not in state.catalog.accelerator_slugs():
        raise ApiError(422, f"slug: unknown accelerator slug {slug!r}")
    with state.database.session() as session:
        instance = repo.get_instance(session, who.team_id, str(dedicated_inference_id))
        rows, total = repo.list_accelerators(
            session, instance, slug=slug, offset=offset_of(page, per_page), limit=per_page
        )
        items = [accelerator_body(row) for row in rows]
    return {"accelerators": items, **paged(request, state.settings.public_url, page, per_page, total, {"slug": slug})}


@router.get(
    "/{dedicated_inference_id:uuid}/accelerators/{accelerator_id:uuid}", response_model=AcceleratorOut,
    operation_id="dedicatedInferences_get_accelerator",
)
def get_accelerator(dedicated_inference_id: UUID, accelerator_id: UUID, who: Reader, state: State) -> dict[str, Any]:
    with state.database.session() as session:
        instance = repo.get_instance(session, who.team_id, str(dedicated_inference_id))
        return accelerator_body(repo.get_accelerator(session, instance, str(accelerator_id)))


@router.get(
    "/{dedicated_inference_id:uuid}/ca", response_model=CertificateOut, operation_id="dedicatedInferences_get_ca"
)
def get_ca(dedicated_inference_id: UUID, who: Reader, state: State) -> dict[str, str]:
    """The instance's CA certificate (PEM, base64): trust it to reach the private endpoint."""
    with state.database.session() as session:
        instance = repo.get_instance(session, who.team_id, str(dedicated_inference_id))
        return {"cert": base64.b64encode(instance.ca_cert_pem.encode()).decode()}



