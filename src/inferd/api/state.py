"""What every request handler needs, built once per process."""

from __future__ import annotations

from dataclasses import dataclass

from inferd.api.ratelimit import RateLimiter
from inferd.config import Settings
from inferd.domain.catalog import Catalog
from inferd.pki import SecretBox
from inferd.store.db import Database


@dataclass
class AppState:
    settings: Settings
    database: Database
    catalog: Catalog
    secrets: SecretBox
    limiter: RateLimiter
