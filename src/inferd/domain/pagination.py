"""Page arithmetic for list endpoints (DigitalOcean ``links.pages`` semantics)."""

from __future__ import annotations

from dataclasses import dataclass

MAX_PER_PAGE = 200
DEFAULT_PER_PAGE = 20


@dataclass(frozen=True)
class PageNumbers:
    """Which page numbers the ``links.pages`` object names.

    ``first`` and ``last`` are always given (as the reference's examples do, even for an
    empty list); ``prev`` exists past page 1 and ``next`` before the last page.
    """

    first: int
    last: int
    prev: int | None
    next: int | None


def page_numbers(page: int, per_page: int, total: int) -> PageNumbers:
    if page < 1 or per_page < 1:
        raise ValueError("page and per_page start at 1")
    last = max(1, -(-total // per_page))
    prev = min(page - 1, last) if page > 1 else None
    nxt = page + 1 if page < last else None
    return PageNumbers(first=1, last=last, prev=prev, next=nxt)


def offset_of(page: int, per_page: int) -> int:
    return (page - 1) * per_page
