"""How deeply a JSON document nests, found before parsing it.

Python's parser recurses once per level: thousands of nested ``[`` or ``{`` raise
``RecursionError`` (an answer of 500). The gateway measures the depth first, in C-speed
passes over the bytes (strings removed, brackets kept, running sum), and refuses deep bodies.
"""

from __future__ import annotations

import re
from itertools import accumulate

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1


def nesting_depth(document: bytes) -> int:
    """Deepest nesting of arrays and objects in ``document`` (0 for a scalar).

    Brackets inside strings do not count. On malformed input the result is an upper bound of
    sorts and the parser will refuse the document anyway.
    """
    brackets = _STRING.sub(b"", document).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    return max(0, max(accumulate(map(_STEP.__getitem__, brackets))))


def nests_deeper_than(document: bytes, limit: int) -> bool:
    if document.count(b"[") + document.count(b"{") <= limit:  # cheap and the common case
        return False
    return nesting_depth(document) > limit
