"""Validate the body of ``POST /messages``: ``{"sender": str, "text": str}``.

Pure: bytes in, ``(sender, text)`` or :class:`BadMessage` out, with a reason
fit for the 400 answer. Keys other than the two are ignored. Lengths are
counted in characters (code points), after no trimming: what is sent is
what is stored.
"""

from __future__ import annotations

import orjson

from ..errors import SknsError

# The longest JSON spelling of one character: a character outside the Basic Multilingual
# Plane escaped as a UTF-16 surrogate pair, "\ud83d\ude00" (Python's json.dumps and
# aiohttp's json= write every emoji so). Raw UTF-8 takes at most 4 bytes, a BMP escape 6.
LONGEST_CHAR_BYTES = 12
# Room for the braces, keys, quotes, separators and some whitespace around them.
FRAMING_BYTES = 1024


def max_body(sender_max: int, text_max: int) -> int:
    """The largest body a valid message can need: both fields at their longest, spelt longest.

    A larger body cannot be a message we accept (beyond whitespace or keys we ignore), so it
    is refused with 413 before it is read whole."""
    return LONGEST_CHAR_BYTES * (sender_max + text_max) + FRAMING_BYTES


class BadMessage(SknsError):
    """The request body is not a message we accept; ``str(exc)`` says why."""


def parse_message(body: bytes, sender_max: int, text_max: int) -> tuple[str, str]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadMessage("body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadMessage("body must be a JSON object")
    sender = _field(data, "sender", sender_max)
    text = _field(data, "text", text_max)
    return sender, text


def _field(data: dict[str, object], key: str, limit: int) -> str:
    if key not in data:
        raise BadMessage(f"missing field {key!r}")
    value = data[key]
    if not isinstance(value, str):
        raise BadMessage(f"field {key!r} must be a string")
    if not value:
        raise BadMessage(f"field {key!r} must not be empty")
    if len(value) > limit:
        raise BadMessage(f"field {key!r} is longer than {limit} characters")
    if "\x00" in value:
        # PostgreSQL text cannot hold NUL; refuse it on every store alike.
        raise BadMessage(f"field {key!r} must not contain NUL characters")
    return value
