"""Domain errors; the API maps each to a DigitalOcean error body and status code."""

from __future__ import annotations


class DomainError(Exception):
    """Base class: a rule was broken by the caller's input or the resource's state."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(DomainError):
    """The resource does not exist *for this caller* (other teams' resources included)."""


class InvalidInput(DomainError):
    """Input is well-formed but breaks a rule; ``field`` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class Conflict(DomainError):
    """The request clashes with the current state (duplicate name, instance being deleted)."""
