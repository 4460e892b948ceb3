"""JSON at skns's boundaries: orjson's speed, exact integers of any size.

orjson reads an integer outside [-2**63, 2**64) as a float (1180591620717411303425 becomes
1.1805916207174113e+21) and refuses to write one ("Integer exceeds 64-bit range"). Sums in
metrics are exact big integers by contract, and a client's number must arrive exact or be
refused, never changed: so every place where JSON crosses a boundary reads and writes it here.

The fast path costs one C-level scan of the bytes: an integer that orjson could round has at
least 19 digits in a row, and without such a run orjson's answer is already exact. With one
(a big number, or just a long digit string inside a text), the document, already known to be
valid UTF-8 JSON, is read again by the stdlib parser, which keeps integers exact.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError

# Every integer orjson cannot hold exactly (below -2**63 or from 2**64 up) has 19+ digits.
# Found by mapping every digit to "0" and everything else to " ", then a substring search:
# both run in C at memory speed, about 10x faster than the regex [0-9]{19}, so the check
# costs a fraction of orjson's own parse.
_DIGITS_ONLY = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_RUN = b"0" * 19
_orjson_loads = orjson.loads
_orjson_dumps = orjson.dumps


class TooDeep(JSONDecodeError):
    """A document nested deeper than the ``max_depth`` asked of :func:`loads`."""


# orjson writes containers nested at most this deep ("Recursion limit reached" past it),
# though it reads them up to 1024 deep.
WRITE_DEPTH = 254


def loads(data: bytes | bytearray | memoryview | str, max_depth: int | None = None) -> Any:
    """Parse strict UTF-8 JSON (no NaN, no Infinity); integers come back exact.

    Raises :class:`JSONDecodeError` (a ``ValueError``) on anything that is not such JSON,
    including nesting deeper than orjson's limit of 1024 and floats beyond a double.

    ``max_depth`` (at most :data:`WRITE_DEPTH`): refuse, with :class:`TooDeep`, a document
    whose arrays and objects nest deeper. A reader that writes what it read back out
    (wrapped in a few levels of its own) must ask for it: orjson reads 1024 levels but
    writes only 254, and a document it cannot write is found out only then, far from the
    client that sent it (the executor's link to a shard failed on every flush after it).
    """
    raw = data.encode() if isinstance(data, str) else data
    raw = bytes(raw) if isinstance(raw, memoryview) else raw
    try:
        obj = _orjson_loads(data)
    except JSONDecodeError as error:
        # An integer too large even for a double ("number is infinity"): exact below.
        if "infinity" not in str(error):
            raise
        obj = _loads_stdlib(data, error)
    else:
        if _LONG_RUN in raw.translate(_DIGITS_ONLY):
            obj = _loads_stdlib(data, None)
    # Deeper than max_depth takes that many "[" or "{" and as many closers: a short document
    # is cleared by its length; a longer one by writing it (in C, under max_depth's margin),
    # which costs about what counting its brackets would (a third of reading it).
    long = max_depth is not None and len(raw) > 2 * max_depth
    if long and _deeper(obj, max_depth):  # type: ignore[arg-type]
        raise TooDeep(f"nested deeper than {max_depth} levels", "", 0)
    return obj


def _deeper(obj: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` (<= WRITE_DEPTH) deep in ``obj``."""
    wrapped = obj
    for _ in range(WRITE_DEPTH - limit):
        wrapped = [wrapped]
    try:
        _orjson_dumps(wrapped)
    except TypeError as error:
        if "Recursion" in str(error):
            return True
        # An integer past 64 bits stopped orjson before it could tell: count the levels.
        levels = [(obj, 1)]
        while levels:
            node, depth = levels.pop()
            if type(node) is dict:
                node = node.values()
            elif type(node) is not list:
                continue
            if depth > limit:
                return True
            levels.extend((child, depth + 1) for child in node)
    return False


def _loads_stdlib(data: bytes | bytearray | memoryview | str, error: JSONDecodeError | None) -> Any:
    """The stdlib parser, as strict as orjson: UTF-8 only, no constants, finite floats."""
    try:
        text = data if isinstance(data, str) else bytes(data).decode()
        obj = json.loads(text, parse_constant=_refuse, parse_float=_finite_float)
        # orjson refuses a lone surrogate escape ("\ud800"); it reaches here when orjson
        # stopped first at an integer too large for a double. The stdlib makes it a lone
        # surrogate code point, which strict UTF-8 cannot encode (a pair is one character).
        json.dumps(obj, ensure_ascii=False).encode()
        return obj
    except (ValueError, RecursionError) as stdlib_error:
        if error is not None:
            raise error from None
        raise JSONDecodeError(f"not strict JSON: {stdlib_error}", "", 0) from None


def _refuse(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def _finite_float(token: str) -> float:
    value = float(token)
    if value in (math.inf, -math.inf):
        raise ValueError("number is infinity when parsed as double")
    return value


def dumps(
    obj: Any, *, option: int | None = None, default: Callable[[Any], Any] | None = None
) -> bytes:
    """orjson.dumps, falling back to the stdlib for integers past 64 bits (written exact)."""
    try:
        return _orjson_dumps(obj, default=default, option=option)
    except TypeError as error:
        if "64-bit" not in str(error):
            raise
    indent = 2 if option is not None and option & orjson.OPT_INDENT_2 else None
    separators = (",", ": ") if indent else (",", ":")
    return json.dumps(
        _str_keys(obj) if option is not None and option & orjson.OPT_NON_STR_KEYS else obj,
        ensure_ascii=False,
        indent=indent,
        separators=separators,
        default=default,
    ).encode()


def _str_keys(obj: Any) -> Any:
    """What OPT_NON_STR_KEYS gives orjson: every dict key written as a string."""
    if isinstance(obj, dict):
        return {k if isinstance(k, str) else str(k): _str_keys(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_str_keys(v) for v in obj]
    return obj
