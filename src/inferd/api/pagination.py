"""``links.pages`` and ``meta`` for list responses."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import Request

from inferd.domain.pagination import page_numbers


def base_url(request: Request, configured: str | None) -> str:
    return (configured or str(request.base_url)).rstrip("/")


def paged(request: Request, configured_base: str | None, page: int, per_page: int, total: int,
          filters: dict[str, str | None] | None = None) -> dict[str, Any]:
    numbers = page_numbers(page, per_page, total)
    root = base_url(request, configured_base) + request.url.path
    kept = {k: v for k, v in (filters or {}).items() if v is not None}

    def link(number: int) -> str:
        return f"{root}?{urlencode({'page': number, 'per_page': per_page, **kept})}"

    pages = {"first": link(numbers.first)}
    if numbers.prev is not None:
        pages["prev"] = link(numbers.prev)
    if numbers.next is not None:
        pages["next"] = link(numbers.next)
    pages["last"] = link(numbers.last)
    return {"links": {"pages": pages}, "meta": {"total": total}}
