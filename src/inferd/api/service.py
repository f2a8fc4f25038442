"""Use cases of the control plane: validate, record desired state, never start anything.

Handlers call these; the controller later makes what is recorded real.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from inferd.api import quotas
from inferd.api.presenters import InstanceView
from inferd.api.state import AppState
from inferd.domain.errors import Conflict, InvalidInput, NotFound
from inferd.domain.spec import (
    DeploymentSpec,
    SpecPatch,
    apply_patch,
    check_against_catalog,
    prepare_new_spec,
)
from inferd.domain.status import InstanceStatus, accepts_changes, rollout_status
from inferd.domain.tokens import hash_token, new_instance_token
from inferd.pki import create_certificate_authority
from inferd.store import instances as repo
from inferd.store.capacity import current_catalog
from inferd.store.tables import InstanceRow, InstanceTokenRow, utcnow

MAX_TOKENS_PER_INSTANCE = 100
UPDATE_ATTEMPTS = 5
DELETE_ATTEMPTS = 50
T = TypeVar("T")


def _retrying(operation: Callable[[], T], attempts: int) -> T:
    """Run a read-modify-write again when another writer changed the instance meanwhile
    (``StaleDataError``: its version moved; ``IntegrityError``: the same spec version was
    written first). After ``attempts`` lost races: 409, never a 500."""
    for attempt in range(attempts):
        try:
            return operation()
        except (StaleDataError, IntegrityError):
            time.sleep(random.uniform(0, 0.01 * (attempt + 1)))  # noqa: S311 - jitter, not security
    raise Conflict("the instance was changed by other requests at the same time; try again")
FIRST_TOKEN_NAME = "default"


@dataclass(frozen=True)
class IssuedToken:
    row: InstanceTokenRow
    value: str


def view_of(session: Session, instance: InstanceRow) -> InstanceView:
    """The instance with its deployments; NotFound when they are gone.

    The instance and its deployments are read by two statements, and on PostgreSQL (read
    committed) the controller may finish a delete between them: the instance row was read, its
    deployments are gone. The instance no longer exists then, and the answer says so (404), as
    the next request would."""
    views = views_of(session, [instance])
    if not views:
        raise NotFound("instance not found")
    return views[0]


def views_of(session: Session, instances: list[InstanceRow]) -> list[InstanceView]:
    """The instances with their deployments, leaving out those deleted meanwhile (see view_of)."""
    ids = {i for row in instances for i in (row.live_deployment_id, row.pending_deployment_id) if i}
    rows = repo.deployments_by_id(session, ids)
    views = (
        InstanceView(row, rows.get(row.live_deployment_id or ""), rows.get(row.pending_deployment_id or ""))
        for row in instances
    )
    return [view for view in views if view.live is not None or view.pending is not None]


def _issue_token(session: Session, instance: InstanceRow, name: str) -> IssuedToken:
    value = new_instance_token()
    return IssuedToken(repo.add_instance_token(session, instance, name=name, token_hash=hash_token(value)), value)


def _clean_access_tokens(tokens: dict[str, str]) -> dict[str, str]:
    for key, value in tokens.items():
        if not value or len(value) > 4096:
            raise InvalidInput(f"access_tokens.{key}", "must be a non-empty string of at most 4096 characters")
    return tokens


class InstanceService:
    def __init__(self, state: AppState) -> None:
        self.state = state

    def _has_hf_token(self, instance: InstanceRow) -> bool:
        return bool(self.state.secrets.open_json(instance.access_tokens_sealed).get("hugging_face_token"))

    def create(self, team_id: str, spec: DeploymentSpec, access_tokens: dict[str, str] | None) -> tuple[InstanceView, IssuedToken]:
        tokens = _clean_access_tokens(access_tokens or {})
        spec = prepare_new_spec(spec)
        with self.state.database.session() as session:
            catalog = current_catalog(self.state.catalog, session)
        check_against_catalog(spec, catalog, has_hf_token=bool(tokens.get("hugging_face_token")))
        instance_id = str(uuid.uuid4())
        ca = create_certificate_authority(f"inferd instance {instance_id} CA")
        status, deployment_status = rollout_status(has_live_deployment=False)
        with self.state.database.session() as session:
            quotas.check_create(session, self.state.settings, team_id, spec)  # 422 past the team's quota
            instance, _ = repo.create_instance(
                session,
                instance_id=instance_id,
                team_id=team_id,
                spec=spec,
                status=status,
                deployment_status=deployment_status,
                ca_cert_pem=ca.cert_pem.decode(),
                ca_key_sealed=self.state.secrets.seal(ca.key_pem),
                access_tokens_sealed=self.state.secrets.seal_json(tokens) if tokens else None,
            )
            token = _issue_token(session, instance, FIRST_TOKEN_NAME)
            return view_of(session, instance), token

    def update(self, team_id: str, instance_id: str, patch: SpecPatch | None, hf_token: str | None) -> InstanceView:
        """Applies the patch to the newest spec; a writer that lost a race reads again."""
        # each attempt applies a fresh copy: applying assigns model ids inside the patch
        return _retrying(
            lambda: self._update_once(team_id, instance_id, patch.model_copy(deep=True) if patch else None, hf_token),
            UPDATE_ATTEMPTS,
        )

    def _update_once(self, team_id: str, instance_id: str, patch: SpecPatch | None, hf_token: str | None) -> InstanceView:
        if patch is None and hf_token is None:
            raise InvalidInput("body", "give spec and/or access_tokens")
        with self.state.database.session() as session:
            instance = repo.get_instance(session, team_id, instance_id, for_update=True)
            if not accepts_changes(InstanceStatus(instance.status)):
                raise Conflict("the instance is being deleted")
            now = utcnow()
            if hf_token is not None:
                stored = self.state.secrets.open_json(instance.access_tokens_sealed)
                stored["hugging_face_token"] = hf_token
                instance.access_tokens_sealed = self.state.secrets.seal_json(stored)
            if patch is not None:
                current = view_of(session, instance)
                desired = current.pending or current.live
                assert desired is not None
                spec = apply_patch(DeploymentSpec.model_validate(desired.spec), patch)
                check_against_catalog(
                    spec, current_catalog(self.state.catalog, session),
                    has_hf_token=bool(hf_token) or self._has_hf_token(instance),
                )
                quotas.check_update(session, self.state.settings, instance, spec)  # 422 past the team's quota
                repo.rename_instance(session, instance, spec.name)
                repo.supersede_pending(session, instance, now)
                status, deployment_status = rollout_status(has_live_deployment=current.live is not None)
                deployment = repo.add_deployment(session, instance, spec, deployment_status, now)
                instance.pending_deployment_id = deployment.id
                instance.status = status.value
                instance.status_reason = None
            instance.updated_at = now
            session.flush()
            return view_of(session, instance)

    def delete(self, team_id: str, instance_id: str) -> None:
        """A delete always wins in the end: it retries until its write lands."""
        _retrying(lambda: self._delete_once(team_id, instance_id), DELETE_ATTEMPTS)

    def _delete_once(self, team_id: str, instance_id: str) -> None:
        with self.state.database.session() as session:
            instance = repo.get_instance(session, team_id, instance_id, for_update=True)
            if instance.status == InstanceStatus.DELETING:
                return
            instance.status = InstanceStatus.DELETING.value
            instance.status_reason = None
            instance.updated_at = utcnow()

    def create_token(self, team_id: str, instance_id: str, name: str) -> IssuedToken:
        with self.state.database.session() as session:
            instance = repo.get_instance(session, team_id, instance_id, for_update=True)
            if not accepts_changes(InstanceStatus(instance.status)):
                raise Conflict("the instance is being deleted")
            if repo.count_instance_tokens(session, instance) >= MAX_TOKENS_PER_INSTANCE:
                raise InvalidInput("name", f"an instance has at most {MAX_TOKENS_PER_INSTANCE} tokens; revoke one first")
            return _issue_token(session, instance, name)
