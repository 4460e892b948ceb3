"""What the relay reads from a source frame: the message id, or why there is none.

A message is a JSON object with an integer ``id`` (``{"id": 7, "text": 42}``);
other keys ride along untouched, since the relay forwards the frame's bytes as
they came. A boolean is not an integer here, although Python says it is.

Ids of any size are exact. orjson reads an integer outside 64 bits as a float
(or refuses one too large even for a double); only then, off the hot path, is
the frame read again by :func:`skns.jsonexact.loads`, which keeps it an exact
integer. A float id that was written as a float stays a ``bad_id``.
"""

from __future__ import annotations

import orjson

from .. import jsonexact

# Reasons a frame is dropped before it reaches the reorder buffer.
NOT_JSON = "not_json"
NOT_OBJECT = "not_object"
MISSING_ID = "missing_id"
BAD_ID = "bad_id"  # present but not an integer (a float, a string, a boolean, null ...)

_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError


def message_id(frame: bytes | str) -> int | str:
    """The frame's id (an int), or the drop reason (a str)."""
    try:
        message = _loads(frame)
    except _JSONDecodeError:
        return _exact_id(frame)  # not JSON, or an integer too large for a double
    if type(message) is dict:  # the hot path, inline: an object with an int id
        id_ = message.get("id")
        if type(id_) is int:
            return id_
    return _id_of(message, frame)


def _id_of(message: object, frame: bytes | str | None) -> int | str:
    if type(message) is not dict:
        return NOT_OBJECT
    id_ = message.get("id", _MISSING)
    if type(id_) is int:
        return id_
    if type(id_) is float and frame is not None:
        return _exact_id(frame)  # an integer past 64 bits, or really a float
    return MISSING_ID if id_ is _MISSING else BAD_ID


def _exact_id(frame: bytes | str) -> int | str:
    """The id read with integers exact: the slow path, for what orjson reads inexactly."""
    try:
        message = jsonexact.loads(frame)
    except jsonexact.JSONDecodeError:
        return NOT_JSON
    return _id_of(message, None)


_MISSING = object()
