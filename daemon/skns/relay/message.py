"""What the relay reads from a source frame: the message id, or why there is none.

A message is a JSON object with an integer ``id`` (``{"id": 7, "text": 42}``);
other keys ride along untouched, since the relay forwards the frame's bytes as
they came. A boolean is not an integer here, although Python says it is.
"""

from __future__ import annotations

import orjson

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
        return NOT_JSON
    if type(message) is not dict:
        return NOT_OBJECT
    id_ = message.get("id", _MISSING)
    if type(id_) is int:
        return id_
    return MISSING_ID if id_ is _MISSING else BAD_ID


_MISSING = object()
