"""The cluster's current accelerator counts, written by the leading controller, read by the API."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from inferd.domain.catalog import Catalog
from inferd.store.tables import CapacityRow, utcnow


def read_counts(session: Session) -> dict[tuple[str, str], int]:
    return {(row.slug, row.region): row.count for row in session.scalars(select(CapacityRow))}


def write_counts(session: Session, counts: dict[tuple[str, str], int]) -> bool:
    """Store ``counts`` (only what changed); True when anything changed."""
    current = read_counts(session)
    if current == counts:
        return False
    now = utcnow()
    for key in set(current) - set(counts):
        session.execute(delete(CapacityRow).where(CapacityRow.slug == key[0], CapacityRow.region == key[1]))
    for (slug, region), count in counts.items():
        if current.get((slug, region)) != count:
            session.merge(CapacityRow(slug=slug, region=region, count=count, updated_at=now))
    return True


def current_catalog(catalog: Catalog, session: Session) -> Catalog:
    """``catalog`` with the counts the cluster reported last (no query when nothing is cluster-counted)."""
    if not catalog.counted_by_cluster():
        return catalog
    return catalog.with_counts(read_counts(session))
