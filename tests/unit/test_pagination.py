from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inferd.domain.pagination import PageNumbers, offset_of, page_numbers


@pytest.mark.parametrize(
    ("page", "per_page", "total", "expected"),
    [
        (1, 20, 0, PageNumbers(first=1, last=1, prev=None, next=None)),
        (1, 20, 1, PageNumbers(first=1, last=1, prev=None, next=None)),
        (1, 20, 45, PageNumbers(first=1, last=3, prev=None, next=2)),
        (2, 20, 45, PageNumbers(first=1, last=3, prev=1, next=3)),
        (3, 20, 45, PageNumbers(first=1, last=3, prev=2, next=None)),
        (3, 20, 40, PageNumbers(first=1, last=2, prev=2, next=None)),
        (9, 20, 45, PageNumbers(first=1, last=3, prev=3, next=None)),
        (1, 200, 200, PageNumbers(first=1, last=1, prev=None, next=None)),
    ],
)
def test_page_numbers(page: int, per_page: int, total: int, expected: PageNumbers) -> None:
    assert page_numbers(page, per_page, total) == expected


@given(st.integers(1, 10**6), st.integers(1, 200), st.integers(0, 10**6))
def test_pages_cover_everything_once(page: int, per_page: int, total: int) -> None:
    numbers = page_numbers(page, per_page, total)
    assert (numbers.last - 1) * per_page < max(total, 1) <= numbers.last * per_page or total == 0
    assert numbers.next is None or numbers.next == page + 1 <= numbers.last
    assert numbers.prev is None or 1 <= numbers.prev <= numbers.last
    assert offset_of(page, per_page) == (page - 1) * per_page


def test_rejects_page_zero() -> None:
    with pytest.raises(ValueError):
        page_numbers(0, 20, 5)
