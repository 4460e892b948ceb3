"""Parse, check and aggregate a whole received batch with one typed decode.

The receiver leaves the batch's dense region reading as a JSON array of the
datagrams (slot i holds datagram i, "\\n" padding, then ","). msgspec decodes
that array in one call straight into a list of typed records, checking in C
that A1, A2 and A3 are JSON integers (not booleans, not floats) within int64;
other keys are skipped. Sums and extremes are then C-level passes over lists.
This costs a fraction of parsing datagram by datagram.

Joining datagrams must never let invalid ones pass as valid: two broken
halves could otherwise merge across a slot boundary into one good object,
while another datagram splits into two, keeping the count. The fast path is
therefore taken only when the region proves that every datagram is exactly
one object confined to its slot:

* every datagram fits its slot (at most the slot's size less 2 bytes: so
  none was truncated, and at least one "\\n" of padding follows each);
* each slot starts with "{", and the region holds no "[": so the only
  container a datagram can leave open at its slot's end is an object, and
  there "\\n..., {" (padding, comma, the next slot's brace) is a parse error
  where a key is due. No string can run past a slot either: "\\n" is not
  allowed unescaped inside a JSON string. So each slot's "{" opens a new
  element of the array;
* the array then holds exactly n elements: one per slot, none with a second
  object after it;
* the region is UTF-8 (msgspec does not validate the strings it skips).

Anything else (a bad datagram, an integer beyond int64, a "[" anywhere, a
datagram longer than its slot) returns None and the caller checks the batch datagram by datagram;
that path is exact, just slower.
"""

from __future__ import annotations

import codecs
from typing import TYPE_CHECKING, Annotated

import msgspec

from .recvmmsg import MAX_BATCH
from .window import INT64_MAX, INT64_MIN

if TYPE_CHECKING:
    from .recvmmsg import BatchReceiver

_Int64 = Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]


class _Datagram(msgspec.Struct, gc=False):
    """The three figures of a datagram; msgspec ignores other keys."""

    A1: _Int64
    A2: _Int64
    A3: _Int64


_decode = msgspec.json.Decoder(list[_Datagram]).decode
_utf8 = codecs.utf_8_decode
_BRACES = b"{" * MAX_BATCH
_OPEN = ord("[")
_CLOSE = ord("]")
_COMMA = ord(",")


def aggregate(rx: BatchReceiver, start: int, stop: int) -> tuple[int, int, int, int] | None:
    """(count, A1 sum, A2 max, A3 min) of the datagrams in ``rx``'s slots [start, stop)
    if all are good, or None: check them (or fewer at a time) again.

    A range not starting at slot 0 reads as an array too once the "," before its
    first slot is a "[" for the time of the decode."""
    dense = rx.dense
    slot = rx.slot
    n = stop - start
    first = 1 + start * slot
    end = 1 + stop * slot
    if (
        not rx.all_dense(start, stop)
        or dense[first:end:slot] != _BRACES[:n]
        or dense.find(b"[", first, end) >= 0
    ):
        return None
    region = rx.dense_view[first - 1 : end]
    before = dense[first - 1]
    dense[first - 1] = _OPEN
    dense[end - 1] = _CLOSE
    try:
        _utf8(region, "strict", True)
        objs = _decode(region)
    except (msgspec.DecodeError, UnicodeDecodeError):  # ValidationError is a DecodeError
        return None
    finally:
        dense[first - 1] = before
        dense[end - 1] = _COMMA
    if len(objs) != n:
        return None
    return n, sum([o.A1 for o in objs]), max([o.A2 for o in objs]), min([o.A3 for o in objs])
