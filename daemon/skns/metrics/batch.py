"""Parse and aggregate a whole received batch with one orjson call.

The receiver leaves the batch's dense region reading as a JSON array of the
datagrams (slot i holds datagram i, "\\n" padding, then ","). Parsing that in
one call, then taking sums and extremes with C-level passes over lists, costs
a fraction of parsing datagram by datagram.

Joining datagrams must never let invalid ones pass as valid: two broken
halves could otherwise merge across a slot boundary into one good object,
while another datagram splits into two, keeping the count. The fast path is
therefore taken only when the region proves that every datagram is exactly
one flat object confined to its slot:

* each slot starts with "{", and the region holds exactly n "{" and n "}",
  and no "[": so no datagram opens a second object or any array, and an
  object running past its slot end would meet "," then "{" where JSON wants a
  key: a parse error;
* no string can run past a slot either: the "\\n" padding (at least one byte,
  because only datagrams of at most ``DENSE`` bytes qualify) is not allowed
  unescaped inside a JSON string;
* the parse yields exactly n objects, each with integer A1, A2, A3 in int64.

Anything else (a bad datagram, a nested value, a brace inside a string, a
long datagram) returns None and the caller checks the batch datagram by
datagram; that path is exact, just slower.
"""

from __future__ import annotations

import orjson

from .recvmmsg import DENSE, SLOT
from .window import INT64_MAX, INT64_MIN

_BRACES = b"{" * 1024
_INT_ONLY = {int}
_CLOSE = ord("]")
_COMMA = ord(",")


def aggregate(
    dense: bytearray, view: memoryview, n: int, lengths: memoryview, flags: memoryview
) -> tuple[int, int, int, int] | None:
    """(count, A1 sum, A2 max, A3 min) of n good datagrams, or None: check one by one."""
    end = 1 + n * SLOT
    if (
        max(lengths) > DENSE
        or any(flags)
        or dense[1:end:SLOT] != _BRACES[:n]
        or dense.count(b"{", 1, end) != n
        or dense.count(b"}", 1, end) != n
        or dense.find(b"[", 1, end) >= 0
    ):
        return None
    dense[end - 1] = _CLOSE
    try:
        objs = orjson.loads(view[:end])
    except orjson.JSONDecodeError:
        return None
    finally:
        dense[end - 1] = _COMMA
    if len(objs) != n:
        return None
    try:
        a1 = [o["A1"] for o in objs]
        a2 = [o["A2"] for o in objs]
        a3 = [o["A3"] for o in objs]
    except (KeyError, TypeError):
        return None
    if {*map(type, a1), *map(type, a2), *map(type, a3)} != _INT_ONLY:
        return None  # a bool, a float, or an integer beyond 64 bits (orjson makes it a float)
    top, bottom = max(a2), min(a3)
    if (
        min(a1) < INT64_MIN
        or max(a1) > INT64_MAX
        or top > INT64_MAX
        or min(a2) < INT64_MIN
        or bottom < INT64_MIN
        or max(a3) > INT64_MAX
    ):
        return None
    return n, sum(a1), top, bottom
