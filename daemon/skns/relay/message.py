"""What the relay reads from a source frame: the message id, or why there is none.

A message is a JSON object with an integer ``id`` (``{"id": 7, "text": 42}``);
other keys ride along untouched, since the relay forwards the frame's bytes as
they came. A boolean is not an integer here, although Python says it is.

Ids of any size are exact. orjson reads an integer outside 64 bits as a float
(or refuses one too large even for a double); only then, off the hot path, is
the frame read again by :func:`skns.jsonexact.loads`, which keeps it an exact
integer. A float id that was written as a float stays a ``bad_id``.

An object that names ``id`` more than once (``{"id": 1, "id": 2}``, or one of them
spelled with escapes, ``"\\u0069d"``) is refused as ``repeated_id``: the relay
forwards the frame's bytes, and a sink reading the first id would see another one
than the relay ordered it by (the parser keeps the last). The hot path pays for
this with two C-level scans of the frame: with no backslash in it, the key can only
be spelled ``"id"``, and spelled once it is named once; any other frame with an
integer id is read again by the stdlib parser, which shows every key.
"""

from __future__ import annotations

import json

import orjson

from .. import jsonexact

# Reasons a frame is dropped before it reaches the reorder buffer.
NOT_JSON = "not_json"
NOT_OBJECT = "not_object"
MISSING_ID = "missing_id"
BAD_ID = "bad_id"  # present but not an integer (a float, a string, a boolean, null ...)
REPEATED_ID = "repeated_id"  # the object names "id" more than once: which one is meant?

_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError


def message_id(frame: bytes | str) -> int | str:
    """The frame's id (an int), or the drop reason (a str)."""
    try:
        message = _loads(frame)
    except _JSONDecodeError:
        return _exact_id(frame)  # not JSON, or an integer too large for a double
    if type(message) is dict:  # the hot path, inline: an object with an int id, named once
        id_ = message.get("id")
        # 92: a backslash. Without one, "id" written once is the key named once.
        once = type(frame) is bytes and 92 not in frame and frame.count(b'"id"') == 1
        if once and type(id_) is int:
            return id_
    return _id_of(message, frame, exact=False)


def _id_of(message: object, frame: bytes | str, *, exact: bool) -> int | str:
    if type(message) is not dict:
        return NOT_OBJECT
    id_ = message.get("id", _MISSING)
    if type(id_) is int:
        return _named_once(frame, id_)
    if type(id_) is float and not exact:
        return _exact_id(frame)  # an integer past 64 bits, or really a float
    return MISSING_ID if id_ is _MISSING else BAD_ID


def _named_once(frame: bytes | str, id_: int) -> int | str:
    """``id_``, or :data:`REPEATED_ID` if the top-level object names "id" more than once.

    The frame is known to be strict JSON (orjson or jsonexact read it), so the
    stdlib parser reads it alike; an object's hook runs after those nested in it,
    so the last call is the top level's.
    """
    names: list[int] = []
    try:
        json.loads(frame, object_pairs_hook=lambda pairs: names.append(_ids(pairs)))
    except RecursionError:  # deeper than the stdlib reads, as jsonexact's slow path refuses
        return NOT_JSON
    return REPEATED_ID if names[-1] > 1 else id_


def _ids(pairs: list[tuple[str, object]]) -> int:
    return sum(key == "id" for key, _ in pairs)


def _exact_id(frame: bytes | str) -> int | str:
    """The id read with integers exact: the slow path, for what orjson reads inexactly."""
    try:
        message = jsonexact.loads(frame)
    except jsonexact.JSONDecodeError:
        return NOT_JSON
    return _id_of(message, frame, exact=True)


_MISSING = object()
