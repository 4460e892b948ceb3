"""What makes a datagram acceptable, and why a rejected one was rejected.

The worker's hot loop inlines the fast check (orjson, exact ``int`` type,
int64 range) and calls :func:`check` only for what fails it. ``check`` uses
the stdlib parser, which keeps integer literals exact: orjson reads an integer
beyond 64 bits as a float, which would misreport "out_of_range" as "not_integer".

JSON on the wire is UTF-8 (RFC 8259), and orjson refuses anything else. The
stdlib parser given bytes guesses UTF-16 and UTF-32 and decodes surrogates
encoded as UTF-8 (CESU-8) with "surrogatepass": so ``check`` decodes strictly
as UTF-8 first, and what is not UTF-8 is "not_json" on every path.

A lone surrogate escape (``"\\ud800"``, anywhere, also in a key that is ignored)
names no character: orjson, and with it every other surface of skns, refuses it,
while the stdlib parser makes it a lone surrogate code point. ``check`` refuses
it too ("not_json"), so that the fast path and this one agree.
"""

from __future__ import annotations

import json
from typing import Any

from .window import INT64_MAX, INT64_MIN

KEYS = ("A1", "A2", "A3")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def check(data: bytes) -> tuple[int, int, int] | str:
    """The (A1, A2, A3) of an acceptable datagram, or the reason it is rejected."""
    try:
        obj = json.loads(data.decode(), parse_constant=_no_constants)
        # The input was strict UTF-8, so a surrogate code point in the result came from a
        # lone surrogate escape (a pair makes one character): strict UTF-8 cannot encode it.
        json.dumps(obj, ensure_ascii=False).encode()
    except (ValueError, UnicodeError, RecursionError):
        return "not_json"
    if not isinstance(obj, dict):
        return "not_object"
    try:
        values = tuple(obj[k] for k in KEYS)
    except KeyError:
        return "missing_key"
    if any(type(v) is not int for v in values):
        return "not_integer"
    if any(not INT64_MIN <= v <= INT64_MAX for v in values):
        return "out_of_range"
    return values  # type: ignore[return-value]
