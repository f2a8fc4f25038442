"""Per-team quotas: how many instances a team may have and how many accelerator units of each
kind its desired specs may hold, so that one team cannot take a whole installation.

Limits come from the settings (``INFERD_TEAM_MAX_INSTANCES``, ``INFERD_TEAM_MAX_UNITS``) unless
the team has its own (``inferd admin team set-quota``). Units held are the sum of ``scale``
over the team's instances' desired specs (pending, else live) that are not being deleted.
Going over answers 422 ``unprocessable_entity``: for units, the message names the field
(``spec.model_deployments[0].accelerators[0].scale: team quota allows 4 units of …``).
A change that does not raise the team's use of a kind passes even over a lowered quota.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from inferd.config import Settings
from inferd.domain.errors import DomainError, InvalidInput
from inferd.domain.spec import DeploymentSpec
from inferd.store import quotas as store
from inferd.store.tables import InstanceRow


class QuotaExceeded(InvalidInput):
    """422: the request would take the team over one of its quotas (``field``: where, if a
    field of the request is to blame)."""

    def __init__(self, field: str | None, message: str) -> None:
        if field is not None:
            super().__init__(field, message)
        else:
            DomainError.__init__(self, message)
        self.field = field or ""


@dataclass(frozen=True)
class TeamLimits:
    max_instances: int
    units: dict[str, int] = field(default_factory=dict)
    """Per slug; a slug not listed has ``default_units``."""
    default_units: int | None = None
    """For every slug not in ``units``; None: only the inventory's capacity limits it."""

    def units_of(self, slug: str) -> int | None:
        return self.units.get(slug, self.default_units)


def limits(settings: Settings, override: store.TeamQuotaRow | None) -> TeamLimits:
    """The global defaults, with the team's own overrides on top."""
    configured = settings.team_max_units
    per_slug = dict(configured) if isinstance(configured, dict) else {}
    default = configured if isinstance(configured, int) else None
    max_instances = settings.team_max_instances
    if override is not None:
        if override.max_instances is not None:
            max_instances = override.max_instances
        per_slug.update(override.max_units or {})
    return TeamLimits(max_instances=max_instances, units=per_slug, default_units=default)


# -- pure decisions ---------------------------------------------------------------------------
def check_instance_count(limits: TeamLimits, existing: int) -> None:
    if existing + 1 > limits.max_instances:
        noun = "instance" if limits.max_instances == 1 else "instances"
        raise QuotaExceeded(
            None,
            f"team quota allows {limits.max_instances} {noun} and the team has {existing}; "
            "delete one, or ask an operator to raise the quota",
        )


def check_units(
    limits: TeamLimits, spec: DeploymentSpec, held_elsewhere: dict[str, int], held_before: dict[str, int]
) -> None:
    """``spec`` plus what the team's other instances hold, per slug, against the quota; the
    field named is the accelerator entry where the sum first goes over."""
    demand: dict[str, int] = {}
    for index, deployment in enumerate(spec.model_deployments):
        for acc_index, accelerator in enumerate(deployment.accelerators):
            slug = accelerator.accelerator_slug
            demand[slug] = demand.get(slug, 0) + accelerator.scale
            allowed = limits.units_of(slug)
            if allowed is None:
                continue
            total = held_elsewhere.get(slug, 0) + demand[slug]
            if total > allowed and total > held_elsewhere.get(slug, 0) + held_before.get(slug, 0):
                others = held_elsewhere.get(slug, 0)
                raise QuotaExceeded(
                    f"spec.model_deployments[{index}].accelerators[{acc_index}].scale",
                    f"team quota allows {allowed} units of {slug}; this spec asks for {demand[slug]}"
                    + (f" and the team's other instances hold {others}" if others else ""),
                )


def _limited(limits: TeamLimits, spec: DeploymentSpec) -> bool:
    return any(
        limits.units_of(a.accelerator_slug) is not None for d in spec.model_deployments for a in d.accelerators
    )


# -- with the store ---------------------------------------------------------------------------
def check_create(session: Session, settings: Settings, team_id: str, spec: DeploymentSpec) -> None:
    """Before a new instance is written, in the same transaction (holds the team's lock)."""
    store.lock_team(session, team_id)
    team = limits(settings, store.override_of(session, team_id))
    check_instance_count(team, store.instance_count(session, team_id))
    if _limited(team, spec):
        check_units(team, spec, store.units_held(session, team_id), {})


def check_update(session: Session, settings: Settings, instance: InstanceRow, spec: DeploymentSpec) -> None:
    """Before ``instance``'s new desired ``spec`` is written, in the same transaction."""
    team = limits(settings, store.override_of(session, instance.team_id))
    if not _limited(team, spec):
        return
    store.lock_team(session, instance.team_id)
    before: dict[str, Any] = store.desired_spec(session, instance) or {}
    check_units(
        team, spec, store.units_held(session, instance.team_id, except_id=instance.id), store.units_of_spec(before)
    )
